import type { Test } from 'tap'
import { type ConsulAgent, sleep, startConsul } from './consul.js'
import {
  assertSettled,
  type EdgeProxy,
  eventually,
  headersOf,
  openDescriptors,
  type StartEdgeProxy,
  scriptedService,
  statusesOf,
  WS_UPGRADE,
} from './edge.js'
import { http } from './http.js'
import { answerEach, RawClient, rawRequest, response, type ScriptedBackend } from './scripted-backend.js'

/**
 * Hostile and odd HTTP beyond issue 11's list, each case compared with what RFC 9110/9112 require (and where nginx
 * differs, the README's Security section says how): request framing and smuggling forms, upgrade abuse, slow and
 * vanishing clients, odd upstream answers. In every case the proxy stays up, answers what the RFC allows, and gives
 * back every instance slot, client connection and descriptor. `start` picks the data plane.
 */
export function hostileSuite(t: Test, start: StartEdgeProxy): void {
  let consul: ConsulAgent
  t.before(async () => {
    consul = await startConsul(t)
  })

  /** A backend echoing each request line and body length, and a proxy routing everything to it. */
  async function echo(t: Test, name: string, settings: Record<string, unknown> = {}) {
    const b = await scriptedService(
      t,
      consul,
      name,
      answerEach((r) => response('200 OK', `seen ${r.line} body=${r.body.length}\n`)),
    )
    const p = await start(t, consul, { routes: [`/=${name}`], ...settings })
    return { b, p }
  }

  /** The request is refused with `status` (and `code`), the connection closed, and the instance saw nothing. */
  async function refused(
    t: Test,
    p: EdgeProxy,
    b: ScriptedBackend,
    bytes: string,
    status: number,
    why: string,
    code?: string,
    closes = true,
  ): Promise<void> {
    const before = b.received().length
    const r = await rawRequest(p.port, bytes)
    t.same(statusesOf(r.text), [status], `${why}: ${status}, one answer`)
    if (code) t.equal(headersOf(r.text)['x-consul-lb-error'], code, `${why}: ${code}`)
    if (closes) t.ok(r.closed, `${why}: connection closed`)
    t.equal(b.received().length, before, `${why}: nothing reached the instance`)
  }

  t.test('request framing and smuggling forms are refused before anything reaches an instance', async (t) => {
    const { b, p } = await echo(t, 'hf')
    const H = 'Host: hf.example\r\n'
    // RFC 9112 §6.1 / §11.2: both framings, or ambiguous ones, are the classic smuggling vectors.
    await refused(
      t,
      p,
      b,
      `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      400,
      'CL and TE',
    )
    await refused(t, p, b, `POST / HTTP/1.1\r\n${H}Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde`, 400, 'two CL')
    await refused(t, p, b, `POST / HTTP/1.1\r\n${H}Content-Length: 4, 4\r\n\r\nabcd`, 400, 'a CL list')
    await refused(t, p, b, `POST / HTTP/1.1\r\n${H}Content-Length: +4\r\n\r\nabcd`, 400, 'a signed CL')
    await refused(
      t,
      p,
      b,
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
      400,
      'chunked not last',
    )
    await refused(t, p, b, `POST / HTTP/1.1\r\n${H}Transfer-Encoding: identity\r\n\r\n`, 400, 'identity (refused once)')
    await refused(
      t,
      p,
      b,
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`,
      400,
      'an unknown coding',
    )
    await refused(
      t,
      p,
      b,
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`,
      400,
      'space before colon',
    )
    await refused(t, p, b, `GET / HTTP/1.1\r\n${H}X-Folded: a\r\n b\r\n\r\n`, 400, 'obs-fold (RFC 9112 §5.2)')
    await refused(t, p, b, `GET / HTTP/1.1\n${H.replace('\r', '')}\n`, 400, 'bare LF line ends')
    await refused(t, p, b, `GET / HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n`, 400, 'a bare CR in a value')
    await refused(t, p, b, `GET / HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n`, 400, 'a NUL in a value')
    await refused(
      t,
      p,
      b,
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n-1\r\n\r\n`,
      400,
      'a negative chunk size',
    )
    await refused(
      t,
      p,
      b,
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n`,
      400,
      'an overflowing chunk size',
    )
    await refused(
      t,
      p,
      b,
      `GET / HTTP/1.1\r\nHost: a.example\r\nHost: hf.example\r\n\r\n`,
      400,
      'two Host fields',
      'CLB_BAD_REQUEST',
    )
    await refused(t, p, b, `GET / HTTP/1.1\r\nHost: a b\r\n\r\n`, 400, 'an invalid Host', 'CLB_BAD_REQUEST')
    await refused(t, p, b, 'GET / HTTP/1.1\r\n\r\n', 400, 'HTTP/1.1 without Host (RFC 9112 §3.2)', 'CLB_BAD_REQUEST')
    await refused(t, p, b, `get / HTTP/1.1\r\n${H}\r\n`, 400, 'a lower-case method')
    await refused(t, p, b, `GET /\r\n\r\n`, 505, 'HTTP/0.9', 'CLB_HTTP_VERSION')
    await refused(t, p, b, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 400, 'an HTTP/2 preface on HTTP/1.1')
    await refused(t, p, b, `OPTIONS * HTTP/1.1\r\n${H}\r\n`, 400, 'asterisk-form', 'CLB_BAD_REQUEST')
    // A target refused on its own (framing intact) keeps the connection, as any 4xx does.
    const close = 'Connection: close\r\n'
    await refused(t, p, b, `GET http://u:p@hf.example/ HTTP/1.1\r\n${H}${close}\r\n`, 400, 'userinfo', 'CLB_BAD_PATH')
    await refused(t, p, b, `GET /a%00b HTTP/1.1\r\n${H}${close}\r\n`, 400, 'an encoded NUL', 'CLB_BAD_PATH')
    await refused(
      t,
      p,
      b,
      `GET /a/..%2f..%2fb HTTP/1.1\r\n${H}${close}\r\n`,
      400,
      'a hidden dot segment',
      'CLB_BAD_PATH',
    )
    const k = await rawRequest(p.port, `GET /a/%zz HTTP/1.1\r\n${H}\r\nGET /fine HTTP/1.1\r\n${H}${close}\r\n`)
    t.same(statusesOf(k.text), [400, 200], 'after a refused path the connection serves the next request')
    await refused(
      t,
      p,
      b,
      `CONNECT hf.example:443 HTTP/1.1\r\nHost: hf.example:443\r\n\r\n`,
      501,
      'CONNECT',
      'CLB_NOT_IMPLEMENTED',
    )
    const many = Array.from({ length: 2100 }, (_, i) => `x${i}:y\r\n`).join('')
    await refused(
      t,
      p,
      b,
      `POST / HTTP/1.1\r\n${H}${many}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      431,
      'too many fields (Node would drop the rest)',
      'CLB_HEADERS_TOO_LARGE',
    )
    await refused(t, p, b, `GET /${'a'.repeat(20_000)} HTTP/1.1\r\n${H}\r\n`, 431, 'a target over maxHeaderBytes')
    await assertSettled(t, p)
  })

  t.test('a request hidden in a body, or behind a chunked body, reaches the instance as body bytes only', async (t) => {
    const { b, p } = await echo(t, 'hb')
    const inner = 'GET /smuggled HTTP/1.1\r\nHost: hb.example\r\n\r\n'
    const cl = await rawRequest(
      p.port,
      `POST /a HTTP/1.1\r\nHost: hb.example\r\nConnection: close\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`,
    )
    t.match(cl.text, new RegExp(`seen POST /a HTTP/1.1 body=${inner.length}`))
    const chunk = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\nX-Trailer: t\r\n\r\n`
    const te = await rawRequest(
      p.port,
      `POST /b HTTP/1.1\r\nHost: hb.example\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}`,
    )
    t.match(
      te.text,
      new RegExp(`seen POST /b HTTP/1.1 body=${inner.length}`),
      'chunked body forwarded, trailer dropped',
    )
    t.same(b.requestLines(), ['POST /a HTTP/1.1', 'POST /b HTTP/1.1'], 'no request line but the two routed ones')
    t.notMatch(b.received(), /X-Trailer/i, 'request trailers are not forwarded (as nginx)')
    await assertSettled(t, p)
  })

  t.test('upgrade abuse: bodies, wrong or missing 101s, silent and absent instances, HTTP/1.0', async (t) => {
    const b = await scriptedService(
      t,
      consul,
      'hu',
      answerEach((r, c) => {
        if (r.target === '/wrong')
          return 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n'
        if (r.target === '/noupgrade') return 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n'
        if (r.target === '/always101')
          return 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
        if (r.target === '/silent') return null
        if (r.target === '/ok') {
          c.write(
            'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
          )
          c.socket.on('data', (d) => c.write(`echo:${d.toString('latin1')}`))
          return null
        }
        return response('200 OK', `plain ${r.line} upgrade=${r.headers.upgrade ?? '-'}\n`)
      }),
    )
    const p = await start(t, consul, { routes: ['/=hu', '/none=hunone'], upstreamHeadersTimeoutMs: 500 })
    const H = 'hu.example'
    const withBody = `GET /ok HTTP/1.1\r\nHost: ${H}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\nhello`
    const r1 = await rawRequest(p.port, withBody)
    t.equal(statusesOf(r1.text)[0], 400, 'an upgrade request with a body: 400')
    const wrong = await rawRequest(p.port, WS_UPGRADE('/wrong', H))
    t.equal(statusesOf(wrong.text)[0], 502, 'a 101 to a protocol nobody asked for: 502 (RFC 9110 §7.8)')
    t.ok(wrong.closed)
    const missing = await rawRequest(p.port, WS_UPGRADE('/noupgrade', H))
    t.equal(statusesOf(missing.text)[0], 502, 'a 101 without Upgrade: 502')
    const silent = await rawRequest(p.port, WS_UPGRADE('/silent', H), 4000)
    t.equal(statusesOf(silent.text)[0], 504, 'an instance that never answers the upgrade: 504')
    const none = await rawRequest(p.port, WS_UPGRADE('/none', H))
    t.equal(statusesOf(none.text)[0], 503, 'no instance: 503')
    const http10 = await rawRequest(
      p.port,
      `GET /always101 HTTP/1.0\r\nHost: ${H}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    )
    t.equal(statusesOf(http10.text)[0], 502, 'HTTP/1.0 must not upgrade (RFC 9110 §7.8): a 101 to it is refused')
    const notListed = await rawRequest(
      p.port,
      `GET /x HTTP/1.1\r\nHost: ${H}\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n`,
    )
    t.match(notListed.text, /plain GET \/x HTTP\/1\.1 upgrade=-/, 'Upgrade not named in Connection: a plain request')
    // A real tunnel: bytes flow both ways after the 101; closing one side closes the other.
    const c = new RawClient(p.port)
    await c.connected
    c.write(`${WS_UPGRADE('/ok', H)}early`)
    t.ok(
      await c.waitFor(/^HTTP\/1\.1 101 [\s\S]*\r\n\r\necho:early/),
      'bytes sent with the upgrade request go through after the 101',
    )
    c.write('ping')
    t.ok(await c.waitFor(/echo:ping/), 'the tunnel carries bytes')
    t.equal(p.openTunnels(), 1)
    c.destroy()
    await assertSettled(t, p)
    const tunnelled = b.connections.find((x) => x.received.includes('GET /ok'))
    t.ok(
      tunnelled && (await eventually(() => tunnelled.socket.destroyed || tunnelled.socket.readableEnded, 2000)),
      'the instance side closed with the client',
    )
  })

  t.test('more pending upgrades than an instance has slots: the rest get 503, every slot comes back', async (t) => {
    await scriptedService(
      t,
      consul,
      'hcap',
      answerEach(() => null),
    )
    const p = await start(t, consul, {
      routes: ['/=hcap'],
      maxConnectionsPerInstance: 3,
      upstreamHeadersTimeoutMs: 1500,
    })
    const clients = await Promise.all(
      Array.from({ length: 6 }, async () => {
        const c = new RawClient(p.port)
        await c.connected
        c.write(WS_UPGRADE('/', 'hcap.example'))
        return c
      }),
    )
    t.ok(
      await eventually(() => clients.filter((c) => /^HTTP\/1\.1 503/.test(c.received)).length === 3, 2000),
      'three over the cap: 503 at once',
    )
    t.equal(p.slotsInUse(), 3, 'three wait for the silent instance')
    t.ok(await eventually(() => clients.every((c) => c.isClosed), 4000), 'the waiting ones get 504 and close')
    t.equal(clients.filter((c) => /^HTTP\/1\.1 504/.test(c.received)).length, 3)
    await assertSettled(t, p)
    for (const c of clients) c.destroy()
  })

  t.test(
    'one connection forwards one request at a time: pipelining takes one slot, an upgrade waits its turn',
    async (t) => {
      await scriptedService(
        t,
        consul,
        'hp',
        answerEach((r, c) => {
          if (r.headers.upgrade) {
            c.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n')
            c.socket.on('data', (d) => c.write(`echo:${d.toString('latin1')}`))
            return null
          }
          setTimeout(() => c.write(response('200 OK', `answer ${r.target}`)), r.target === '/slow' ? 600 : 20)
          return null
        }),
      )
      const p = await start(t, consul, { routes: ['/=hp'], maxConnectionsPerInstance: 4 })
      const H = 'Host: hp.example\r\n'
      const c = new RawClient(p.port)
      await c.connected
      c.write(Array.from({ length: 20 }, (_, i) => `GET /${i} HTTP/1.1\r\n${H}\r\n`).join(''))
      let most = 0
      const watch = setInterval(() => {
        most = Math.max(most, p.slotsInUse())
      }, 5)
      t.ok(await c.waitFor(/answer \/19$/, 8000), 'all 20 pipelined requests answered')
      clearInterval(watch)
      t.equal(most, 1, 'never more than one instance slot for the connection')
      const order = [...c.received.matchAll(/answer \/(\d+)/g)].map((m) => Number(m[1]))
      t.same(
        order,
        Array.from({ length: 20 }, (_, i) => i),
        'in order',
      )
      c.destroy()
      // Others are served while one connection pipelines: it cannot fill the instance's cap.
      const flood = new RawClient(p.port)
      await flood.connected
      flood.write(Array.from({ length: 10 }, () => `GET /slow HTTP/1.1\r\n${H}\r\n`).join(''))
      await sleep(100)
      const other = await http(p.port, '/other', { host: 'hp.example', keepAlive: false })
      t.equal(other.status, 200, 'another client is served meanwhile')
      flood.destroy()
      // More than 32 requests waiting behind a slow one: the connection is cut.
      const greedy = new RawClient(p.port)
      await greedy.connected
      greedy.write(Array.from({ length: 40 }, () => `GET /slow HTTP/1.1\r\n${H}\r\n`).join(''))
      t.ok(await greedy.waitClosed(3000), 'a connection queueing more than 32 requests is closed')
      // An upgrade pipelined behind a slow request: its 101 comes after that request's answer, never before.
      const u = new RawClient(p.port)
      await u.connected
      u.write(`GET /slow HTTP/1.1\r\n${H}\r\n${WS_UPGRADE('/ws', 'hp.example')}`)
      t.ok(await u.waitFor(/HTTP\/1\.1 101 /, 4000), 'the upgrade is answered')
      t.ok(u.received.indexOf('answer /slow') < u.received.indexOf('HTTP/1.1 101'), 'after the answer before it')
      u.write('ping')
      t.ok(await u.waitFor(/echo:ping/), 'and the tunnel carries bytes')
      // Open tunnels do not use up the slots plain requests need.
      const sockets = [u]
      for (let i = 0; i < 5; i++) {
        const w = new RawClient(p.port)
        await w.connected
        w.write(WS_UPGRADE('/ws', 'hp.example'))
        t.ok(await w.waitFor(/^HTTP\/1\.1 101 /), `tunnel ${i + 2} open`)
        sockets.push(w)
      }
      t.equal(p.openTunnels(), 6, 'six tunnels open over a cap of four')
      const plain = await http(p.port, '/plain', { host: 'hp.example', keepAlive: false })
      t.equal(plain.status, 200, 'plain requests still have their slots')
      for (const w of sockets) w.destroy()
      await assertSettled(t, p)
    },
  )

  t.test('TRACE is not forwarded (nginx refuses it too)', async (t) => {
    const { b, p } = await echo(t, 'htr')
    await refused(t, p, b, 'TRACE / HTTP/1.1\r\nHost: htr.example\r\n\r\n', 501, 'TRACE', 'CLB_NOT_IMPLEMENTED')
    await assertSettled(t, p)
  })

  t.test('slow and vanishing clients hold no instance slot for long', async (t) => {
    let served = 0
    const b = await scriptedService(
      t,
      consul,
      'hs',
      answerEach((r, c) => {
        if (r.target === '/slow') {
          setTimeout(() => c.write(response('200 OK', 'late')), 1500)
          return null
        }
        if (r.target === '/big') return response('200 OK', 'z'.repeat(16 * 1024 * 1024))
        served++
        return response('200 OK', `got ${r.body.length}`)
      }),
    )
    const p = await start(t, consul, {
      routes: ['/=hs'],
      clientRequestTimeoutMs: 1500,
      clientHeadersTimeoutMs: 1000,
      clientSendTimeoutMs: 1000,
      maxConnectionsPerInstance: 4,
    })
    const H = 'Host: hs.example\r\n'
    // A small body trickled byte by byte: read by the proxy before an instance is chosen, so no slot is held.
    const trickle = new RawClient(p.port)
    await trickle.connected
    trickle.write(`POST /up HTTP/1.1\r\n${H}Content-Length: 100\r\n\r\n`)
    const tick = setInterval(() => trickle.write('x'), 50)
    await sleep(500)
    t.equal(p.slotsInUse(), 0, 'a slow small upload holds no instance slot while it arrives')
    clearInterval(tick)
    t.ok(
      await trickle.waitFor(/^HTTP\/1\.1 408 [\s\S]*CLB_CLIENT_TIMEOUT/, 4000),
      'a body that does not arrive in time: 408',
    )
    t.ok(await trickle.waitClosed(3000), 'and the connection is closed')
    t.equal(b.received().includes('/up'), false, 'the instance never saw the unfinished upload')
    // A large streamed body that stalls: the request timeout ends it and the slot returns.
    const stall = new RawClient(p.port)
    await stall.connected
    stall.write(`POST /up HTTP/1.1\r\n${H}Content-Length: 1000000\r\n\r\n${'y'.repeat(70_000)}`)
    t.ok(await eventually(() => p.slotsInUse() === 1, 2000), 'a large body streams (it holds a slot while it does)')
    t.ok(await stall.waitFor(/HTTP\/1\.1 408 /, 5000), 'until the request timeout: 408')
    await assertSettled(t, p)
    // Clients that vanish: during a slow answer, mid-upload, and right after sending.
    for (const bytes of [
      `GET /slow HTTP/1.1\r\n${H}\r\n`,
      `POST /up HTTP/1.1\r\n${H}Content-Length: 1000000\r\n\r\n${'y'.repeat(80_000)}`,
      `GET /x HTTP/1.1\r\n${H}\r\n`,
    ]) {
      const c = new RawClient(p.port)
      await c.connected
      c.write(bytes)
      await sleep(150)
      c.socket.resetAndDestroy()
    }
    await assertSettled(t, p)
    // A client that never reads a large answer is cut off after the send timeout; its slot returns.
    const deaf = new RawClient(p.port)
    await deaf.connected
    deaf.socket.pause()
    deaf.write(`GET /big HTTP/1.1\r\n${H}\r\n`)
    t.ok(await eventually(() => p.slotsInUse() === 1, 2000), 'the big answer holds a slot while it flows')
    t.ok(await eventually(() => p.slotsInUse() === 0, 5000), 'a client that reads nothing is cut off: slot back')
    deaf.destroy()
    // A client that half-closes while its answer is pending is taken as gone (as nginx does without
    // proxy_ignore_client_abort): its request is abandoned and the slot returns.
    const half = new RawClient(p.port)
    await half.connected
    half.write(`GET /slow HTTP/1.1\r\n${H}\r\n`)
    await sleep(100)
    half.socket.end()
    t.ok(await half.waitClosed(3000), 'the proxy closes a half-closed client')
    half.destroy()
    await assertSettled(t, p)
    // A silent connection gets its 408 after the headers timeout and is released.
    const mute = new RawClient(p.port)
    await mute.connected
    t.ok(await mute.waitFor(/^HTTP\/1\.1 408 /, 4000), 'a connection that says nothing: 408')
    t.ok(await eventually(() => p.clientConnections() === 0, 3000), 'and released')
    mute.destroy()
    t.ok(served >= 1, 'the instance kept serving')
    const ok = await http(p.port, '/fine', { host: 'hs.example', keepAlive: false })
    t.equal(ok.status, 200, 'the proxy still serves')
    await assertSettled(t, p)
  })

  t.test('odd upstream answers: relayed where HTTP allows, 502 where it does not, never a hang', async (t) => {
    const answers: Record<string, string> = {
      '/barelf': 'HTTP/1.1 200 OK\nContent-Length: 2\n\nok',
      '/badcl': 'HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok',
      '/twocl': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!',
      '/clte': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
      '/status': 'HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok',
      '/ctl': 'HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok',
      '/hugehead': `HTTP/1.1 200 OK\r\nX-Big: ${'h'.repeat(70_000)}\r\nContent-Length: 2\r\n\r\nok`,
      '/101': 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n',
      '/100': `HTTP/1.1 100 Continue\r\n\r\n${response('200 OK', 'after 100')}`,
      '/103': `HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n${response('200 OK', 'after 103')}`,
      '/102': `HTTP/1.1 102 Processing\r\n\r\n${response('200 OK', 'after 102')}`,
      '/trailers':
        'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n',
      '/noframe': '',
      '/cut': '',
      '/cutchunk': '',
      '/extra': `${response('200 OK', 'ok')}${response('200 OK', 'evil!')}`,
    }
    const b = await scriptedService(
      t,
      consul,
      'ho',
      answerEach((r, c) => {
        if (r.target === '/noframe') {
          c.write('HTTP/1.1 200 OK\r\n\r\nuntil close')
          setTimeout(() => c.end(), 50)
          return null
        }
        if (r.target === '/cut') {
          c.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf')
          setTimeout(() => c.destroy(), 50)
          return null
        }
        if (r.target === '/cutchunk') {
          c.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc')
          setTimeout(() => c.destroy(), 50)
          return null
        }
        return answers[r.target] ?? response('200 OK', 'fine')
      }),
    )
    const p = await start(t, consul, { routes: ['/=ho'], retries: 0, maxFails: 1000 })
    const get = (path: string) =>
      rawRequest(p.port, `GET ${path} HTTP/1.1\r\nHost: ho.example\r\nConnection: close\r\n\r\n`)
    // RFC 9112 §2.2 lets a recipient accept bare LF; undici's parser does not: a 502, as for every framing error.
    for (const path of ['/barelf', '/badcl', '/twocl', '/clte', '/status', '/ctl', '/hugehead', '/101']) {
      const r = await get(path)
      t.equal(statusesOf(r.text)[0], 502, `${path}: 502`)
      t.equal(headersOf(r.text)['x-consul-lb-error'], 'CLB_UPSTREAM_FAILED', `${path}: CLB_UPSTREAM_FAILED`)
    }
    const c100 = await get('/100')
    t.equal(statusesOf(c100.text)[0], 502, 'an unsolicited 100 Continue: 502 (undici refuses it; see README)')
    const c103 = await get('/103')
    t.same(statusesOf(c103.text), [103, 200], '103 Early Hints relayed before the answer (RFC 9110 §15.2)')
    t.match(headersOf(c103.text).link ?? '', /s\.css/)
    t.match(c103.text, /after 103$/)
    const c103v10 = await rawRequest(p.port, 'GET /103 HTTP/1.0\r\nHost: ho.example\r\n\r\n')
    t.same(statusesOf(c103v10.text), [200], 'but never to an HTTP/1.0 client')
    const c102 = await get('/102')
    t.same(statusesOf(c102.text), [200], '102 Processing is not relayed')
    const tr = await get('/trailers')
    t.match(tr.text, /^HTTP\/1\.1 200 [\s\S]*\r\n\r\n2\r\nok\r\n0\r\n\r\n$/, 'trailers dropped, body whole (as nginx)')
    const nf = await get('/noframe')
    t.match(nf.text, /until close/, 'a body delimited by close is relayed whole')
    for (const path of ['/cut', '/cutchunk']) {
      const r = await get(path)
      t.equal(statusesOf(r.text)[0], 200, `${path}: the status was already out`)
      t.ok(r.closed, `${path}: the cut shows as a cut connection, never as a complete answer`)
      t.notMatch(r.text, /\r\n0\r\n\r\n$/, `${path}: no terminating chunk`)
    }
    // Bytes after a complete answer on a kept-alive upstream connection never reach another request.
    const first = await http(p.port, '/extra', { host: 'ho.example' })
    t.equal(first.body, 'ok')
    for (let i = 0; i < 5; i++) {
      const next = await http(p.port, '/next', { host: 'ho.example' })
      t.equal(next.body, 'fine', `request ${i + 1} after: its own answer, not the stray one`)
    }
    t.ok(b.connections.length >= 1)
    await assertSettled(t, p)
  })

  t.test('a wedged instance shows in /status while /healthz stays ok; nothing leaks', async (t) => {
    const fds = openDescriptors()
    await scriptedService(
      t,
      consul,
      'hw',
      answerEach((r, c) => {
        if (r.target === '/hang') return null
        setTimeout(() => c.write(response('200 OK', 'ok')), 10)
        return null
      }),
    )
    const p = await start(t, consul, { routes: ['/=hw'], maxConnectionsPerInstance: 2, upstreamHeadersTimeoutMs: 3000 })
    const hung = [0, 1].map(() => http(p.port, '/hang', { host: 'hw.example', keepAlive: false }).catch(() => null))
    t.ok(await eventually(() => p.slotsInUse() === 2, 2000), 'both slots taken by hanging requests')
    const full = await http(p.port, '/', { host: 'hw.example', keepAlive: false })
    t.equal(full.status, 503, 'a third request: 503')
    t.match(full.body, /every instance is at its connection cap/)
    if (p.adminPort !== null) {
      t.equal(
        (await fetch(`http://127.0.0.1:${p.adminPort}/healthz`)).status,
        200,
        '/healthz: the proxy itself is fine',
      )
      const status = (await (await fetch(`http://127.0.0.1:${p.adminPort}/status`)).json()) as {
        proxy: { services: { service: string; instances: { inflight: number; full: boolean; available: boolean }[] }[] }
      }
      const inst = status.proxy.services.find((s) => s.service === 'hw')!.instances[0]!
      t.match(inst, { inflight: 2, full: true, available: false }, '/status shows the instance full')
    }
    await Promise.all(hung)
    await assertSettled(t, p)
    t.ok(await eventually(() => p.clientConnections() === 0, 3000), 'no client connection held')
    t.ok(
      await eventually(() => openDescriptors() <= fds + 4, 3000),
      `descriptors back near ${fds} (${openDescriptors()})`,
    )
  })
}
