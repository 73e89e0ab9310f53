import t from 'tap'
import { startBackend } from './helpers/backends.js'
import { sleep, startConsul } from './helpers/consul.js'
import { startFakeDns } from './helpers/fake-dns.js'
import { countBackends, http } from './helpers/http.js'
import { startTestProxy } from './helpers/proxy.js'

t.test(
  'Consul stopped: requests flow from the stale cache for the window, then 503 with a clear body; fresh again when Consul is back',
  async (t) => {
    const consul = await startConsul(t)
    const bs = [await startBackend('stale-1', '127.0.0.1', 0, t), await startBackend('stale-2', '127.0.0.1', 0, t)]
    const registerAll = async (): Promise<void> => {
      for (const b of bs)
        await consul.register({
          ID: b.id,
          Name: 'stale',
          Address: b.host,
          Port: b.port,
          Check: { TTL: '60s', Status: 'passing' },
        })
    }
    await registerAll()
    const p = await startTestProxy(t, consul, { staleIfErrorMs: 3000, dnsTimeoutMs: 200, ttlFloorMs: 500 })
    t.same((await countBackends(p.port, 10, { host: 'stale.service.consul' })).counts, { 'stale-1': 5, 'stale-2': 5 })
    await consul.stop()
    const stoppedAt = Date.now()
    // Within the window: every request still answered from the last good answer.
    let served = 0
    while (Date.now() - stoppedAt < 2000) {
      const r = await http(p.port, '/', { host: 'stale.service.consul' })
      t.equal(r.status, 200, 'served from the stale answer')
      served++
      await sleep(100)
    }
    t.ok(served >= 3, `${served} requests served while Consul was down`)
    const status = (
      p.proxy.status() as { services: { service: string; answer: string; lastError: { code: string } | null }[] }
    ).services.find((s) => s.service === 'stale')!
    t.equal(status.answer, 'stale', '/status says the answer is stale')
    t.ok(status.lastError?.code?.startsWith('CLB_DNS_'), `/status names the DNS failure (${status.lastError?.code})`)
    // Past the window (3 s + at most one retry back-off): 503 that says why.
    const deadline = Date.now() + 10_000
    let last = await http(p.port, '/', { host: 'stale.service.consul' })
    while (last.status === 200 && Date.now() < deadline) {
      await sleep(200)
      last = await http(p.port, '/', { host: 'stale.service.consul' })
    }
    t.equal(last.status, 503, `503 after the stale window (${Date.now() - stoppedAt} ms after the stop)`)
    t.match(last.body, /no healthy instance of stale \(Consul DNS failed: CLB_DNS_/)
    // Consul back (a dev agent comes back empty: register again): fresh answers are used.
    await consul.start()
    await registerAll()
    const back = Date.now() + 10_000
    let r = await http(p.port, '/', { host: 'stale.service.consul' })
    while (r.status !== 200 && Date.now() < back) {
      await sleep(200)
      r = await http(p.port, '/', { host: 'stale.service.consul' })
    }
    t.equal(r.status, 200, 'served again once Consul answers')
    const again = (p.proxy.status() as { services: { service: string; answer: string }[] }).services.find(
      (s) => s.service === 'stale',
    )!
    t.equal(again.answer, 'fresh')
  },
)

t.test('DNS servers fail over in order: a silent first server does not stop routing', async (t) => {
  // Fake first server: Consul cannot be made to hang without answering.
  const silent = await startFakeDns(t, () => 'silence')
  const consul = await startConsul(t)
  const b = await startBackend('fo-1', '127.0.0.1', 0, t)
  await consul.register({ ID: b.id, Name: 'fo', Address: b.host, Port: b.port })
  const p = await startTestProxy(
    t,
    { dnsAddr: silent.label },
    { dns: [silent.label, consul.dnsAddr], dnsTimeoutMs: 200 },
  )
  const { counts, failures } = await countBackends(p.port, 20, { host: 'fo.service.consul' })
  t.equal(failures, 0)
  t.same(counts, { 'fo-1': 20 })
})

t.test('empty pool, wait mode: a request waits for an instance to appear instead of failing', async (t) => {
  const consul = await startConsul(t)
  const b = await startBackend('late-1', '127.0.0.1', 0, t)
  const p = await startTestProxy(t, consul, {
    emptyPool: 'wait',
    emptyPoolWaitMs: 5000,
    negativeTtlMs: 200,
    ttlFloorMs: 200,
  })
  const fail = await startTestProxy(t, consul, { emptyPool: 'fail' })
  const quick = await http(fail.port, '/', { host: 'late.service.consul' })
  t.equal(quick.status, 503, 'fail mode answers 503 at once')
  const started = Date.now()
  const pending = http(p.port, '/', { host: 'late.service.consul' })
  await sleep(800)
  await consul.register({ ID: b.id, Name: 'late', Address: b.host, Port: b.port })
  const r = await pending
  t.equal(r.status, 200, `the held request was served after ${Date.now() - started} ms`)
  t.equal(r.body, 'late-1')
  const never = await http(p.port, '/', { host: 'never.service.consul' })
  t.equal(never.status, 503, 'a service that never appears still gets its 503 after the wait')
})
