import t from 'tap'
import { startBackend } from './helpers/backends.js'
import { sleep, startConsul } from './helpers/consul.js'
import { http } from './helpers/http.js'
import { startTestProxy } from './helpers/proxy.js'

/** Every consul_lb_dns_queries_total sample summed (throws when there is none: a renamed metric must fail). */
async function dnsQueries(adminPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()
  const lines = text.split('\n').filter((l) => l.startsWith('consul_lb_dns_queries_total{'))
  if (lines.length === 0) throw new Error('consul_lb_dns_queries_total not found in /metrics')
  return lines.reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
}

t.test(
  'the DNS query rate follows demand: 300 services registered, 3 requested, about 3 lookups per TTL',
  async (t) => {
    const consul = await startConsul(t)
    const a = await startBackend('demand-a', '127.0.0.1', 0, t)
    const b = await startBackend('demand-b', '127.0.0.1', 0, t)
    const total = 300
    for (let i = 0; i < total; i += 50)
      await Promise.all(
        Array.from({ length: Math.min(50, total - i) }, (_, k) =>
          consul.register({ ID: `d${i + k}`, Name: `d${i + k}`, Address: a.host, Port: a.port }),
        ),
      )
    const ttlMs = 300
    const p = await startTestProxy(t, consul, { ttlFloorMs: ttlMs, ttlCeilingMs: ttlMs })
    // Every service once (each becomes a cached answer, a target and a pool), 20 at a time.
    for (let i = 0; i < total; i += 20) {
      const rs = await Promise.all(
        Array.from({ length: 20 }, (_, k) => http(p.port, '/', { host: `d${i + k}.service.consul` })),
      )
      t.ok(
        rs.every((r) => r.status === 200),
        `services ${i}..${i + 19} answered`,
      )
    }
    await sleep(ttlMs + 100)
    // Then only 3 of them, for 3 s.
    const hot = ['d1', 'd2', 'd3']
    const before = await dnsQueries(p.adminPort!)
    const windowMs = 3000
    let served = 0
    for (const end = Date.now() + windowMs; Date.now() < end; ) {
      for (const name of hot) if ((await http(p.port, '/', { host: `${name}.service.consul` })).status === 200) served++
      await sleep(10)
    }
    const asked = (await dnsQueries(p.adminPort!)) - before
    t.ok(served > 30, `${served} requests served in the window`)
    // Refreshed ahead at 80 % of the TTL: at most 3 × (3000 / 240 + 1) ≈ 40 lookups, one SRV query each; 300 names
    // refreshed regardless of demand would be about 3 750.
    const most = hot.length * (windowMs / (ttlMs * 0.8) + 3)
    t.ok(asked <= most, `${asked} DNS queries in ${windowMs} ms for ${hot.length} services in demand (at most ${most})`)
    t.ok(asked >= hot.length * 3, `the services in demand were refreshed (${asked} queries)`)
    // A service nobody asked for since: its instances changed meanwhile; its next request revalidates and sees them.
    await consul.register({ ID: 'd200-b', Name: 'd200', Address: b.host, Port: b.port })
    await consul.deregister('d200')
    const r = await http(p.port, '/', { host: 'd200.service.consul' })
    t.equal(r.status, 200)
    t.equal(r.body, 'demand-b', 'the first request after expiry is served from a fresh answer')
  },
)
