import { readFileSync } from 'node:fs'
import { type ClientRequest, type IncomingMessage, request } from 'node:http'
import { connect } from 'node:net'
import t from 'tap'
import { startAdmin } from '../src/admin/server.js'
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
  sock.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n')
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
  let collected = 0
  const admin = await startAdmin({
    host: '127.0.0.1',
    port: 0,
    log: silentLogger(),
    status: { n: () => ++collected },
    live: { intervalMs: 100, maxStreams: 8, maxBufferedBytes: 1 << 20 },
  })
  t.teardown(() => admin.close())
  await sleep(350)
  t.equal(collected, 0, 'nothing is computed while no page is open')
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
  const during = collected
  t.ok(during <= Math.ceil(elapsed / 100) + 2, `${during} snapshots in ${elapsed} ms for 8 pages (not 8 per interval)`)
  t.ok(
    viewers.every((v) => v.events >= 5),
    `every page got the shared snapshots (fewest ${Math.min(...viewers.map((v) => v.events))})`,
  )
  for (const v of viewers) v.req.destroy()
  await sleep(300)
  const after = collected
  await sleep(500)
  t.equal(collected, after, 'the timer stops when the last page closes')
  t.equal(admin.feed.openStreams, 0, 'no stream left open')
})
