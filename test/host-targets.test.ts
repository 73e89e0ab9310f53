import t, { type Test } from 'tap'
import { HostTargets } from '../src/proxy/host-targets.js'
import type { ServiceTarget } from '../src/proxy/target.js'

type Fake = ServiceTarget & { wasClosed: boolean; resolve(instances: number): void; watchers(): number }

/** `targets[i]`, added as `svc<i>`, are none of them closed and each still served under its name. */
function assertKept(t: Test, h: HostTargets, targets: Fake[], what: string): void {
  t.ok(
    targets.every((f) => !f.wasClosed),
    `${what}: not closed`,
  )
  t.ok(
    targets.every((f, i) => h.get(`svc${i}`) === f),
    `${what}: still served under its name`,
  )
}

/**
 * A stand-in for a ServiceTarget: what HostTargets reads (instances, last access, instance load, the entry's change
 * subscription) and close(); resolve() is a DNS answer arriving.
 */
function fake(instances: number, inflight = 0): Fake {
  let listeners: ((e: unknown) => void)[] = []
  const entry = {
    instances: Array.from({ length: instances }),
    lastAccess: Date.now(),
    onChange(fn: (e: unknown) => void) {
      listeners.push(fn)
      return () => {
        listeners = listeners.filter((l) => l !== fn)
      }
    },
  }
  const f = {
    wasClosed: false,
    entry,
    pool: { members: () => [{ upstream: { inflight } }] },
    close() {
      f.wasClosed = true
    },
    resolve(n: number) {
      entry.instances = Array.from({ length: n })
      for (const l of listeners) l(entry)
    },
    watchers: () => listeners.length,
  }
  return f as unknown as Fake
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
  assertKept(t, h, known, 'every known target')
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

t.test('a name is promoted when its answer arrives, however many new names come in between', async (t) => {
  const h = new HostTargets({ probationMax: 4, idleMs: 60_000 })
  t.teardown(() => h.close())
  // 1 000 services asked for at once, each waiting for its first DNS answer: far more than probation holds. Each
  // answer arrives while newer names have come in (what a client spreading requests over 5 000 services does).
  const targets = Array.from({ length: 1000 }, () => fake(0))
  for (const [i, f] of targets.entries()) {
    h.add(`svc${i}`, f)
    if (i >= 3) targets[i - 3].resolve(1)
  }
  for (const f of targets.slice(-3)) f.resolve(1)
  assertKept(t, h, targets, 'every target that resolved (its pool and answer)')
  t.ok(
    targets.every((f) => f.watchers() === 0),
    'promotion ends the watch',
  )

  // An invented name pushed out of probation before any answer: closed, and no longer watched.
  const junk = Array.from({ length: 10 }, () => fake(0))
  for (const [i, f] of junk.entries()) h.add(`junk${i}`, f)
  t.ok(junk[0].wasClosed, 'evicted from probation: closed')
  t.equal(junk[0].watchers(), 0, 'evicted: its watch ended')
  junk[0].resolve(1)
  t.equal(h.get('junk0'), undefined, 'a late answer for an evicted name promotes nothing')
  t.equal(h.size, 1000 + 4)
})
