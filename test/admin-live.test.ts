import { readFileSync } from 'node:fs'
import { type ClientRequest, type IncomingMessage, request } from 'node:http'
import { connect } from 'node:net'
import t, { type Test } from 'tap'
import { type AdminServer, FOREIGN_HOST_CODE, startAdmin } from '../src/admin/server.js'
import { loadRegistratorConfig } from '../src/config/registrator.js'
import { loadServeConfig } from '../src/config/serve.js'
import { silentLogger } from '../src/log.js'
import { startBackend } from './helpers/backends.js'
import { sleep, startConsul } from './helpers/consul.js'
import { runLoad } from './helpers/http.js'
import { metricValue } from './helpers/metrics.js'
import { startServe } from './helpers/serve.js'

/** A status page's event stream as a raw client sees it: the answer's status and the `status` events received. */
interface Viewer {
  status: number
  error: string | null
  events: number
  req: ClientRequest
}

/** An admin listener whose /status counts how often it was computed (8 streams at most, `intervalMs` apart). */
async function countingAdmin(t: Test, intervalMs: number): Promise<{ admin: AdminServer; collected: () => number }> {
  let collected = 0
  const admin = await startAdmin({
    host: '127.0.0.1',
    port: 0,
    log: silentLogger(),
    status: { n: () => ++collected },
    live: { intervalMs, maxStreams: 8, maxBufferedBytes: 1 << 20 },
  })
  t.teardown(() => admin.close())
  return { admin, collected: () => collected }
}

function openViewer(port: number): Promise<Viewer> {
  return new Promise((resolve) => {
    const v: Viewer = { status: 0, error: null, events: 0, req: null as unknown as ClientRequest }
    v.req = request({ host: '127.0.0.1', port, path: '/events', agent: false }, (res: IncomingMessage) => {
      v.status = res.statusCode ?? 0
      v.error = (res.headers['x-consul-lb-error'] as string | undefined) ?? null
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        v.events += chunk.split('event: status\n').length - 1
      })
      res.on('error', () => {
        /* torn down by the test */
      })
      resolve(v)
    })
    v.req.on('error', (err) => {
      v.error = err.message
      resolve(v)
    })
    v.req.end()
  })
}

/** CPU seconds (utime + stime) a process has used, from /proc/<pid>/stat (fields after the command name). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

async function metric(admin: number, name: string): Promise<number> {
  return metricValue(await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text(), name)
}

t.test(
  'a thousand status pages cannot hurt the proxy: 64 streams, the rest turned away, one snapshot a second for all',
  async (t) => {
    const consul = await startConsul(t)
    const bs = [await startBackend('live-1', '127.0.0.1', 0, t), await startBackend('live-2', '127.0.0.1', 0, t)]
    for (const b of bs) await consul.register({ ID: b.id, Name: 'live', Address: b.host, Port: b.port })
    await consul.waitPassing('live', 2)
    const s = await startServe(t, ['--dns', consul.dnsAddr, '--route', '/=live', '--log-level', 'warn'])
    const pid = s.proc.pid!
    /** A fixed window of proxied load: requests, failures, and the proxy process's CPU per request. */
    const window = async (ms: number) => {
      const cpu0 = cpuSeconds(pid)
      const t0 = Date.now()
      const samples = await runLoad(s.port, { concurrency: 4, durationMs: ms, maxRequests: 50_000 })
      const cpu = cpuSeconds(pid) - cpu0
      return {
        requests: samples.length,
        failed: samples.filter((x) => x.status !== 200).length,
        seconds: (Date.now() - t0) / 1000,
        cpuPerRequestUs: (cpu * 1e6) / samples.length,
      }
    }
    await window(1500) // warm-up: JIT, pools, DNS cache
    const alone = await window(4000)

    // Bounded: 1000 viewers opened once, held for a fixed window, then closed.
    const viewers: Viewer[] = []
    t.teardown(() => {
      for (const v of viewers) v.req.destroy()
    })
    for (let i = 0; i < 1000; i += 100)
      viewers.push(...(await Promise.all(Array.from({ length: 100 }, () => openViewer(s.admin)))))
    const served = viewers.filter((v) => v.status === 200)
    const refused = viewers.filter((v) => v.status === 503)
    t.equal(served.length, 64, 'the first 64 status pages get a live stream')
    t.equal(refused.length, 936, 'the other 936 are turned away with 503')
    t.ok(
      refused.every((v) => v.error === 'CLB_ADMIN_STREAMS_FULL'),
      'each refusal says why (x-consul-lb-error: CLB_ADMIN_STREAMS_FULL)',
    )
    t.equal(await metric(s.admin, 'consul_lb_admin_streams_refused_total'), 936, 'refusals are counted in /metrics')
    t.equal(await metric(s.admin, 'consul_lb_admin_event_streams'), 64, '/metrics shows 64 open streams')

    // The same load again, with 64 pages watching.
    const snapshotsBefore = await metric(s.admin, 'consul_lb_admin_snapshots_total')
    const eventsBefore = served.map((v) => v.events)
    const watched = await window(4000)
    const snapshots = (await metric(s.admin, 'consul_lb_admin_snapshots_total')) - snapshotsBefore
    t.equal(watched.failed, 0, `every proxied request succeeded while 64 pages watched (${watched.requests} requests)`)
    t.ok(
      snapshots <= Math.ceil(watched.seconds) + 1,
      `${snapshots} snapshots in ${watched.seconds.toFixed(1)} s: one per second however many pages watch`,
    )
    const received = served.map((v, i) => v.events - eventsBefore[i]!)
    t.ok(
      received.every((n) => n >= Math.floor(watched.seconds) - 2),
      `every open page kept getting updates (fewest ${Math.min(...received)} in ${watched.seconds.toFixed(1)} s)`,
    )
    // CPU per request is the process's own time, so other work on the machine moves it far less than throughput.
    t.ok(
      watched.cpuPerRequestUs <= alone.cpuPerRequestUs * 1.5,
      `the proxy's CPU per request with 64 pages open is ${watched.cpuPerRequestUs.toFixed(0)} µs, alone ${alone.cpuPerRequestUs.toFixed(0)} µs (${alone.requests} and ${watched.requests} requests in 4 s)`,
    )

    // A page closes: its place is free for the next viewer.
    served[0]!.req.destroy()
    await sleep(200)
    const next = await openViewer(s.admin)
    viewers.push(next)
    t.equal(next.status, 200, 'a closed page frees a stream for the next viewer')
  },
)

t.test('a viewer that stops reading is disconnected instead of buffered without end', async (t) => {
  const big = { filler: 'x'.repeat(256 * 1024) }
  const admin = await startAdmin({
    host: '127.0.0.1',
    port: 0,
    log: silentLogger(),
    status: { proxy: () => big },
    live: { intervalMs: 20, maxStreams: 4, maxBufferedBytes: 1 << 20 },
  })
  t.teardown(() => admin.close())
  const sock = connect(admin.port, '127.0.0.1')
  t.teardown(() => sock.destroy())
  await new Promise<void>((r) => sock.once('connect', () => r()))
  sock.write('GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
  // Read the first bytes, then stop reading: the kernel buffers fill, then the server's own.
  await new Promise<void>((r) => sock.once('data', () => r()))
  sock.pause()
  const closed = new Promise<void>((r) => sock.once('close', () => r()))
  const deadline = Date.now() + 20_000
  while (admin.feed.dropped === 0 && Date.now() < deadline) await sleep(50)
  t.equal(admin.feed.dropped, 1, 'the stuck viewer was dropped')
  t.equal(admin.feed.openStreams, 0, 'its stream slot is free again')
  sock.resume()
  await closed
})

t.test('one snapshot per interval for every viewer together, and none while nobody watches', async (t) => {
  const { admin, collected } = await countingAdmin(t, 100)
  await sleep(350)
  t.equal(collected(), 0, 'nothing is computed while no page is open')
  const viewers = await Promise.all(Array.from({ length: 8 }, () => openViewer(admin.port)))
  t.teardown(() => {
    for (const v of viewers) v.req.destroy()
  })
  t.ok(
    viewers.every((v) => v.status === 200),
    'eight pages are served',
  )
  const start = Date.now()
  await sleep(1000)
  const elapsed = Date.now() - start
  const during = collected()
  t.ok(during <= Math.ceil(elapsed / 100) + 2, `${during} snapshots in ${elapsed} ms for 8 pages (not 8 per interval)`)
  t.ok(
    viewers.every((v) => v.events >= 5),
    `every page got the shared snapshots (fewest ${Math.min(...viewers.map((v) => v.events))})`,
  )
  for (const v of viewers) v.req.destroy()
  await sleep(300)
  const after = collected()
  await sleep(500)
  t.equal(collected(), after, 'the timer stops when the last page closes')
  t.equal(admin.feed.openStreams, 0, 'no stream left open')
})

/** One raw HTTP/1.1 exchange on a new connection: the answer's status line and headers (or '' when it was closed). */
function rawHead(port: number, request: string): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1')
    let got = ''
    const done = () => {
      sock.destroy()
      resolve(got.split('\r\n\r\n')[0] ?? '')
    }
    sock.setTimeout(5000, done)
    sock.on('data', (b: Buffer) => {
      got += b.toString('latin1')
      if (got.includes('\r\n\r\n')) done()
    })
    sock.on('error', done)
    sock.on('close', done)
    sock.write(request)
  })
}

t.test('read-only: every admin path refuses every method but GET and HEAD, and changes nothing', async (t) => {
  let reads = 0
  const admin = await startAdmin({
    host: '127.0.0.1',
    port: 0,
    log: silentLogger(),
    status: { n: () => ++reads },
  })
  t.teardown(() => admin.close())
  const paths = ['/', '/events', '/healthz', '/status', '/metrics', '/nothing', '/status?x=1']
  for (const path of paths)
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE']) {
      const head = await rawHead(
        admin.port,
        `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
      )
      if (!/^HTTP\/1\.1 405 /.test(head) || !/\r\nallow: GET, HEAD/i.test(head))
        t.fail(`${method} ${path}: ${head.split('\r\n')[0]}`)
    }
  t.pass(`${paths.length} paths × 6 methods: 405 with Allow: GET, HEAD`)
  t.equal(reads, 0, 'no refused request read the status')
  t.equal(admin.feed.openStreams, 0, 'nor opened a stream')
  const connectHead = await rawHead(admin.port, 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n')
  t.notMatch(connectHead, /^HTTP\/1\.1 2/, `CONNECT tunnels nowhere (${connectHead.split('\r\n')[0] || 'closed'})`)
  const upgrade = await rawHead(
    admin.port,
    'GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
  )
  t.notMatch(upgrade, /^HTTP\/1\.1 101/, `an Upgrade is not switched (${upgrade.split('\r\n')[0] || 'closed'})`)
  const s = loadServeConfig({ object: {} })
  t.same(s.admin, { host: '127.0.0.1', port: 8081 }, "serve's admin listener is on loopback by default")
  t.same(loadRegistratorConfig({ object: {} }).admin, { host: '127.0.0.1', port: 8082 }, "the registrator's too")
})

t.test('HEAD /events answers the head a stream gets and holds no stream', async (t) => {
  const admin = await startAdmin({
    host: '127.0.0.1',
    port: 0,
    log: silentLogger(),
    status: {},
    live: { intervalMs: 100, maxStreams: 2, maxBufferedBytes: 1 << 20 },
  })
  t.teardown(() => admin.close())
  for (let i = 0; i < 5; i++) {
    const res = await fetch(`http://127.0.0.1:${admin.port}/events`, { method: 'HEAD' })
    t.equal(res.status, 200)
    t.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8')
  }
  t.equal(admin.feed.openStreams, 0, 'five HEADs hold none of the two streams')
  const v = await openViewer(admin.port)
  t.teardown(() => v.req.destroy())
  t.equal(v.status, 200, 'a page still gets a stream')
})

t.test(
  'a client that opens and drops streams in a loop: bounded snapshots, every slot and connection given back',
  async (t) => {
    const { admin, collected } = await countingAdmin(t, 200)
    // Bounded: 2,000 cycles or 20 s, 8 at a time, each dropping its stream as soon as the head arrived.
    const start = Date.now()
    let cycles = 0
    while (cycles < 2000 && Date.now() - start < 20_000) {
      const vs = await Promise.all(Array.from({ length: 8 }, () => openViewer(admin.port)))
      for (const v of vs) v.req.destroy()
      cycles += vs.length
    }
    const elapsed = Date.now() - start
    t.ok(cycles >= 200, `${cycles} streams opened and dropped in ${elapsed} ms`)
    t.ok(
      collected() <= Math.ceil(elapsed / 180) + 2,
      `${collected()} snapshots: at most one per interval, not one per stream`,
    )
    const deadline = Date.now() + 5000
    while (admin.feed.openStreams > 0 && Date.now() < deadline) await sleep(20)
    t.equal(admin.feed.openStreams, 0, 'every stream slot is free again')
    const after = collected()
    await sleep(600)
    t.equal(collected(), after, 'and the timer stopped: nothing is computed for no one')
    const next = await openViewer(admin.port)
    t.teardown(() => next.req.destroy())
    t.equal(next.status, 200, 'the next page is served')
  },
)

t.test(
  'DNS rebinding: on loopback, a request naming another host (a web page whose name now resolves to 127.0.0.1) is refused',
  async (t) => {
    const admin = await startAdmin({ host: '127.0.0.1', port: 0, log: silentLogger(), status: { secret: () => 1 } })
    t.teardown(() => admin.close())
    for (const path of ['/', '/events', '/status', '/metrics', '/healthz']) {
      const head = await rawHead(
        admin.port,
        `GET ${path} HTTP/1.1\r\nHost: attacker.example:${admin.port}\r\nConnection: close\r\n\r\n`,
      )
      t.match(head, /^HTTP\/1\.1 403 /, `${path}: 403`)
      t.match(head, new RegExp(`x-consul-lb-error: ${FOREIGN_HOST_CODE}`, 'i'), `${path}: says why`)
    }
    for (const host of [
      `127.0.0.1:${admin.port}`,
      `localhost:${admin.port}`,
      `[::1]:${admin.port}`,
      'LOCALHOST',
      'app.localhost',
      '10.1.2.3',
    ]) {
      const head = await rawHead(admin.port, `GET /status HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
      t.match(head, /^HTTP\/1\.1 200 /, `Host ${host}: 200 (an address or localhost, as a person types it)`)
    }
    const noHost = await rawHead(admin.port, 'GET /healthz HTTP/1.0\r\n\r\n')
    t.match(noHost, /^HTTP\/1\.1 200 /, 'HTTP/1.0 without Host (a script, not a browser): 200')
    t.equal(admin.feed.openStreams, 0)
  },
)
