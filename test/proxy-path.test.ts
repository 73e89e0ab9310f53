import t from 'tap'
import { ClientRequestError } from '../src/errors.js'
import { isHostValue, normalizeOriginForm, parseAbsoluteForm } from '../src/proxy/path.js'

const norm = (s: string): string => {
  const r = normalizeOriginForm(s)
  return typeof r === 'string' ? r : `!${r.code}`
}

t.test('plain paths come back as they are, the same string (no copy on the hot path)', async (t) => {
  for (const p of ['/', '/a', '/a/b/c', '/a?x=1', '/a.b/c.d', '/api/v1/users?id=../x', '/a/b/', '/~u/x-y_z'])
    t.equal(normalizeOriginForm(p), p, p)
})

t.test('RFC 3986 §5.2.4 remove_dot_segments, examples of §5.4 applied to paths', async (t) => {
  const cases: [string, string][] = [
    ['/a/b/c/./../../g', '/a/g'],
    ['/mid/content=5/../6', '/mid/6'],
    ['/a/./b', '/a/b'],
    ['/a/b/..', '/a/'],
    ['/a/b/.', '/a/b/'],
    ['/..', '/'],
    ['/../../x', '/x'],
    ['/.', '/'],
    ['/public/../flag', '/flag'],
    ['/public/./x/../y?q=/../z', '/public/y?q=/../z'],
    ['/.well-known/acme', '/.well-known/acme'],
    ['/a/..b/c', '/a/..b/c'],
    ['/a/b../c', '/a/b../c'],
  ]
  for (const [i, o] of cases) t.equal(norm(i), o, i)
})

t.test('percent-encoded dots are dot segments; unreserved escapes are decoded, others upper-cased', async (t) => {
  t.equal(norm('/public/%2e%2e/flag'), '/flag')
  t.equal(norm('/public/%2E%2e/flag'), '/flag')
  t.equal(norm('/public/.%2e/flag'), '/flag')
  t.equal(norm('/public/%2e/x'), '/public/x')
  t.equal(norm('/%7Euser/%41b'), '/~user/Ab')
  t.equal(norm('/a%20b/%c3%a4'), '/a%20b/%C3%A4')
  t.equal(norm('/a/%3f?x'), '/a/%3F?x', 'an encoded ? stays data')
})

t.test('encoded slashes and backslashes stay data, unless they would hide a dot segment', async (t) => {
  t.equal(norm('/api/projects/group%2Fproject'), '/api/projects/group%2Fproject')
  t.equal(norm('/a%5Cb'), '/a%5Cb')
  t.equal(norm('/a\\b'), '/a\\b')
  for (const p of [
    '/public/..%2Fflag',
    '/public/%2e%2e%2fflag',
    '/public/..%2F..%2Fflag',
    '/public/x%2F..%2F..%2Fflag',
    '/public/..%5Cflag',
    '/public\\..\\flag',
    '/public/..;/flag',
    '/public/..;jsessionid=1/flag',
    '/public/.;x/flag',
  ])
    t.equal(norm(p), '!CLB_BAD_PATH', p)
})

t.test('malformed escapes and encoded NUL are refused', async (t) => {
  for (const p of ['/a%', '/a%2', '/a%zz', '/a%0/b', '/a%00b']) t.equal(norm(p), '!CLB_BAD_PATH', p)
  const r = normalizeOriginForm('/a%zz')
  t.ok(r instanceof ClientRequestError)
  t.equal((r as ClientRequestError).statusCode, 400)
})

t.test('a leading // collapses (it reads as a network-path reference); inner empty segments are kept', async (t) => {
  t.equal(norm('//evil.example/x'), '/evil.example/x')
  t.equal(norm('///x'), '/x')
  t.equal(norm('/a/..//x'), '/x')
  t.equal(norm('/a//b'), '/a//b')
  t.equal(norm('//'), '/')
})

t.test('a fragment is dropped; the query is kept byte for byte', async (t) => {
  t.equal(norm('/a#frag'), '/a')
  t.equal(norm('/a?x=%2e%2e#f'), '/a?x=%2e%2e')
  t.equal(norm('/a/../b?x=/../'), '/b?x=/../')
})

t.test('absolute-form targets: authority and normalised path (RFC 9112 §3.2.2)', async (t) => {
  t.same(parseAbsoluteForm('http://raw.local/status'), { authority: 'raw.local', path: '/status' })
  t.same(parseAbsoluteForm('HTTP://raw.local:8080/a/../b?q'), { authority: 'raw.local:8080', path: '/b?q' })
  t.same(parseAbsoluteForm('https://[::1]:80'), { authority: '[::1]:80', path: '/' })
  t.same(parseAbsoluteForm('http://h?x'), { authority: 'h', path: '/?x' })
  for (const bad of ['ftp://h/x', 'http:///x', 'http://u:p@h/x', 'h/x', 'http://a b/', 'http://h/%zz'])
    t.ok(parseAbsoluteForm(bad) instanceof ClientRequestError, bad)
})

t.test('Host values: reg-name, IPv4, [IPv6], optional port', async (t) => {
  for (const h of ['a', 'a.b.c', 'a-b.example.com:8080', '127.0.0.1', '[::1]', '[::1]:80', 'x_y', 'a.b.'])
    t.ok(isHostValue(h), h)
  for (const h of ['', 'a b', 'a/b', 'a@b', 'a:b', '[::1', '[zz]', 'a:80:80', 'a\\b', '[::1]x'])
    t.notOk(isHostValue(h), JSON.stringify(h))
})
