import { Registry } from 'prom-client'
import t from 'tap'
import { Backoff } from '../src/backoff.js'
import { ConsulClient } from '../src/consul/client.js'
import { silentLogger } from '../src/log.js'
import { META_CONTAINER, META_OWNER } from '../src/registrator/desired.js'
import { Drainer, isStopSignal, MAINT_PREFIX, signalNumber } from '../src/registrator/drainer.js'
import { RecentErrors } from '../src/registrator/errors.js'
import { HealthMirror } from '../src/registrator/health.js'
import { RegistratorMetrics } from '../src/registrator/metrics.js'
import { RetryTimer, WorkQueue } from '../src/registrator/queue.js'
import { ConsulWriter } from '../src/registrator/writer.js'
import { plainConnection, sleep, startConsul } from './helpers/consul.js'

/** The registrator's parts alone: the queue and retry timer in memory; the writer, drainer and health mirror against a
 * real Consul agent with hand-written registrations (no Docker needed). */

t.test('the work queue runs one operation at a time, in order, and goes on after a failure', async (t) => {
  const q = new WorkQueue()
  const log: string[] = []
  let running = 0
  const op = (name: string, fail = false) =>
    q.enqueue(async () => {
      running++
      t.equal(running, 1, `${name} runs alone`)
      await sleep(5)
      log.push(name)
      running--
      if (fail) throw new Error(name)
      return name
    })
  const a = op('a')
  const b = op('b', true)
  const c = op('c')
  t.equal(q.waiting, 3)
  t.equal(await a, 'a')
  await t.rejects(b, { message: 'b' })
  t.equal(await c, 'c')
  t.same(log, ['a', 'b', 'c'])
  t.equal(q.waiting, 0)
})

t.test('a keyed operation is queued once while it waits, and again once it runs', async (t) => {
  const q = new WorkQueue()
  let runs = 0
  let release!: () => void
  const gate = new Promise<void>((r) => {
    release = r
  })
  const blocker = q.enqueue(() => gate)
  const first = q.enqueueOnce('sync', async () => ++runs)
  t.ok(first)
  t.equal(
    q.enqueueOnce('sync', async () => ++runs),
    null,
    'coalesced with the waiting one',
  )
  t.equal(q.waiting, 2)
  release()
  await blocker
  t.equal(await first, 1)
  const again = q.enqueueOnce('sync', async () => ++runs)
  t.equal(await again, 2, 'queued again once the first ran')
})

t.test('close lets the running operation finish and fails the waiting ones with CLB_REG_CLOSED', async (t) => {
  const q = new WorkQueue()
  let finished = false
  const running = q.enqueue(async () => {
    await sleep(20)
    finished = true
  })
  const waiting = q.enqueue(async () => 'never')
  await sleep(1)
  await q.close()
  t.ok(finished)
  await running
  await t.rejects(waiting, { code: 'CLB_REG_CLOSED' })
})

t.test('the retry timer keeps one retry pending and stops on close', async (t) => {
  const retry = new RetryTimer(new Backoff(10, 10))
  let fired = 0
  retry.schedule(() => fired++)
  retry.schedule(() => fired++)
  await sleep(40)
  t.equal(fired, 1, 'a second schedule while one is pending adds nothing')
  retry.schedule(() => fired++)
  retry.close()
  await sleep(40)
  t.equal(fired, 1, 'closed: the pending retry never fires')
  retry.schedule(() => fired++)
  await sleep(40)
  t.equal(fired, 1, 'closed: nothing is scheduled any more')
})

t.test('stop signals: terminating ones and the image STOPSIGNAL drain, reload signals do not', async (t) => {
  t.equal(signalNumber('SIGWINCH'), 28)
  t.equal(signalNumber('winch'), 28)
  t.equal(signalNumber('15'), 15)
  t.equal(signalNumber('SIGRTMIN+3'), null)
  t.ok(isStopSignal('15', null))
  t.ok(isStopSignal('SIGKILL', null))
  t.notOk(isStopSignal('1', null), 'SIGHUP reloads')
  t.notOk(isStopSignal('10', null), 'SIGUSR1 reloads')
  t.ok(isStopSignal('28', 28), "the image's STOPSIGNAL")
  t.notOk(isStopSignal('28', null))
})

t.test('writer, drainer and health mirror against a real agent', async (t) => {
  const consul = await startConsul(t)
  const client = new ConsulClient({ connection: plainConnection(consul.httpAddr) })
  t.teardown(() => client.close())
  const registry = new Registry()
  const metrics = new RegistratorMetrics(registry)
  const errors = new RecentErrors()
  const writer = new ConsulWriter(silentLogger(), metrics, errors)
  const hostId = 'parts'
  const reg = (id: string, container: string, owner: string | null) =>
    consul.register({
      ID: id,
      Name: 'parts',
      Port: 80,
      Meta: { ...(owner ? { [META_OWNER]: owner } : {}), [META_CONTAINER]: container },
      Checks: [{ CheckID: `service:${id}:docker-health`, Name: 'mirror', TTL: '60s', Status: 'critical' }],
    })
  await reg('parts:a:80', 'ca', hostId)
  await reg('parts:b:80', 'cb', hostId)
  await reg('hand-made', 'ca', null)
  const checks = async () =>
    (await consul.api('GET', '/v1/agent/checks')) as Record<
      string,
      { CheckID: string; ServiceID: string; Status: string; Notes: string; Output: string }
    >
  const maintenanceOf = async (id: string) => (await checks())[`_service_maintenance:${id}`]

  t.test('the writer counts a refused write and records its code instead of throwing', async (t) => {
    const ok = await writer.run('ttl', () => client.updateTtlCheck('no-such-check', 'passing', 'x'), { id: 'x' })
    t.equal(ok, false)
    t.match(errors.list().at(-1), { code: /^CLB_CONSUL_/ })
    const text = await registry.metrics()
    t.match(text, /consul_lb_registrator_operations_total\{op="ttl",result="CLB_CONSUL_[A-Z_]+"\} 1/)
  })

  t.test('the drainer drains only our registrations of the stopping container, with our reason', async (t) => {
    const drainer = new Drainer(client, writer, { hostId, deregister: 'always' })
    await drainer.onKill('ca', '1', null)
    t.equal(await maintenanceOf('parts:a:80'), undefined, 'SIGHUP: no drain')
    await drainer.onKill('ca', '15', null)
    t.ok(drainer.isStopping('ca'))
    t.match((await maintenanceOf('parts:a:80'))?.Notes, `${MAINT_PREFIX}container is stopping`)
    t.equal(await maintenanceOf('parts:b:80'), undefined, 'another container is untouched')
    t.equal(await maintenanceOf('hand-made'), undefined, 'a registration without our mark is untouched')
    // Running again: settle lifts the maintenance we set.
    drainer.forget('ca')
    const owned = new Map([
      ['parts:a:80', 'ca'],
      ['parts:b:80', 'cb'],
    ])
    const view = (containerId: string, id: string, paused = false) => ({
      containerId,
      containerName: containerId,
      services: [{ registration: { ID: id, Name: 'parts', Port: 80 }, hash: '' }],
      warnings: [],
      skipped: null,
      health: null,
      paused,
    })
    t.equal(await drainer.settle([view('ca', 'parts:a:80'), view('cb', 'parts:b:80', true)], new Set(), owned), 0)
    t.equal(await maintenanceOf('parts:a:80'), undefined, 'lifted')
    t.match((await maintenanceOf('parts:b:80'))?.Notes, `${MAINT_PREFIX}container paused`)
    // Maintenance an operator set is never lifted.
    await consul.maintenance('parts:a:80', true)
    t.equal(await drainer.settle([view('ca', 'parts:a:80')], new Set(), owned), 0)
    t.ok(await maintenanceOf('parts:a:80'), "the operator's maintenance stays")
  })

  t.test('on-success keeps a failed exit in maintenance; always lets it go', async (t) => {
    const always = new Drainer(client, writer, { hostId, deregister: 'always' })
    t.equal(await always.keepsAfterExit('cb', 1), false)
    await consul.maintenance('parts:b:80', false) // Consul keeps the first reason while maintenance stays on
    const onSuccess = new Drainer(client, writer, { hostId, deregister: 'on-success' })
    t.equal(await onSuccess.keepsAfterExit('cb', 0), false)
    t.equal(await onSuccess.keepsAfterExit('cb', 1), true)
    t.match((await maintenanceOf('parts:b:80'))?.Notes, /exited with code 1/)
  })

  t.test('the health mirror sets the TTL check of our registrations only', async (t) => {
    const mirror = new HealthMirror(client, writer)
    const owned = new Map([['parts:a:80', 'ca']])
    const view = {
      containerId: 'ca',
      containerName: 'ca',
      services: [
        { registration: { ID: 'parts:a:80', Name: 'parts', Port: 80 }, hash: '' },
        { registration: { ID: 'hand-made', Name: 'parts', Port: 80 }, hash: '' },
      ],
      warnings: [],
      skipped: null,
      health: 'passing' as const,
    }
    t.equal(await mirror.push([view], owned), 0)
    const c = await checks()
    t.equal(c['service:parts:a:80:docker-health']?.Status, 'passing')
    t.equal(c['service:parts:a:80:docker-health']?.Output, 'Docker HEALTHCHECK: healthy')
    t.equal(c['service:hand-made:docker-health']?.Status, 'critical', 'not ours: untouched')
  })
})
