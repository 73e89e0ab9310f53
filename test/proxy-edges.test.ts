import { createServer as createHttpServer } from 'node:http'
import { connect, createServer as createTcpServer, type Socket } from 'node:net'
import t from 'tap'
import { WebSocket } from 'ws'
import { startBackend } from './helpers/backends.js'
import { type ConsulAgent, sleep, startConsul } from './helpers/consul.js'
import { http } from './helpers/http.js'
import { metricValue } from './helpers/metrics.js'
import { startTestProxy } from './helpers/proxy.js'

let consul: ConsulAgent
t.before(async () => {
  consul = await startConsul(t)
})

/** Sends raw bytes to the proxy and returns what comes back until the socket closes or `ms` pass. */
function raw(port: number, text: string, ms = 2000): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let out = ''
    const timer = setTimeout(() => {
      s.destroy()
      resolve(out)
    }, ms)
    s.on('data', (b) => {
      out += b.toString()
    })
    s.on('close', () => {
      clearTimeout(timer)
      resolve(out)
    })
    s.on('error', () => {
      /* the proxy may reset: the answer so far is what counts */
    })
    s.write(text)
  })
}

t.test('a client that resets during a WebSocket upgrade does not crash the proxy', async (t) => {
  // An instance that accepts the connection and never answers the upgrade.
  const held = new Set<Socket>()
  const silent = createTcpServer((s) => {
    held.add(s)
    s.on('error', () => {})
  })
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    for (const s of held) s.destroy()
    silent.close()
  })
  await consul.register({
    ID: 'wsr-1',
    Name: 'wsr',
    Address: '127.0.0.1',
    Port: (silent.address() as { port: number }).port,
  })
  const good = await startBackend('wsr-ok', '127.0.0.1', 0, t)
  await consul.register({ ID: good.id, Name: 'wsok', Address: good.host, Port: good.port })
  const p = await startTestProxy(t, consul, { connectTimeoutMs: 500 })
  for (let i = 0; i < 3; i++) {
    const s = connect(p.port, '127.0.0.1')
    await new Promise<void>((r) => s.once('connect', () => r()))
    s.write(
      'GET /chat HTTP/1.1\r\nHost: wsr.service.consul\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    )
    await sleep(150)
    s.resetAndDestroy()
  }
  await sleep(300)
  const r = await http(p.port, '/', { host: 'wsok.service.consul' })
  t.equal(r.status, 200, 'still serving after the resets')
  t.equal(p.proxy.openUpgrades, 0, 'no upgrade socket left behind')
})

t.test('closing the proxy closes the upstream side of open WebSockets', async (t) => {
  const b = await startBackend('wsc-1', '127.0.0.1', 0, t)
  await consul.register({ ID: b.id, Name: 'wsc', Address: b.host, Port: b.port })
  const p = await startTestProxy(t, consul, {})
  const ws = new WebSocket(`ws://127.0.0.1:${p.port}/`, { headers: { host: 'wsc.service.consul' } })
  await new Promise<void>((resolve, reject) => {
    ws.on('open', () => resolve())
    ws.on('error', reject)
  })
  const backendConnections = (): Promise<number> => new Promise((r) => b.server.getConnections((_e, n) => r(n)))
  t.ok((await backendConnections()) >= 1, 'the backend holds the upgraded connection')
  const closed = new Promise<void>((r) => ws.on('close', () => r()))
  await p.close()
  await closed
  const deadline = Date.now() + 2000
  while ((await backendConnections()) > 0 && Date.now() < deadline) await sleep(50)
  t.equal(await backendConnections(), 0, 'upstream WebSocket closed with the proxy')
})

t.test('upgrades other than WebSocket (h2c) are relayed: an HTTP/1.1 instance answers normally', async (t) => {
  const plain = createHttpServer((req, res) => res.end(`plain:${req.url}`))
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    plain.closeAllConnections()
    plain.close()
  })
  await consul.register({
    ID: 'h2c-1',
    Name: 'h2c',
    Address: '127.0.0.1',
    Port: (plain.address() as { port: number }).port,
  })
  const p = await startTestProxy(t, consul, {})
  const out = await raw(
    p.port,
    'GET /x HTTP/1.1\r\nHost: h2c.service.consul\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
    1000,
  )
  t.match(out, /^HTTP\/1\.1 200/, 'answered (curl --http2 on http:// works)')
  t.match(out, /plain:\/x/)
})

t.test('Expect: 100-continue uploads are forwarded (not 502)', async (t) => {
  const b = await startBackend('exp-1', '127.0.0.1', 0, t)
  await consul.register({ ID: b.id, Name: 'exp', Address: b.host, Port: b.port })
  const p = await startTestProxy(t, consul, {})
  const r = await http(p.port, '/echo', {
    host: 'exp.service.consul',
    method: 'POST',
    headers: { expect: '100-continue' },
    body: 'x'.repeat(5000),
  })
  t.equal(r.status, 200)
  t.equal(JSON.parse(r.body).bodyBytes, 5000)
})

t.test('a service idle long enough to stop refreshing is served again at once (revalidated, not 503)', async (t) => {
  const b = await startBackend('idle-1', '127.0.0.1', 0, t)
  await consul.register({ ID: b.id, Name: 'idle', Address: b.host, Port: b.port })
  const p = await startTestProxy(t, consul, {
    ttlFloorMs: 100,
    ttlCeilingMs: 100,
    idleServiceMs: 1000,
    staleIfErrorMs: 0,
    routes: ['/idle=idle'],
  })
  t.equal((await http(p.port, '/idle')).status, 200)
  t.equal((await http(p.port, '/', { host: 'idle.service.consul' })).status, 200)
  await sleep(2500)
  t.equal((await http(p.port, '/idle')).status, 200, 'configured route after idleness')
  t.equal((await http(p.port, '/', { host: 'idle.service.consul' })).status, 200, 'Host route after idleness')
})

t.test('least-connections spreads each service evenly when requests to several services interleave', async (t) => {
  const names = ['lca', 'lcb']
  for (const n of names)
    for (const i of [1, 2]) {
      const b = await startBackend(`${n}-${i}`, '127.0.0.1', 0, t)
      await consul.register({ ID: b.id, Name: n, Address: b.host, Port: b.port })
    }
  const p = await startTestProxy(t, consul, { balancer: 'least-connections' })
  const counts: Record<string, number> = {}
  for (let i = 0; i < 40; i++) {
    for (const n of names) {
      const r = await http(p.port, '/', { host: `${n}.service.consul` })
      counts[r.body] = (counts[r.body] ?? 0) + 1
    }
  }
  for (const id of ['lca-1', 'lca-2', 'lcb-1', 'lcb-2'])
    t.ok((counts[id] ?? 0) >= 10, `${id} got ${counts[id] ?? 0} of 40`)
})

t.test(
  'Host names that never resolve share one metrics label; a POST without a body is not replayed after a header timeout; one instance timing out gives 504',
  async (t) => {
    const slow = [await startBackend('pt-1', '127.0.0.1', 0, t), await startBackend('pt-2', '127.0.0.1', 0, t)]
    for (const b of slow) await consul.register({ ID: b.id, Name: 'pt', Address: b.host, Port: b.port })
    const one = await startBackend('one-1', '127.0.0.1', 0, t)
    await consul.register({ ID: one.id, Name: 'one', Address: one.host, Port: one.port })
    const p = await startTestProxy(t, consul, { upstreamHeadersTimeoutMs: 300, retries: 2, maxFails: 100 })
    for (let i = 0; i < 20; i++) await http(p.port, '/', { host: `nothing-${i}.service.consul` })
    const m = await (await fetch(`http://127.0.0.1:${p.adminPort}/metrics`)).text()
    t.notMatch(m, /service="nothing-/, 'no label per unknown name')
    t.match(m, /consul_lb_requests_total\{service="_unresolved",code="5xx"\} 20/)
    const post = await http(p.port, '/slow?ms=1500', { host: 'pt.service.consul', method: 'POST' })
    t.equal(post.status, 504)
    await sleep(100)
    t.equal(
      slow.flatMap((b) => b.seen.filter((s) => s.startsWith('POST'))).length,
      1,
      'the POST reached one instance once',
    )
    const get = await http(p.port, '/slow?ms=1500', { host: 'one.service.consul' })
    t.equal(get.status, 504, 'a timeout with no other instance to try is still a 504')
    t.equal(get.headers['x-consul-lb-error'], 'CLB_UPSTREAM_TIMEOUT')
  },
)

t.test('empty-pool waiters do not pile up and do not flood Consul with queries', async (t) => {
  const p = await startTestProxy(t, consul, { emptyPool: 'wait', emptyPoolWaitMs: 300, negativeTtlMs: 5000 })
  await http(p.port, '/', { host: 'ghost.service.consul' })
  const before = await (await fetch(`http://127.0.0.1:${p.adminPort}/metrics`)).text()
  const nxdomain = 'consul_lb_dns_queries_total{result="nxdomain",transport="tcp"}'
  const q0 = metricValue(before, nxdomain)
  t.ok(q0 >= 1, `the first request asked Consul (${q0} NXDOMAIN answers)`)
  await Promise.all(Array.from({ length: 30 }, () => http(p.port, '/', { host: 'ghost.service.consul' })))
  const after = await (await fetch(`http://127.0.0.1:${p.adminPort}/metrics`)).text()
  const q1 = metricValue(after, nxdomain)
  t.ok(q1 - q0 <= 4, `30 waiting requests caused ${q1 - q0} DNS queries`)
  const entry = p.proxy.resolver.entries().find((e) => e.service === 'ghost')!
  await sleep(400)
  t.equal(entry.waiters.size, 0, 'no waiter left after the waits ended')
})
