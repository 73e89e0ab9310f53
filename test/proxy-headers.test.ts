import t from 'tap'
import { connectionTokens, forwardRequestHeaders, forwardResponseHeaders } from '../src/proxy/headers.js'

const base = {
  clientAddress: '10.0.0.9',
  connection: undefined,
  host: 'app.example.com',
  replaceHost: false,
  upgrade: null,
}

t.test('request: hop-by-hop and Connection-named headers dropped, Host kept, X-Forwarded-* set', async (t) => {
  const raw = [
    'Host',
    'app.example.com',
    'Connection',
    'keep-alive, X-Secret',
    'X-Secret',
    'drop',
    'Keep-Alive',
    'timeout=5',
    'TE',
    'trailers',
    'Transfer-Encoding',
    'chunked',
    'Expect',
    '100-continue',
    'Proxy-Authorization',
    'Basic x',
    'X-Forwarded-For',
    '1.1.1.1',
    'x-forwarded-for',
    '2.2.2.2',
    'X-Forwarded-Proto',
    'https',
    'X-Forwarded-Host',
    'spoofed',
    'Accept',
    '*/*',
  ]
  const out = forwardRequestHeaders(raw, { ...base, connection: 'keep-alive, X-Secret' })
  t.same(out, [
    'Host',
    'app.example.com',
    'Accept',
    '*/*',
    'x-forwarded-for',
    '1.1.1.1, 2.2.2.2, 10.0.0.9',
    'x-forwarded-proto',
    'http',
    'x-forwarded-host',
    'app.example.com',
  ])
})

t.test('request: an absolute-form target replaces Host; an upgrade sends Connection: upgrade', async (t) => {
  const out = forwardRequestHeaders(['Host', 'q', 'Upgrade', 'websocket', 'Connection', 'Upgrade'], {
    ...base,
    connection: 'Upgrade',
    host: 'raw.local',
    replaceHost: true,
    upgrade: 'websocket',
  })
  t.same(out, [
    'host',
    'raw.local',
    'connection',
    'upgrade',
    'upgrade',
    'websocket',
    'x-forwarded-for',
    '10.0.0.9',
    'x-forwarded-proto',
    'http',
    'x-forwarded-host',
    'raw.local',
  ])
  const h2c = forwardRequestHeaders(['Host', 'h', 'HTTP2-Settings', 'AAMA', 'Upgrade', 'h2c'], {
    ...base,
    connection: 'Upgrade, HTTP2-Settings',
    upgrade: 'h2c',
  })
  t.match(h2c, ['Host', 'h', 'HTTP2-Settings', 'AAMA', 'connection', 'upgrade, http2-settings', 'upgrade', 'h2c'])
  const plain = forwardRequestHeaders(['Host', 'h', 'HTTP2-Settings', 'AAMA'], base)
  t.notOk(plain.includes('HTTP2-Settings'), 'HTTP2-Settings is hop-by-hop outside an upgrade')
})

t.test('response: tokens of every Connection field are stripped (two fields, both honoured)', async (t) => {
  const raw = ['Connection', 'x-a', 'X-A', '1', 'Connection', 'X-B', 'x-b', '2', 'X-C', '3'].map((s) => Buffer.from(s))
  t.same(forwardResponseHeaders(raw, 200), ['X-C', '3'])
})

t.test('response: Upgrade kept on a 426 with Connection: upgrade (RFC 9110 §15.5.22), dropped elsewhere', async (t) => {
  t.same(forwardResponseHeaders(['Upgrade', 'TLS/1.3', 'Connection', 'Upgrade', 'Content-Length', '0'], 426), [
    'Upgrade',
    'TLS/1.3',
    'Content-Length',
    '0',
    'connection',
    'upgrade',
  ])
  t.same(forwardResponseHeaders(['Upgrade', 'h2c', 'Content-Length', '2'], 200), ['Content-Length', '2'])
})

t.test('response: Content-Length dropped from a 204, kept on a 304 (RFC 9110 §8.6)', async (t) => {
  t.same(forwardResponseHeaders(['Content-Length', '10', 'ETag', '"x"'], 204), ['ETag', '"x"'])
  t.same(forwardResponseHeaders(['Content-Length', '10', 'ETag', '"x"'], 304), ['Content-Length', '10', 'ETag', '"x"'])
})

t.test('connectionTokens: common values skip the split; tokens are lower-cased and merged', async (t) => {
  t.equal(connectionTokens('keep-alive'), null)
  t.equal(connectionTokens('close'), null)
  t.same([...connectionTokens('close, X-Foo,,  x-bar ')!], ['x-foo', 'x-bar'])
  t.same([...connectionTokens('X-Baz', connectionTokens('x-foo'))!], ['x-foo', 'x-baz'])
})

t.test("request: a client's Forwarded field gets this hop's element appended (RFC 7239)", async (t) => {
  const out = forwardRequestHeaders(['Host', 'h', 'Forwarded', 'for=1.2.3.4;host=evil', 'forwarded', 'for=5.6.7.8'], {
    ...base,
    clientAddress: '::1',
  })
  const i = out.indexOf('forwarded')
  t.equal(out[i + 1], 'for=1.2.3.4;host=evil, for=5.6.7.8, for="[::1]";proto=http;host="app.example.com"')
  t.equal(out.filter((h) => h.toLowerCase() === 'forwarded').length, 1, 'one field')
  t.notOk(forwardRequestHeaders(['Host', 'h'], base).includes('forwarded'), 'not added when the client sent none')
})
