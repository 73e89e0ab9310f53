import type { Test } from 'tap'
import { type ConsulAgent, startConsul } from './consul.js'
import {
  assertSettled,
  eventually,
  headersOf,
  openDescriptors,
  type StartEdgeProxy,
  scriptedService,
  statusesOf,
  WS_UPGRADE,
} from './edge.js'
import { http } from './http.js'
import { answerEach, RawClient, rawRequest, response } from './scripted-backend.js'

/**
 * The eleven defects of issue 11, each against a real Consul agent and a scripted raw-socket backend: what the client
 * gets, what the backend receives, and that every instance slot comes back. `start` picks the data plane.
 */
export function defectSuite(t: Test, start: StartEdgeProxy): void {
  let consul: ConsulAgent
  t.before(async () => {
    consul = await startConsul(t)
  })

  t.test('1. a WebSocket upgrade refused by the instance, then one more client byte, leaks no slot', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'd1',
      answerEach((r) => (r.headers.upgrade ? response('403 Forbidden', 'no ws\n') : response('200 OK', 'ok'))),
    )
    const p = await start(t, consul, { maxConnectionsPerInstance: 3, routes: ['/=d1'] })
    const clients: RawClient[] = []
    for (let i = 0; i < 6; i++) {
      const c = new RawClient(p.port)
      clients.push(c)
      await c.connected
      c.write(WS_UPGRADE('/chat', 'd1.example'))
      t.ok(await c.waitFor(/^HTTP\/1\.1 403[\s\S]*no ws\n/), `attempt ${i + 1}: the instance's 403 is relayed`)
      c.write('x') // and the client keeps its side open
    }
    await assertSettled(t, p)
    t.ok(await eventually(() => clients.every((c) => c.isClosed), 4000), 'the proxy ended every refused upgrade')
    t.ok(await eventually(() => p.clientConnections() === 0, 4000), 'and released them, though the clients did not')
    const r = await http(p.port, '/', { host: 'd1.example', keepAlive: false })
    t.equal(r.status, 200, 'twice the connection cap later, the instance still serves')
    t.notMatch(b.received(), /\r\n\r\nx/, 'the byte after the refused upgrade never reached the instance')
    for (const c of clients) c.destroy()
  })

  t.test('2. a non-WebSocket Upgrade answered 200 is no tunnel: a second request cannot ride along', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'raw',
      answerEach((r) => response('200 OK', `seen ${r.line}\n`)),
    )
    const p = await start(t, consul, { routes: ['raw.local/public=raw'], hostRouting: false })
    const upgrade = 'GET /public HTTP/1.1\r\nHost: raw.local\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n'
    const second = 'GET /flag HTTP/1.1\r\nHost: raw.local\r\n\r\n'
    // (a) the second request written after the first answer
    const c = new RawClient(p.port)
    await c.connected
    c.write(upgrade)
    t.ok(await c.waitFor(/seen GET \/public HTTP\/1\.1/), "the instance's 200 is relayed")
    t.match(headersOf(c.received).connection ?? '', /close/, 'and the connection is closing')
    c.write(second)
    t.ok(await c.waitClosed(3000), 'the proxy closed the connection')
    t.notMatch(c.received, /flag/, 'nothing answered /flag')
    // (b) both in one packet: the bytes behind the upgrade request are not forwarded either
    const both = await rawRequest(p.port, upgrade + second)
    t.match(both.text, /seen GET \/public/)
    t.notMatch(both.text, /flag/)
    t.ok(both.closed)
    t.same(
      b.requestLines(),
      ['GET /public HTTP/1.1', 'GET /public HTTP/1.1'],
      'the instance saw only the routed requests',
    )
    const flag = await http(p.port, '/flag', { host: 'raw.local' })
    t.equal(flag.status, 404, '/flag is not routed')
    await assertSettled(t, p)
  })

  t.test(
    '3. paths are normalised before routing and forwarded normalised; absolute-form routes by authority',
    async (t) => {
      const b = await scriptedService(
        t,
        consul,
        'raw3',
        answerEach((r) => response('200 OK', `seen ${r.target} host=${r.headers.host}\n`)),
      )
      const p = await start(t, consul, { routes: ['raw.local/public=raw3'], hostRouting: false })
      const get = (target: string, host = 'raw.local') =>
        rawRequest(p.port, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
      for (const escaping of ['/public/../flag', '/public/%2e%2e/flag', '/public/%2E%2e/flag', '/public/./../flag']) {
        const r = await get(escaping)
        t.match(r.text, /^HTTP\/1\.1 404 /, `${escaping}: 404, like nginx`)
        t.match(r.text, /CLB_NO_ROUTE/)
      }
      for (const hidden of ['/public/..%2Fflag', '/public/..%5Cflag', '/public\\..\\flag', '/public/..;/flag']) {
        const r = await get(hidden)
        t.match(r.text, /^HTTP\/1\.1 400 [\s\S]*CLB_BAD_PATH/, `${hidden}: refused (a backend could resolve it)`)
      }
      const inside = await get('/public/a/./b/../c?q=/../x')
      t.match(inside.text, /seen \/public\/a\/c\?q=\/\.\.\/x host=raw\.local/, 'forwarded normalised, query as sent')
      const abs = await get('http://raw.local/public/x', 'q')
      t.match(
        abs.text,
        /seen \/public\/x host=raw\.local/,
        'absolute form: routed by its authority, sent in origin form',
      )
      const wrong = await get('http://q/public/x', 'raw.local')
      t.match(wrong.text, /^HTTP\/1\.1 404 /, 'the authority wins over the Host header (RFC 9112 §3.2.2)')
      t.notOk(
        b.requestLines().some((l) => /flag|\.\./.test(l.split('?')[0]!)),
        `no escaping path reached the instance (${JSON.stringify(b.requestLines())})`,
      )
      await assertSettled(t, p)
    },
  )

  t.test('4. slow clients that keep trickling after the 408 are fully released within seconds', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'd4',
      answerEach(() => response('200 OK', 'ok')),
    )
    const p = await start(t, consul, { clientHeadersTimeoutMs: 500, routes: ['/=d4'] })
    const fds = openDescriptors()
    const started = Date.now()
    const clients: RawClient[] = []
    for (let i = 0; i < 30; i++) {
      const c = new RawClient(p.port)
      clients.push(c)
      await c.connected
      c.write('GET / HTTP/1.1\r\nHost: slow.example\r\n')
    }
    // Each client keeps sending a header line every 100 ms, after the 408 and the proxy's FIN too, for as long as
    // its connection exists (8 s at most).
    const trickle = setInterval(() => {
      for (const c of clients) if (c.closedAt === 0) c.write('X-Slow: y\r\n')
    }, 100)
    t.teardown(() => clearInterval(trickle))
    // Released means gone: a client that goes on writing after the proxy let go of the socket gets a reset.
    const allClosed = await eventually(() => clients.every((c) => c.closedAt !== 0), 8000)
    clearInterval(trickle)
    const last = Math.max(...clients.map((c) => c.closedAt)) - started
    t.ok(allClosed, `every trickling client was reset (the last after ${last} ms)`)
    // headers timeout 0.5 s + Node's 1 s check interval + 1 s linger, with room for a loaded machine
    t.ok(last < 5000, `within 5 s (${last} ms)`)
    t.ok(
      clients.every((c) => /^HTTP\/1\.1 408 [\s\S]*CLB_CLIENT_TIMEOUT/.test(c.received)),
      'each got the 408 first',
    )
    t.ok(await eventually(() => p.clientConnections() === 0, 2000), 'the proxy holds none of them')
    t.equal(b.received(), '', 'no unfinished request reached the instance')
    t.ok(await eventually(() => openDescriptors() <= fds, 2000), `descriptors back to ${fds} (${openDescriptors()})`)
    if (p.adminPort !== null)
      t.equal((await fetch(`http://127.0.0.1:${p.adminPort}/healthz`)).status, 200, '/healthz still ok')
  })

  t.test('5. a 304 or 204 that carries Content-Length is relayed, and the connection goes on', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'd5',
      answerEach((r) =>
        r.target === '/304'
          ? 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n'
          : r.target === '/204'
            ? 'HTTP/1.1 204 No Content\r\nX-Done: 1\r\nContent-Length: 5\r\n\r\n'
            : response('200 OK', 'after'),
      ),
    )
    const p = await start(t, consul, { routes: ['/=d5'] })
    const c = new RawClient(p.port)
    await c.connected
    c.write('GET /304 HTTP/1.1\r\nHost: d5.example\r\nIf-None-Match: "v1"\r\n\r\n')
    t.ok(await c.waitFor(/^HTTP\/1\.1 304 [^\r]*\r\n[\s\S]*\r\n\r\n/), '304 relayed (not an empty reply)')
    const h304 = headersOf(c.received)
    t.equal(h304['content-length'], '1234', "the 304's Content-Length is relayed (RFC 9110 §8.6 allows it)")
    t.equal(h304.etag, '"v1"')
    c.received = ''
    c.write('GET /204 HTTP/1.1\r\nHost: d5.example\r\n\r\n')
    t.ok(await c.waitFor(/^HTTP\/1\.1 204 [\s\S]*\r\n\r\n/), '204 relayed')
    t.notOk('content-length' in headersOf(c.received), 'without Content-Length (never sent with a 204)')
    t.equal(headersOf(c.received)['x-done'], '1')
    c.received = ''
    c.write('GET /next HTTP/1.1\r\nHost: d5.example\r\n\r\n')
    t.ok(await c.waitFor(/^HTTP\/1\.1 200 [\s\S]*\r\n\r\nafter$/), 'the same connection serves the next request')
    c.destroy()
    t.same(
      b.requestLines(),
      ['GET /304 HTTP/1.1', 'GET /204 HTTP/1.1', 'GET /next HTTP/1.1'],
      'the instance saw each once',
    )
    await assertSettled(t, p)
  })

  t.test(
    '6. a bad request pipelined behind a good one: the good one is answered first, then 400 and close',
    async (t) => {
      const b = await scriptedService(
        t,
        consul,
        'd6',
        answerEach((r, c) => {
          // Answer late, so the parse error of the next request comes first.
          setTimeout(() => c.write(response('200 OK', `v1 for ${r.target}`)), 300)
          return null
        }),
      )
      const p = await start(t, consul, { routes: ['/=d6'] })
      for (const bad of ['Invalid\r\n\r\n', `GET /x HTTP/1.1\r\nHost: h\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`]) {
        const r = await rawRequest(p.port, `GET /v1 HTTP/1.1\r\nHost: d6.example\r\n\r\n${bad}`)
        const statuses = statusesOf(r.text)
        t.same(statuses, [200, bad.startsWith('Invalid') ? 400 : 431], `answers in order: ${statuses}`)
        t.match(r.text, /v1 for \/v1/, "the good request's answer is whole")
        t.ok(r.closed, 'then the connection is closed')
      }
      t.same(b.requestLines(), ['GET /v1 HTTP/1.1', 'GET /v1 HTTP/1.1'], 'only the good requests reached the instance')
      await assertSettled(t, p)
    },
  )

  t.test('7. Transfer-Encoding other than chunked alone is refused with 501, never relabelled', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'd7',
      answerEach(() => response('200 OK', 'ok')),
    )
    const p = await start(t, consul, { routes: ['/=d7'] })
    for (const te of ['gzip, chunked', 'deflate,chunked', 'chunked, chunked']) {
      const r = await rawRequest(
        p.port,
        `POST /x HTTP/1.1\r\nHost: d7.example\r\nTransfer-Encoding: ${te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
      )
      t.match(
        r.text,
        te === 'chunked, chunked' ? /^HTTP\/1\.1 (400|501) / : /^HTTP\/1\.1 501 [\s\S]*CLB_NOT_IMPLEMENTED/,
        te,
      )
      t.ok(r.closed, `${te}: connection closed`)
    }
    t.equal(b.received(), '', 'the instance received nothing')
    await assertSettled(t, p)
  })

  t.test('8. Expect: 100-continue: the proxy decides first (404, 413, 503), then sends 100 Continue', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'd8',
      answerEach((r) => response('200 OK', `got ${r.body.length}`)),
    )
    const p = await start(t, consul, { routes: ['/up=d8', '/ghost=d8ghost'], hostRouting: false, maxBodyBytes: 100 })
    const expect = (path: string, length: number): string =>
      `POST ${path} HTTP/1.1\r\nHost: d8.example\r\nExpect: 100-continue\r\nContent-Length: ${length}\r\n\r\n`
    for (const [path, length, status] of [
      ['/nowhere', 5, 404],
      ['/up', 1000, 413],
      ['/ghost', 5, 503],
    ] as const) {
      const r = await rawRequest(p.port, expect(path, length), 3000)
      t.same(statusesOf(r.text), [status], `${path}: ${status} with no 100 Continue before it`)
    }
    const c = new RawClient(p.port)
    await c.connected
    c.write(expect('/up', 5))
    t.ok(await c.waitFor(/^HTTP\/1\.1 100 Continue\r\n\r\n/), 'a request that will be forwarded gets 100 Continue')
    t.notOk(/HTTP\/1\.1 200/.test(c.received), 'and nothing else before its body')
    c.write('hello')
    t.ok(await c.waitFor(/HTTP\/1\.1 200 [\s\S]*got 5$/), 'then the answer, the body forwarded whole')
    c.destroy()
    t.notOk(b.received().toLowerCase().includes('expect:'), 'Expect is not forwarded (the proxy answered it)')
    t.same(b.requestLines(), ['POST /up HTTP/1.1'], 'only the request the proxy accepted reached the instance')
    await assertSettled(t, p)
  })

  t.test('9. a 426 keeps its Upgrade header (RFC 9110 §15.5.22)', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'd9',
      answerEach(
        () =>
          'HTTP/1.1 426 Upgrade Required\r\nUpgrade: TLS/1.3, HTTP/2\r\nConnection: Upgrade\r\nContent-Length: 4\r\n\r\nup!\n',
      ),
    )
    const p = await start(t, consul, { routes: ['/=d9'] })
    const r = await rawRequest(p.port, 'GET / HTTP/1.1\r\nHost: d9.example\r\nConnection: close\r\n\r\n')
    t.match(r.text, /^HTTP\/1\.1 426 /)
    const h = headersOf(r.text)
    t.equal(h.upgrade, 'TLS/1.3, HTTP/2', 'Upgrade relayed')
    t.match(h.connection ?? '', /upgrade/i, 'with Connection: upgrade (RFC 9110 §7.8)')
    t.match(r.text, /\r\n\r\nup!\n$/)
    t.ok(r.closed, 'and the connection closes, as the client asked (Connection: upgrade must not turn it keep-alive)')
    t.same(b.requestLines(), ['GET / HTTP/1.1'])
    await assertSettled(t, p)
  })

  t.test('10. a chunked HTTP/1.0 request is refused with 400 (RFC 9112 §6.1)', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'd10',
      answerEach(() => response('200 OK', 'ok')),
    )
    const p = await start(t, consul, { routes: ['/=d10'] })
    const r = await rawRequest(
      p.port,
      'POST /x HTTP/1.0\r\nHost: d10.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    )
    t.match(r.text, /^HTTP\/1\.1 400 [\s\S]*CLB_BAD_REQUEST/)
    t.ok(r.closed)
    t.equal(b.received(), '', 'the instance received nothing')
    await assertSettled(t, p)
  })

  t.test('11. every Connection field of a response is honoured: all the headers they name are stripped', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'd11',
      answerEach(
        () =>
          'HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nConnection: X-B\r\nX-B: 2\r\nX-C: 3\r\nContent-Length: 2\r\n\r\nok',
      ),
    )
    const p = await start(t, consul, { routes: ['/=d11'] })
    const r = await rawRequest(p.port, 'GET / HTTP/1.1\r\nHost: d11.example\r\nConnection: close\r\n\r\n')
    const h = headersOf(r.text)
    t.equal(h['x-c'], '3')
    t.notOk('x-a' in h, 'named by the first Connection field')
    t.notOk('x-b' in h, 'named by the second Connection field')
    t.same(b.requestLines(), ['GET / HTTP/1.1'])
    await assertSettled(t, p)
  })
}
