import t, { type Test } from 'tap'
import { WebSocket } from 'ws'
import { type Backend, startBackend } from './helpers/backends.js'
import { type ConsulAgent, sleep, startConsul } from './helpers/consul.js'
import { countBackends, firstSeen, http, lastSeen, runLoad } from './helpers/http.js'
import { startTestProxy } from './helpers/proxy.js'

// One real Consul dev agent for this file; each test uses its own service names.
let consul: ConsulAgent
t.before(async () => {
  consul = await startConsul(t)
})

async function backendsFor(
  t: Test,
  service: string,
  n: number,
  opts: { host?: (i: number) => string; check?: 'http' | 'ttl' } = {},
): Promise<Backend[]> {
  const out: Backend[] = []
  for (let i = 0; i < n; i++) {
    const host = opts.host?.(i) ?? '127.0.0.1'
    const b = await startBackend(`${service}-${i + 1}`, host, 0, t)
    out.push(b)
    await register(service, b, opts.check ?? 'http')
  }
  await consul.waitPassing(service, n)
  return out
}

async function register(service: string, b: Backend, check: 'http' | 'ttl' = 'http'): Promise<void> {
  await consul.register({
    ID: b.id,
    Name: service,
    Address: b.host,
    Port: b.port,
    Check:
      check === 'http'
        ? { HTTP: `http://${b.host}:${b.port}/health`, Interval: '1s', Timeout: '1s', Status: 'passing' }
        : { TTL: '60s', Status: 'passing' },
  })
}

t.test(
  'three backends: 300 requests reach each ~100 times, by Host <svc>.service.consul and by a configured route',
  async (t) => {
    const bs = await backendsFor(t, 'rr', 3)
    const p = await startTestProxy(t, consul, { routes: ['rr.example.com=rr', '/rr=rr,strip'] })
    for (const [label, opts, path] of [
      ['Host rr.service.consul', { host: 'rr.service.consul' }, '/'],
      ['route rr.example.com', { host: 'rr.example.com' }, '/'],
      ['route /rr', {}, '/rr'],
    ] as const) {
      const { counts, failures } = await countBackends(p.port, 300, opts, path)
      t.equal(failures, 0, `${label}: no failures`)
      for (const b of bs) t.ok(Math.abs((counts[b.id] ?? 0) - 100) <= 2, `${label}: ${b.id} got ${counts[b.id]} of 300`)
    }
  },
)

t.test(
  'a fourth instance joins within TTL floor + 1 s; deregistered, critical and maintenance instances leave within the same bound',
  async (t) => {
    const bs = await backendsFor(t, 'churn', 3, { check: 'ttl' })
    const p = await startTestProxy(t, consul, { ttlFloorMs: 1000 })
    const boundMs = 1000 + 1000
    const extra = await startBackend('churn-4', '127.0.0.1', 0, t)
    let registeredAt = 0
    const events: Record<string, number> = {}
    const load = runLoad(p.port, {
      host: 'churn.service.consul',
      concurrency: 4,
      durationMs: 14_000,
      maxRequests: 400_000,
    })
    await sleep(1000)
    registeredAt = Date.now()
    await register('churn', extra, 'ttl')
    await sleep(3000)
    events.deregister = Date.now()
    await consul.deregister(bs[0]!.id)
    await sleep(3000)
    events.critical = Date.now()
    await consul.checkUpdate(`service:${bs[1]!.id}`, 'fail')
    await sleep(3000)
    events.maintenance = Date.now()
    await consul.maintenance(bs[2]!.id, true)
    const samples = await load
    const failed = samples.filter((s) => s.status !== 200)
    t.equal(
      failed.length,
      0,
      `no failed requests during churn (${failed.length} of ${samples.length}: ${JSON.stringify(failed.slice(0, 3))})`,
    )
    const join = firstSeen(samples, 'churn-4')! - registeredAt
    t.ok(join <= boundMs, `joined after ${join} ms (bound ${boundMs})`)
    for (const [event, b] of [
      ['deregister', bs[0]!],
      ['critical', bs[1]!],
      ['maintenance', bs[2]!],
    ] as const) {
      const first = firstSeen(samples, b.id)
      t.ok(first !== null && first < events[event]!, `${event}: ${b.id} served before the change`)
      const last = lastSeen(samples, b.id)
      const leave = (last ?? Number.POSITIVE_INFINITY) - events[event]!
      t.ok(leave <= boundMs, `${event}: last request ${leave} ms after the change (bound ${boundMs})`)
    }
    t.ok(lastSeen(samples, 'churn-4')! > events.maintenance!, 'the remaining instance serves to the end')
  },
)

t.test('an instance killed during a bounded load run costs no failed GET', async (t) => {
  const bs = await backendsFor(t, 'kill', 3)
  const p = await startTestProxy(t, consul, {})
  let killedAt = 0
  const load = runLoad(p.port, { host: 'kill.service.consul', concurrency: 8, durationMs: 5000, maxRequests: 30_000 })
  await sleep(1500)
  killedAt = Date.now()
  await bs[0]!.kill()
  const samples = await load
  const failed = samples.filter((s) => s.status !== 200)
  t.ok(samples.length > 500, `load ran (${samples.length} requests)`)
  t.equal(failed.length, 0, `zero failed GETs (${JSON.stringify(failed.slice(0, 3))})`)
  const lastKilled = lastSeen(samples, 'kill-1')
  t.ok(lastKilled !== null, 'the instance served before it was killed')
  t.ok(lastKilled !== null && lastKilled <= killedAt + 50, 'the killed instance served nothing after its death')
  const killed = p.proxy.upstreams.get(`127.0.0.1:${bs[0]!.port}`)
  t.ok(killed && killed.failures > 0, `the proxy counted the failures against the dead instance (${killed?.failures})`)
  const metrics = await (await fetch(`http://127.0.0.1:${p.adminPort}/metrics`)).text()
  t.match(metrics, /consul_lb_retries_total\{service="kill"\} [1-9]/, 'retries are counted')
})

t.test(
  'ten instances: all ten receive traffic (the UDP answer cap hides none), over tcp and udp transports',
  async (t) => {
    const bs = await backendsFor(t, 'ten', 10)
    for (const dnsTransport of ['tcp', 'udp']) {
      const p = await startTestProxy(t, consul, { dnsTransport })
      const { counts, failures } = await countBackends(p.port, 200, { host: 'ten.service.consul' })
      t.equal(failures, 0)
      t.equal(
        Object.keys(counts).length,
        10,
        `${dnsTransport}: ${Object.keys(counts).length} of 10 instances got traffic`,
      )
      for (const b of bs) t.equal(counts[b.id], 20, `${dnsTransport}: ${b.id} got its 20`)
    }
  },
)

t.test('a fixed-port route resolves A records: instances on 127.0.0.2-4 sharing one port', async (t) => {
  const first = await startBackend('fixed-1', '127.0.0.2', 0, t)
  const port = first.port
  const others = [
    await startBackend('fixed-2', '127.0.0.3', port, t),
    await startBackend('fixed-3', '127.0.0.4', port, t),
  ]
  for (const b of [first, ...others]) await register('fixed', b)
  await consul.waitPassing('fixed', 3)
  const p = await startTestProxy(t, consul, { routes: [`fixed.example.com=fixed:${port}`] })
  const { counts, failures } = await countBackends(p.port, 30, { host: 'fixed.example.com' })
  t.equal(failures, 0)
  t.same(counts, { 'fixed-1': 10, 'fixed-2': 10, 'fixed-3': 10 })
})

t.test('a WebSocket echo works through the proxy', async (t) => {
  await backendsFor(t, 'ws', 1)
  const p = await startTestProxy(t, consul, { routes: ['/ws=ws'] })
  for (const headers of [{ host: 'ws.service.consul' }, {}]) {
    const ws = new WebSocket(`ws://127.0.0.1:${p.port}/ws`, { headers })
    const reply = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send('hello'))
      ws.on('message', (d) => resolve(String(d)))
      ws.on('error', reject)
    })
    t.equal(reply, 'ws-1:hello')
    ws.close()
  }
})

t.test('unknown service → 503 naming it; no route → 404; consul service refused → 403', async (t) => {
  const p = await startTestProxy(t, consul, {})
  const unknown = await http(p.port, '/', { host: 'no-such-svc.service.consul' })
  t.equal(unknown.status, 503)
  t.match(unknown.body, /no healthy instance of no-such-svc/)
  t.equal(unknown.headers['x-consul-lb-error'], 'CLB_NO_HEALTHY_INSTANCE')
  t.ok(unknown.headers['retry-after'], 'Retry-After set')
  const json = await http(p.port, '/', { host: 'no-such-svc.service.consul', headers: { accept: 'application/json' } })
  t.match(JSON.parse(json.body), { code: 'CLB_NO_HEALTHY_INSTANCE', status: 503 })
  const none = await http(p.port, '/x', { host: 'example.org' })
  t.equal(none.status, 404)
  t.match(none.body, /no route matched host "example.org"/)
  const node = await http(p.port, '/', { host: 'vm.node.consul' })
  t.equal(node.status, 404, 'node names are not followed')
  const c = await http(p.port, '/v1/agent/self', { host: 'consul.service.consul' })
  t.equal(c.status, 403, "Consul's API is not reachable through the proxy")
})

t.test(
  'forwarding: hop-by-hop headers dropped, X-Forwarded-* set, path prefix stripped, bodies streamed both ways',
  async (t) => {
    await backendsFor(t, 'fwd', 1)
    const p = await startTestProxy(t, consul, { routes: ['/api=fwd,strip'] })
    const r = await http(p.port, '/api/echo?q=1', {
      host: 'app.example.com',
      headers: {
        'x-forwarded-for': '10.0.0.1',
        connection: 'keep-alive, x-secret',
        'x-secret': 'drop me',
        te: 'trailers',
      },
    })
    const seen = JSON.parse(r.body)
    t.equal(seen.url, '/echo?q=1')
    t.equal(seen.headers['x-forwarded-for'], '10.0.0.1, 127.0.0.1')
    t.equal(seen.headers['x-forwarded-proto'], 'http')
    t.equal(seen.headers['x-forwarded-host'], 'app.example.com')
    t.equal(seen.headers.host, 'app.example.com', 'Host is preserved')
    t.notOk(seen.headers['x-secret'], 'headers named in Connection are dropped')
    t.notOk(seen.headers.te, 'TE dropped')
    const body = Buffer.alloc(3 * 1024 * 1024, 1)
    const up = await http(p.port, '/api/echo', { method: 'POST', body })
    t.equal(JSON.parse(up.body).bodyBytes, body.length, '3 MiB request body arrives whole')
    const down = await http(p.port, '/api/big?bytes=5000000')
    t.equal(down.body.length, 5_000_000, '5 MB response body arrives whole')
  },
)

t.test('a request body over maxBodyBytes is refused with 413, chunked or not', async (t) => {
  await backendsFor(t, 'limit', 1)
  const p = await startTestProxy(t, consul, { maxBodyBytes: 1000 })
  const r = await http(p.port, '/echo', { host: 'limit.service.consul', method: 'POST', body: Buffer.alloc(2000) })
  t.equal(r.status, 413)
  t.equal(r.headers['x-consul-lb-error'], 'CLB_BODY_TOO_LARGE')
  const ok = await http(p.port, '/echo', { host: 'limit.service.consul', method: 'POST', body: Buffer.alloc(500) })
  t.equal(ok.status, 200)
  const chunked = await http(p.port, '/echo', {
    host: 'limit.service.consul',
    method: 'POST',
    headers: { 'transfer-encoding': 'chunked' },
    body: Buffer.alloc(5000),
    keepAlive: false,
  }).catch((e: Error) => ({ status: 0, body: e.message, headers: {} }))
  t.ok(chunked.status === 413 || chunked.status === 0, `chunked oversize refused (${chunked.status})`)
})

t.test(
  'an upstream that does not answer in time gives 504; a POST is never replayed after its body was sent',
  async (t) => {
    const slow = await backendsFor(t, 'slow', 2)
    const p = await startTestProxy(t, consul, { upstreamHeadersTimeoutMs: 300, retries: 0 })
    const r = await http(p.port, '/slow?ms=2000', { host: 'slow.service.consul' })
    t.equal(r.status, 504)
    t.equal(r.headers['x-consul-lb-error'], 'CLB_UPSTREAM_TIMEOUT')
    const p2 = await startTestProxy(t, consul, { upstreamHeadersTimeoutMs: 300, retries: 2, maxFails: 100 })
    const post = await http(p2.port, '/slow?ms=2000', {
      host: 'slow.service.consul',
      method: 'POST',
      body: 'x'.repeat(100),
    })
    t.equal(post.status, 504, 'POST with a body timed out once and was not retried')
    await sleep(100)
    const posts = slow.flatMap((b) => b.seen.filter((r) => r.startsWith('POST /slow')))
    t.equal(posts.length, 1, 'exactly one backend saw the POST, once')
  },
)

t.test('/healthz, /status and /metrics explain the proxy', async (t) => {
  await backendsFor(t, 'adm', 2)
  const p = await startTestProxy(t, consul, { routes: ['/adm=adm'] })
  await countBackends(p.port, 10, {}, '/adm')
  const base = `http://127.0.0.1:${p.adminPort}`
  t.equal((await fetch(`${base}/healthz`)).status, 200)
  const status = (await (await fetch(`${base}/status`)).json()) as {
    proxy: {
      services: { service: string; answer: string; transport: string; instances: unknown[]; ageMs: number }[]
      routes: string[]
    }
  }
  const svc = status.proxy.services.find((s) => s.service === 'adm')!
  t.equal(svc.answer, 'fresh')
  t.equal(svc.transport, 'tcp')
  t.equal(svc.instances.length, 2)
  t.same(status.proxy.routes, ['/adm=adm'])
  const m = await (await fetch(`${base}/metrics`)).text()
  t.match(m, /consul_lb_requests_total\{service="adm",code="2xx"\} 10/)
  t.match(m, /consul_lb_upstream_response_seconds_bucket/)
  t.match(m, /consul_lb_dns_queries_total\{result="ok",transport="tcp"\}/)
  t.match(m, /consul_lb_cache_requests_total\{result="hit"\}/)
})

t.test('graceful close: an in-flight request finishes, new connections are refused', async (t) => {
  const [b] = await backendsFor(t, 'drain', 1)
  const p = await startTestProxy(t, consul, {})
  const slow = http(p.port, '/slow?ms=700', { host: 'drain.service.consul', keepAlive: false })
  // In flight means at the backend (a fixed sleep could close while the request was still being read or waited for
  // its first DNS answer: a connection with no request yet may be closed at shutdown).
  // b.hits would count Consul's health checks too (every second), so look for the request itself.
  const arrived = () => b.seen.filter((s) => s.startsWith('GET /slow')).length
  for (const deadline = Date.now() + 5000; arrived() === 0 && Date.now() < deadline; ) await sleep(10)
  t.equal(arrived(), 1, 'the request reached the backend before close()')
  const closing = p.close()
  const r = await slow
  t.equal(r.status, 200, 'in-flight request completed during shutdown')
  await closing
  await t.rejects(http(p.port, '/', { host: 'drain.service.consul', keepAlive: false }), 'listener closed')
})

t.test(
  'a reset before any response byte: GET and body-less POST retry on another instance; a POST whose body was sent is not replayed',
  async (t) => {
    const { createServer } = await import('node:net')
    // An instance that reads the request and then resets the connection: what a crashing backend looks like.
    let resets = 0
    const resetter = createServer((s) =>
      s.on('data', () => {
        resets++
        s.resetAndDestroy()
      }),
    )
    await new Promise<void>((r) => resetter.listen(0, '127.0.0.1', () => r()))
    t.teardown(() => new Promise<void>((r) => resetter.close(() => r())))
    const good = await startBackend('reset-good', '127.0.0.1', 0, t)
    await consul.register({
      ID: 'reset-bad',
      Name: 'reset',
      Address: '127.0.0.1',
      Port: (resetter.address() as { port: number }).port,
    })
    await consul.register({ ID: good.id, Name: 'reset', Address: good.host, Port: good.port })
    const p = await startTestProxy(t, consul, { maxFails: 1000, retries: 2 })
    for (const method of ['GET', 'POST']) {
      const r = await countBackends(p.port, 10, { host: 'reset.service.consul', method })
      t.equal(r.failures, 0, `${method} without a body: every reset was retried (${resets} resets)`)
    }
    const before = resets
    let failed = 0
    for (let i = 0; i < 10; i++) {
      const r = await http(p.port, '/echo', { host: 'reset.service.consul', method: 'POST', body: 'payload' })
      if (r.status !== 200) {
        failed++
        t.equal(r.status, 502)
        t.equal(r.headers['x-consul-lb-error'], 'CLB_UPSTREAM_FAILED')
      }
    }
    t.ok(failed > 0, `POSTs with a body that hit the resetting instance failed (${failed})`)
    t.equal(failed, resets - before, 'each such POST reached the resetting instance exactly once: never replayed')
  },
)

t.test("SRV weights from Consul's Weights.Passing are honoured", async (t) => {
  const heavy = await startBackend('w-heavy', '127.0.0.1', 0, t)
  const light = await startBackend('w-light', '127.0.0.1', 0, t)
  await consul.register({
    ID: heavy.id,
    Name: 'weighted',
    Address: heavy.host,
    Port: heavy.port,
    Weights: { Passing: 3, Warning: 1 },
  })
  await consul.register({
    ID: light.id,
    Name: 'weighted',
    Address: light.host,
    Port: light.port,
    Weights: { Passing: 1, Warning: 1 },
  })
  const p = await startTestProxy(t, consul, {})
  const { counts, failures } = await countBackends(p.port, 400, { host: 'weighted.service.consul' })
  t.equal(failures, 0)
  t.same(counts, { 'w-heavy': 300, 'w-light': 100 }, `3:1 split (${JSON.stringify(counts)})`)
})
