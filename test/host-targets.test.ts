import t from 'tap'
import { HostTargets } from '../src/proxy/host-targets.js'
import type { ServiceTarget } from '../src/proxy/target.js'

/** A stand-in for a ServiceTarget: what HostTargets reads (instances, last access, instance load) and close(). */
function fake(instances: number, inflight = 0): ServiceTarget & { wasClosed: boolean } {
  const f = {
    wasClosed: false,
    entry: { instances: Array.from({ length: instances }), lastAccess: Date.now() },
    pool: { members: () => [{ upstream: { inflight } }] },
    close() {
      f.wasClosed = true
    },
  }
  return f as unknown as ServiceTarget & { wasClosed: boolean }
}

t.test('known services are never evicted by names clients invent, however many of either there are', async (t) => {
  const h = new HostTargets({ probationMax: 4, idleMs: 60_000 })
  t.teardown(() => h.close())
  const known = Array.from({ length: 1000 }, () => fake(1))
  known.forEach((k, i) => {
    h.add(`svc${i}`, k)
    t.equal(h.get(`svc${i}`), k, 'promoted on its next request')
  })
  const invented = Array.from({ length: 50 }, () => fake(0))
  for (const [i, k] of invented.entries()) h.add(`junk${i}`, k)
  t.equal(h.size, 1000 + 4, 'names without instances: at most probationMax')
  t.ok(
    invented.slice(0, 46).every((k) => k.wasClosed),
    'the oldest invented names were closed',
  )
  t.ok(
    known.every((k) => !k.wasClosed),
    'no known target closed',
  )
  t.ok(
    known.every((k, i) => h.get(`svc${i}`) === k),
    'every known target still served',
  )
})

t.test('an idle known target is closed by the sweep, unless its instances carry a request', async (t) => {
  const h = new HostTargets({ probationMax: 4, idleMs: 1000 })
  t.teardown(() => h.close())
  const idle = fake(1)
  const busy = fake(1, 1)
  const used = fake(1)
  for (const [k, f] of [
    ['idle', idle],
    ['busy', busy],
    ['used', used],
  ] as const) {
    h.add(k, f)
    h.get(k)
  }
  const now = Date.now() + 5000
  ;(used.entry as { lastAccess: number }).lastAccess = now
  h.sweep(now)
  t.ok(idle.wasClosed, 'idle: closed')
  t.notOk(busy.wasClosed, 'a request in flight keeps it')
  t.notOk(used.wasClosed, 'recently used: kept')
  t.equal(h.get('idle'), undefined)
})
