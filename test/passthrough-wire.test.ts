import t from 'tap'
import { type ConsulAgent, startConsul } from './helpers/consul.js'
import { startTestProxy } from './helpers/proxy.js'
import { type RawReply, rawExchange, requestComplete, startRawBackend } from './helpers/raw-backend.js'

/**
 * The pass-through data plane on the wire: what it forwards and answers, byte for byte, against a backend that speaks
 * HTTP by hand. (Every other proxy test also runs on it through the *.passthrough.test.ts files.)
 */

let consul: ConsulAgent
t.before(async () => {
  consul = await startConsul(t)
})

let n = 0
/** A raw backend registered as a fresh service, and a pass-through proxy routing `/` to it. */
async function setup(
  t: { teardown(fn: () => unknown): void },
  reply: (req: Buffer, conn: number) => RawReply,
  settings: Record<string, unknown> = {},
) {
  const name = `wire${++n}`
  const b = await startRawBackend(reply, t)
  await consul.register({ ID: `${name}-1`, Name: name, Address: '127.0.0.1', Port: b.port })
  const p = await startTestProxy(t, consul, { dataPlane: 'passthrough', routes: [`/=${name}`], ...settings })
  return { b, p, name }
}
const OK = (body: string, extra = ''): string =>
  `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n${extra}\r\n${body}`

/** The body of each answer in a stream of HTTP/1.1 answers with Content-Length. */
function bodies(got: Buffer): string[] {
  const out: string[] = []
  let s = got.toString('latin1')
  while (s.length > 0) {
    const end = s.indexOf('\r\n\r\n')
    if (end === -1) break
    const cl = /\r\ncontent-length: *(\d+)/i.exec(s.slice(0, end))
    const len = cl ? Number(cl[1]) : 0
    out.push(s.slice(end + 4, end + 4 + len))
    s = s.slice(end + 4 + len)
  }
  return out
}

t.test(
  'a chunked answer passes through byte for byte: chunk sizes and extensions as the instance sent them, trailers dropped',
  async (t) => {
    const chunked = '5;ext=1\r\nhello\r\n1\r\n,\r\n6\r\n world\r\n0\r\nx-trailer: yes\r\n\r\n'
    const { p } = await setup(t, (req) =>
      requestComplete(req)
        ? {
            bytes: `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n${chunked}`,
            pieces: 7,
            gapMs: 5,
          }
        : null,
    )
    const { got } = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', {
      until: (g) => g.includes(' world\r\n0\r\n\r\n'),
    })
    const text = got.toString('latin1')
    t.match(text, /^HTTP\/1\.1 200 OK\r\n/)
    t.match(text, /\r\nTransfer-Encoding: chunked\r\n/i, 'framing kept')
    t.notMatch(text, /\r\nconnection: keep-alive/i, 'hop-by-hop Connection removed')
    t.ok(
      text.endsWith(`\r\n\r\n${chunked.replace('x-trailer: yes\r\n', '')}`),
      'body bytes unchanged, not re-chunked; the trailer section dropped (as nginx)',
    )
  },
)

t.test('a chunked request body reaches the instance as the client sent it', async (t) => {
  const body = '3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n'
  const { b, p } = await setup(t, (req) => (requestComplete(req) ? { bytes: OK('ok') } : null))
  const { got } = await rawExchange(
    p.port,
    `POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
    { pieces: 9, gapMs: 5, until: (g) => g.includes('\r\n\r\nok') },
  )
  t.match(got.toString(), /^HTTP\/1\.1 200/)
  const seen = b.received[0]!.toString('latin1')
  t.match(seen, /^POST \/up HTTP\/1\.1\r\n/)
  t.match(seen, /\r\nTransfer-Encoding: chunked\r\n/)
  t.ok(seen.endsWith(`\r\n\r\n${body}`), 'chunks unchanged')
})

t.test(
  'pipelined requests are answered in order on one connection, over one kept-alive instance connection',
  async (t) => {
    let i = 0
    const { b, p } = await setup(t, (req) => (requestComplete(req) ? { bytes: OK(`answer-${i++}`) } : null))
    const reqs = [0, 1, 2, 3, 4].map((k) => `GET /${k} HTTP/1.1\r\nHost: a\r\n\r\n`).join('')
    const { got } = await rawExchange(p.port, reqs, { until: (g) => bodies(g).length === 5 })
    t.same(bodies(got), ['answer-0', 'answer-1', 'answer-2', 'answer-3', 'answer-4'])
    t.equal(b.connections, 1, 'one instance connection, reused')
  },
)

t.test('a head sent one byte at a time, and a body in pieces, arrive whole', async (t) => {
  const { b, p } = await setup(t, (req) => (requestComplete(req) ? { bytes: OK('done') } : null))
  const msg = `POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nX-Long: ${'v'.repeat(300)}\r\n\r\n0123456789`
  const { got } = await rawExchange(p.port, msg, { pieces: msg.length, gapMs: 0, until: (g) => g.includes('done') })
  t.same(bodies(got), ['done'])
  t.ok(b.received[0]!.toString('latin1').endsWith('\r\n\r\n0123456789'))
})

t.test('HEAD, 204 and 304 answers have no body, whatever their headers say; the connection goes on', async (t) => {
  const { p } = await setup(t, (req) => {
    if (!requestComplete(req)) return null
    const line = req.toString('latin1')
    if (line.startsWith('HEAD')) return { bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n' }
    if (line.startsWith('GET /204')) return { bytes: 'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n' }
    if (line.startsWith('GET /304')) return { bytes: 'HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n' }
    return { bytes: OK('last') }
  })
  const { got } = await rawExchange(
    p.port,
    'HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n',
    { until: (g) => g.includes('last') },
  )
  const text = got.toString('latin1')
  const answers = text.split(/(?=HTTP\/1\.1 )/)
  t.equal(answers.length, 4, 'four answers')
  t.match(answers[0]!, /^HTTP\/1\.1 200 OK\r\nContent-Length: 1234\r\n\r\n$/, 'HEAD: the length, no body')
  t.match(answers[1]!, /^HTTP\/1\.1 204 No Content\r\n\r\n$/, '204: Content-Length dropped (RFC 9110 §8.6)')
  t.match(answers[2]!, /^HTTP\/1\.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n$/)
  t.ok(answers[3]!.endsWith('last'))
})

t.test('an answer that ends with its connection closes the client connection after it', async (t) => {
  const { p } = await setup(t, (req) =>
    requestComplete(req)
      ? { bytes: 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end', close: true }
      : null,
  )
  const { got, closed } = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n')
  const text = got.toString('latin1')
  t.match(text, /\r\nconnection: close\r\n/i)
  t.ok(text.endsWith('\r\n\r\nuntil the end'))
  t.ok(closed, 'closed after the body')
})

t.test('request smuggling shapes are refused with 400 and never reach the instance', async (t) => {
  const { b, p } = await setup(t, (req) => (requestComplete(req) ? { bytes: OK('x') } : null))
  const bad = [
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n',
    'GET / HTTP/1.1\nHost: a\n\n',
    'GET / HTTP/1.1\r\nHost: a\r\nX Bad: 1\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
    'GET / HTTP/1.1\r\n\r\n',
  ]
  for (const msg of bad) {
    const { got, closed } = await rawExchange(p.port, msg)
    t.match(got.toString('latin1'), /^HTTP\/1\.1 (400|501) /, JSON.stringify(msg.slice(0, 60)))
    t.ok(closed, 'and the connection closed')
  }
  // The chunked-body case reaches the instance with its head (the body is refused as it arrives): nothing else does.
  t.ok(
    b.received.every((r) =>
      r.toString('latin1').startsWith('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked'),
    ),
    'no other request reached the instance',
  )
})

t.test('an upgrade becomes a tunnel only after a 101; any other answer closes the client connection', async (t) => {
  const { b, p } = await setup(t, (req, conn) => {
    if (!requestComplete(req)) return null
    const s = req.toString('latin1')
    if (s.startsWith('GET /ws'))
      return {
        bytes: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nfrom-instance',
      }
    if (s.startsWith('GET /no')) return { bytes: OK('not switching') }
    return conn >= 0 ? { bytes: `echo:${s}` } : null
  })
  const up =
    'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'
  const refused = await rawExchange(
    p.port,
    `GET /no HTTP/1.1\r\nHost: a\r\n${up}\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n`,
  )
  t.match(refused.got.toString('latin1'), /^HTTP\/1\.1 200 OK\r\n/)
  t.ok(refused.closed, 'closed after the plain answer')
  t.notOk(
    b.received.some((r) => r.includes('/smuggled')),
    'bytes after a refused upgrade never reach the instance',
  )
  const ws = await rawExchange(p.port, `GET /ws HTTP/1.1\r\nHost: a\r\n${up}\r\n`, {
    until: (g) => g.includes('from-instance'),
  })
  const text = ws.got.toString('latin1')
  t.match(text, /^HTTP\/1\.1 101 Switching Protocols\r\n/)
  t.match(text, /\r\nUpgrade: websocket\r\n/)
  t.match(text, /\r\nconnection: upgrade\r\n/i)
})

t.test(
  'extra bytes after a complete answer retire that instance connection; the next request still works',
  async (t) => {
    let k = 0
    const { b, p } = await setup(t, (req) => (requestComplete(req) ? { bytes: `${OK(`r${k++}`)}GARBAGE` } : null))
    const first = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.includes('r0') })
    t.same(bodies(first.got), ['r0'])
    const second = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', { until: (g) => g.includes('r1') })
    t.same(bodies(second.got), ['r1'])
    t.equal(b.connections, 2, 'a new instance connection for the second request')
  },
)

t.test(
  'hop-by-hop headers and those named in Connection are removed from answers; 103 Early Hints are relayed',
  async (t) => {
    const { p } = await setup(t, (req) =>
      requestComplete(req)
        ? {
            bytes:
              'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n' +
              'HTTP/1.1 200 OK\r\nConnection: x-private, keep-alive\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok',
          }
        : null,
    )
    const { got } = await rawExchange(p.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', {
      until: (g) => g.toString().endsWith('ok'),
    })
    const text = got.toString('latin1')
    t.match(text, /^HTTP\/1\.1 103 Early Hints\r\nLink: <\/a\.css>; rel=preload\r\n\r\nHTTP\/1\.1 200 OK\r\n/)
    t.notMatch(text, /x-private|keep-alive|proxy-authenticate/i)
    t.match(text, /\r\nX-Kept: 1\r\n/)
  },
)

t.test(
  'the request head reaches the instance rewritten: forwarding headers set, hop-by-hop gone, the rest as sent',
  async (t) => {
    const { b, p } = await setup(t, (req) => (requestComplete(req) ? { bytes: OK('ok') } : null), {
      routes: [`/api=wire${n + 1},strip`],
    })
    await rawExchange(
      p.port,
      'GET /api/x?q=%7e HTTP/1.1\r\nHost: Shop.Example:8080\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Case: Kept\r\n\r\n',
      { until: (g) => g.includes('ok') },
    )
    t.equal(
      b.received[0]!.toString('latin1'),
      'GET /x?q=%7e HTTP/1.1\r\nHost: Shop.Example:8080\r\nX-Case: Kept\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: Shop.Example:8080\r\n\r\n',
    )
  },
)
