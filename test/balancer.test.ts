import t, { type Test } from 'tap'
import { Pool } from 'undici'
import { leastConnections, powerOfTwo, roundRobin } from '../src/balancer/policies.js'
import { ServicePool } from '../src/balancer/pool.js'
import { type Upstream, UpstreamRegistry } from '../src/balancer/upstream.js'
import { type Instance, instanceKey } from '../src/resolver/instances.js'

function inst(n: number, weight = 1, priority = 1): Instance {
  return { key: instanceKey(`127.0.0.${n}`, 8000), address: `127.0.0.${n}`, port: 8000, weight, priority }
}

function registry(
  t: Test,
  health = { maxFails: 3, failWindowMs: 10_000, ejectForMs: 1000, maxConnectionsPerInstance: 100 },
): UpstreamRegistry {
  const r = new UpstreamRegistry((origin) => new Pool(origin), health)
  t.teardown(() => r.close())
  return r
}

function picks(pool: ServicePool, n: number, now = Date.now()): Record<string, number> {
  const out: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    const u = pool.pick(now, null)!
    out[u.address] = (out[u.address] ?? 0) + 1
  }
  return out
}

t.test('round-robin spreads evenly and in rotation', async (t) => {
  const pool = new ServicePool(registry(t), roundRobin)
  pool.update([inst(1), inst(2), inst(3)], Date.now())
  const seq = Array.from({ length: 6 }, () => pool.pick(Date.now(), null)!.address)
  t.same(new Set(seq.slice(0, 3)).size, 3, 'each instance once per round')
  t.same(seq.slice(0, 3), seq.slice(3, 6), 'same order every round')
  t.same(picks(pool, 300), { '127.0.0.1': 100, '127.0.0.2': 100, '127.0.0.3': 100 })
})

t.test('SRV weights are honoured (smooth weighted round-robin)', async (t) => {
  const pool = new ServicePool(registry(t), roundRobin)
  pool.update([inst(1, 5), inst(2, 1)], Date.now())
  t.same(picks(pool, 600), { '127.0.0.1': 500, '127.0.0.2': 100 })
})

t.test('an instance that appears does not reset the rotation of the others', async (t) => {
  const pool = new ServicePool(registry(t), roundRobin)
  pool.update([inst(1), inst(2)], Date.now())
  const before = pool.pick(Date.now(), null)!.address
  pool.update([inst(1), inst(2), inst(3)], Date.now())
  const next3 = [0, 1, 2].map(() => pool.pick(Date.now(), null)!.address)
  t.notOk(next3[0] === before && next3[1] === before, 'rotation goes on instead of restarting at the first instance')
  t.equal(new Set(next3).size, 3, 'the new instance is in the next round')
})

t.test(
  'SRV priority tiers: the lower value is used; the next tier only when the first has nothing eligible',
  async (t) => {
    const reg = registry(t, { maxFails: 1, failWindowMs: 10_000, ejectForMs: 60_000, maxConnectionsPerInstance: 100 })
    const pool = new ServicePool(reg, roundRobin)
    pool.update([inst(1, 1, 1), inst(2, 1, 1), inst(3, 1, 2)], Date.now())
    t.same(picks(pool, 10), { '127.0.0.1': 5, '127.0.0.2': 5 })
    const now = Date.now()
    for (const m of pool.members()) if (m.priority === 1) m.upstream.recordFailure('ECONNREFUSED', now)
    t.same(picks(pool, 4, now), { '127.0.0.3': 4 }, 'failover tier takes over while tier 1 is ejected')
  },
)

t.test('passive health: maxFails within the window ejects; the instance returns after ejectForMs', async (t) => {
  const reg = registry(t, { maxFails: 3, failWindowMs: 10_000, ejectForMs: 1000, maxConnectionsPerInstance: 100 })
  const pool = new ServicePool(reg, roundRobin)
  pool.update([inst(1), inst(2)], Date.now())
  const bad = pool.members().find((m) => m.upstream.address === '127.0.0.1')!.upstream
  const now = Date.now()
  t.notOk(bad.recordFailure('ECONNREFUSED', now))
  t.notOk(bad.recordFailure('ECONNREFUSED', now))
  t.ok(bad.recordFailure('ECONNREFUSED', now), 'third failure ejects')
  t.match(bad.ejectReason, /3 failures \(ECONNREFUSED\)/)
  t.same(picks(pool, 4, now + 10), { '127.0.0.2': 4 })
  t.same(picks(pool, 4, now + 1001), { '127.0.0.1': 2, '127.0.0.2': 2 }, 'back after the cool-down')
})

t.test('failures outside the window do not add up; a success clears the streak', async (t) => {
  const reg = registry(t, { maxFails: 2, failWindowMs: 100, ejectForMs: 1000, maxConnectionsPerInstance: 100 })
  const pool = new ServicePool(reg, roundRobin)
  pool.update([inst(1)], Date.now())
  const u = pool.members()[0]!.upstream
  const now = Date.now()
  t.notOk(u.recordFailure('ECONNRESET', now))
  t.notOk(u.recordFailure('ECONNRESET', now + 500), 'new window')
  u.recordSuccess(1, now + 501)
  t.notOk(u.recordFailure('ECONNRESET', now + 501), 'streak was cleared by the success')
})

t.test(
  'failure memory is keyed by address:port and survives a DNS refresh that drops and re-adds the instance',
  async (t) => {
    const reg = registry(t, { maxFails: 1, failWindowMs: 10_000, ejectForMs: 60_000, maxConnectionsPerInstance: 100 })
    const pool = new ServicePool(reg, roundRobin)
    pool.update([inst(1), inst(2)], Date.now())
    const u1 = pool.members().find((m) => m.upstream.address === '127.0.0.1')!.upstream
    u1.recordFailure('ECONNREFUSED', Date.now())
    pool.update([inst(2)], Date.now())
    pool.update([inst(1), inst(2)], Date.now())
    const again = pool.members().find((m) => m.upstream.address === '127.0.0.1')!.upstream
    t.equal(again, u1, 'same upstream object')
    t.ok(again.isEjected(Date.now()), 'still ejected')
  },
)

t.test('every instance ejected: panic mode still tries one rather than answering 503', async (t) => {
  const reg = registry(t, { maxFails: 1, failWindowMs: 10_000, ejectForMs: 60_000, maxConnectionsPerInstance: 100 })
  const pool = new ServicePool(reg, roundRobin)
  pool.update([inst(1), inst(2)], Date.now())
  for (const m of pool.members()) m.upstream.recordFailure('ECONNREFUSED', Date.now())
  t.ok(pool.pick(Date.now(), null))
  t.equal(pool.panics, 1)
})

t.test('retries skip instances already tried; full instances are skipped', async (t) => {
  const pool = new ServicePool(registry(t), roundRobin)
  pool.update([inst(1), inst(2), inst(3)], Date.now())
  const tried: Upstream[] = [pool.pick(Date.now(), null)!, pool.pick(Date.now(), null)!]
  for (let i = 0; i < 5; i++) t.notOk(tried.includes(pool.pick(Date.now(), tried)!))
  const all = pool.members().map((m) => m.upstream)
  t.equal(pool.pick(Date.now(), all), null, 'nothing left to try')
  for (let i = 0; i < 100; i++) all[0]!.begin(Date.now())
  t.notOk(all[0]!.isAvailable(Date.now()), 'at its cap an instance is not available')
  for (let i = 0; i < 5; i++) t.not(pool.pick(Date.now(), null), all[0], 'a full instance is not picked')
  for (let i = 0; i < 100; i++) all[0]!.end()
  t.equal(all[0]!.inflight, 0, 'every slot back')
  t.ok(all[0]!.isAvailable(Date.now()))
})

t.test('least-connections and power-of-two prefer the less loaded instance', async (t) => {
  for (const [name, sel] of [
    ['least-connections', leastConnections()],
    ['p2c', powerOfTwo],
  ] as const) {
    const pool = new ServicePool(registry(t), sel)
    pool.update([inst(1), inst(2)], Date.now())
    const [a, b] = pool.members().map((m) => m.upstream)
    for (let i = 0; i < 10; i++) a!.begin(Date.now())
    const got = picks(pool, 50)
    t.ok((got[b!.address] ?? 0) > 40, `${name}: the idle instance gets most picks (${JSON.stringify(got)})`)
    for (let i = 0; i < 10; i++) a!.end()
    const even = picks(pool, 1000)
    t.ok(Math.abs((even['127.0.0.1'] ?? 0) - 500) < 150, `${name}: equal load spreads (${JSON.stringify(even)})`)
  }
})

t.test('an upstream makes its undici pool on first use only, and the registry closes only pools it made', async (t) => {
  const made: string[] = []
  const closed: string[] = []
  const r = new UpstreamRegistry(
    (origin) => {
      made.push(origin)
      return { close: async () => void closed.push(origin), destroy: async () => void closed.push(origin) } as never
    },
    { maxFails: 3, failWindowMs: 10_000, ejectForMs: 1000, maxConnectionsPerInstance: 100 },
  )
  const pool = new ServicePool(r, roundRobin)
  pool.update([inst(1), inst(2)], Date.now())
  t.equal(pool.pick(Date.now(), null)?.address, '127.0.0.1')
  t.same(made, [], 'listing and picking instances makes no pool (the pass-through plane never needs one)')
  const u = r.get(instanceKey('127.0.0.2', 8000))!
  t.equal(u.pool, u.pool, 'one pool per upstream')
  t.same(made, ['http://127.0.0.2:8000'], 'made when the classic plane first asks for it')
  await r.close()
  t.same(closed, ['http://127.0.0.2:8000'], 'shutting down destroys the one pool made, and nothing for the other')
})
