import t from 'tap'
import { startBackend } from './helpers/backends.js'
import { sleep, startConsulCluster } from './helpers/consul.js'
import { countBackends, runLoad } from './helpers/http.js'
import { startTestProxy } from './helpers/proxy.js'

t.test(
  'three Consul servers: the first DNS server stops, requests keep flowing and fresh answers come from the next',
  async (t) => {
    const servers = await startConsulCluster(t)
    const [s1, s2] = servers as [(typeof servers)[0], (typeof servers)[0]]
    const a = await startBackend('cl-1', '127.0.0.1', 0, t)
    const b = await startBackend('cl-2', '127.0.0.1', 0, t)
    await s2.register({ ID: a.id, Name: 'cl', Address: a.host, Port: a.port })
    await s2.register({ ID: b.id, Name: 'cl', Address: b.host, Port: b.port })
    for (const s of servers) await s.waitPassing('cl', 2)
    const p = await startTestProxy(t, s1, {
      dns: servers.map((s) => s.dnsAddr),
      dnsTimeoutMs: 300,
      staleIfErrorMs: 60_000,
    })
    // Servers answer DNS from their local (possibly stale) state: wait until the first one has caught up.
    const caughtUp = Date.now() + 15_000
    while (
      Object.keys((await countBackends(p.port, 4, { host: 'cl.service.consul' })).counts).length < 2 &&
      Date.now() < caughtUp
    )
      await sleep(250)
    t.same((await countBackends(p.port, 10, { host: 'cl.service.consul' })).counts, { 'cl-1': 5, 'cl-2': 5 })
    const load = runLoad(p.port, { host: 'cl.service.consul', concurrency: 4, durationMs: 6000, maxRequests: 100_000 })
    await sleep(1000)
    await s1.stop()
    await sleep(1500)
    // A change made after the first server is gone: only a fresh answer from another server can show it.
    await s2.deregister(b.id)
    // With the old leader gone the catalog may take a moment (raft election, anti-entropy): time from when it shows.
    await s2.waitPassing('cl', 1)
    const removedAt = Date.now()
    const samples = await load
    const failed = samples.filter((s) => s.status !== 200)
    t.equal(failed.length, 0, `no failed request while the first DNS server was stopped (${samples.length} requests)`)
    const lastB = Math.max(0, ...samples.filter((s) => s.backend === 'cl-2').map((s) => s.t))
    t.ok(
      lastB - removedAt <= 2000,
      `the deregistration made through server 2 was seen within TTL floor + 1 s (${lastB - removedAt} ms after the catalog showed it)`,
    )
    const status = (
      p.proxy.status() as { services: { service: string; answer: string; server: string }[] }
    ).services.find((s) => s.service === 'cl')!
    t.equal(status.answer, 'fresh', 'answers are fresh, not stale')
    t.not(status.server, s1.dnsAddr, `answers come from another server (${status.server})`)
  },
)
