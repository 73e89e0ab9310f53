import t from 'tap'
import { RequestFacts, rewriteRequestHead, rewriteResponseHead } from '../src/passthrough/head.js'
import { Framing, HttpParser, ParseError, parserMemoryBytes } from '../src/passthrough/llhttp.js'

/** Pure cores of the pass-through data plane: llhttp's framing decisions and the one-pass head rewrites. */

function parse(kind: 'request' | 'response', text: string, pieces = 1): { p: HttpParser; buf: Buffer; end: number } {
  const p = new HttpParser(kind)
  const buf = Buffer.from(text, 'latin1')
  const size = Math.ceil(buf.length / pieces)
  let at = 0
  while (!p.headComplete && at < buf.length) {
    const n = p.execute(buf, at, Math.min(buf.length, at + size), at)
    at += n
  }
  return { p, buf, end: at }
}

t.test('llhttp decides the framing: none, Content-Length, chunked, until close', async (t) => {
  const cases: [string, 'request' | 'response', Framing][] = [
    ['GET / HTTP/1.1\r\nHost: a\r\n\r\n', 'request', Framing.None],
    ['POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n', 'request', Framing.Length],
    ['POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n', 'request', Framing.Chunked],
    ['HTTP/1.1 200 OK\r\n\r\n', 'response', Framing.UntilClose],
    ['HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n', 'response', Framing.None],
    ['HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n', 'response', Framing.Length],
  ]
  for (const [text, kind, framing] of cases) {
    const { p } = parse(kind, text)
    t.equal(p.framing(), framing, text.split('\r\n')[0])
    if (framing === Framing.Length) t.ok(p.contentLength === 12 || p.contentLength === 7)
  }
})

t.test('wasm memory growth: parsers made before and after it read heads, framing and lengths right', async (t) => {
  // The views of wasm memory are made again only after llhttp's malloc (parser allocation, a larger input area):
  // growing it both ways must leave every parser readable.
  const before = parse('response', 'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n').p
  const start = parserMemoryBytes()
  const many: HttpParser[] = []
  while (parserMemoryBytes() === start && many.length < 200_000) many.push(new HttpParser('request'))
  t.ok(parserMemoryBytes() > start, `${many.length} parsers grew wasm memory from ${start} bytes`)
  const after = parse('request', 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n')
  t.equal(after.p.framing(), Framing.Length)
  t.equal(after.p.contentLength, 12)
  t.equal(before.framing(), Framing.Length, 'a parser made before the growth')
  t.equal(before.contentLength, 7)
  // A large chunked body grows the input area (a malloc of its own), then the parser still reports framing.
  const grown = parserMemoryBytes()
  const chunked = parse('response', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')
  t.equal(chunked.p.framing(), Framing.Chunked)
  const size = 4 * grown
  const body = Buffer.concat([
    Buffer.from(`${size.toString(16)}\r\n`),
    Buffer.alloc(size, 97),
    Buffer.from('\r\n0\r\n\r\n'),
  ])
  t.equal(chunked.p.executeChunked(body, 0), body.length, 'the whole chunked body went through')
  t.ok(chunked.p.messageComplete, 'and ended the message')
  t.ok(parserMemoryBytes() > grown, 'the input area grew wasm memory again')
  const last = parse('response', 'HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n')
  t.equal(last.p.statusCode, 404)
  t.equal(last.p.contentLength, 3)
  for (const p of [before, after.p, chunked.p, last.p, ...many]) p.free()
})

t.test('a head split anywhere parses to the same spans', async (t) => {
  const text = 'GET /a/long/path?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Split-Name: split value\r\n\r\n'
  const whole = parse('request', text)
  for (const pieces of [2, 5, 13, text.length]) {
    const split = parse('request', text, pieces)
    t.same(
      [...split.p.spans.subarray(0, split.p.spanCount)],
      [...whole.p.spans.subarray(0, whole.p.spanCount)],
      `${pieces} pieces`,
    )
  }
})

t.test('malformed heads throw llhttp’s error code', async (t) => {
  for (const [text, code] of [
    ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['GET / HTTP/1.1\nHost: a\n\n', 'HPE_INVALID_VERSION'],
  ]) {
    t.throws(() => parse('request', text!), ParseError)
    try {
      parse('request', text!)
    } catch (e) {
      t.equal((e as ParseError).code, code)
    }
  }
})

t.test(
  'request rewrite: one buffer, kept lines as sent, hop-by-hop and Connection-listed out, forwarding in',
  async (t) => {
    const text =
      'GET /old?q HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nKeep-Alive: 5\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4\r\nTransfer-Encoding: chunked\r\n\r\n'
    const { p, buf, end } = parse('request', text)
    const f = new RequestFacts()
    f.read(buf, 0, p)
    const out = rewriteRequestHead(buf, 0, end, p, f, {
      path: '/new?q',
      clientAddress: '10.1.1.1',
      host: 'h',
      replaceHost: false,
      upgrade: null,
    })
    t.equal(
      out.toString('latin1'),
      'GET /new?q HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nTransfer-Encoding: chunked\r\nx-forwarded-for: 1.2.3.4, 10.1.1.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: h\r\n\r\n',
    )
    const up = parse(
      'request',
      'GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAA\r\n\r\n',
    )
    f.read(up.buf, 0, up.p)
    const upOut = rewriteRequestHead(up.buf, 0, up.end, up.p, f, {
      path: null,
      clientAddress: '10.1.1.1',
      host: 'h',
      replaceHost: false,
      upgrade: 'h2c',
    })
    t.match(upOut.toString('latin1'), /HTTP2-Settings: AAA\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\n/)
  },
)

t.test(
  'response rewrite in place: lines removed, the body never moves, our Connection line fits the gap',
  async (t) => {
    const body = 'BODY-BYTES'
    const text = `HTTP/1.1 200 OK\r\nServer: s\r\nConnection: keep-alive, x-priv\r\nx-priv: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: ${body.length}\r\n\r\n${body}`
    const { p, buf, end } = parse('response', `junk${text}`.slice(4))
    const r = rewriteResponseHead(buf, 0, end, p, { status: 200, close: false, keepAlive10: false })
    t.type(r, 'number')
    t.equal(
      buf.toString('latin1', r as number),
      `HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    )
    const again = parse('response', text)
    const c = rewriteResponseHead(again.buf, 0, again.end, again.p, { status: 200, close: true, keepAlive10: false })
    t.equal(
      again.buf.toString('latin1', c as number),
      `HTTP/1.1 200 OK\r\nconnection: close\r\nServer: s\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    )
    // `keep-alive` and `close` alone are read on the bytes (no header named by them); other Connection lines of the
    // same head still name theirs, and a header called Close is left alone (only the option is meant).
    for (const [lines, kept] of [
      ['Connection: Keep-Alive\r\nx-priv: 1\r\nConnection: x-priv\r\nX-Keep: 1\r\n', 'X-Keep: 1\r\n'],
      ['Connection: CLOSE\r\nClose: 1\r\nX-Keep: 1\r\n', 'Close: 1\r\nX-Keep: 1\r\n'],
      ['Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Keep: 1\r\n', 'X-Keep: 1\r\n'],
      ['Connection: keep-alivex\r\nkeep-alivex: 1\r\nX-Keep: 1\r\n', 'X-Keep: 1\r\n'],
    ]) {
      const m = parse('response', `HTTP/1.1 200 OK\r\n${lines}Content-Length: 2\r\n\r\nok`)
      const at = rewriteResponseHead(m.buf, 0, m.end, m.p, { status: 200, close: false, keepAlive10: false })
      t.equal(m.buf.toString('latin1', at as number), `HTTP/1.1 200 OK\r\n${kept}Content-Length: 2\r\n\r\nok`, lines)
    }
    const tight = parse('response', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    const copy = rewriteResponseHead(tight.buf, 0, tight.end, tight.p, { status: 200, close: true, keepAlive10: false })
    t.ok(Buffer.isBuffer(copy), 'no room: a copy of the head')
    t.equal((copy as Buffer).toString('latin1'), 'HTTP/1.1 200 OK\r\nconnection: close\r\nContent-Length: 2\r\n\r\n')
  },
)
