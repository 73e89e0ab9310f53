import { Writable } from 'node:stream'
import t from 'tap'
import { createLogger } from '../src/log.js'
import { sleep, startConsul } from './helpers/consul.js'
import { startDocker, waitFor } from './helpers/docker.js'
import { agentServicesOf, startRegistrator } from './helpers/registrator.js'

/**
 * The failures gliderlabs/registrator is known for, against a real dockerd and a real Consul agent: crashes, engine
 * restarts, Consul losing its state, containers going away mid-request.
 */

// --live-restore: containers keep running while the engine restarts, so only a resync on reconnect can notice what
// changed meanwhile.
const docker = await startDocker(t, undefined, { liveRestore: true })
const consul = await startConsul(t)

interface HealthEntry {
  Service: { ID: string }
  Checks: { CheckID: string; Status: string; Notes?: string }[]
}
const health = async (service: string) => (await consul.api('GET', `/v1/health/service/${service}`)) as HealthEntry[]

t.test('a container killed with SIGKILL is deregistered', async (t) => {
  const hostId = 'sigkill'
  docker.removeOnTeardown(t, 'victim')
  await docker.run({ name: 'victim', publish: ['80'], env: { SERVICE_NAME: 'victim' } })
  await startRegistrator(t, docker, consul, { hostId, resync: 0 })
  await waitFor('victim registered', async () => (await agentServicesOf(consul, `${hostId}:`))[`${hostId}:victim:80`])
  await docker.docker(['kill', '-s', 'KILL', 'victim'])
  const t0 = Date.now()
  await waitFor(
    'victim deregistered',
    async () => Object.keys(await agentServicesOf(consul, `${hostId}:`)).length === 0,
    5000,
  )
  t.ok(Date.now() - t0 < 3000, `gone within ${Date.now() - t0} ms, by the die event (resync is off)`)
  await docker.docker(['rm', '-f', 'victim'])
})

t.test(
  '--deregister=on-success: a crash (exit 3) stays in maintenance until removed; docker stop and docker kill deregister, as gliderlabs',
  async (t) => {
    const hostId = 'onsuccess'
    docker.removeOnTeardown(t, 'crasher', 'stopped', 'killed')
    // USR1 makes the shell exit 3: a crash with a code of its own (not 128+signal).
    const crashCmd = ['sh', '-c', 'trap "exit 3" USR1; httpd -p 80 -h /www; while true; do sleep 1; done']
    await docker.run({ name: 'crasher', publish: ['80'], env: { SERVICE_NAME: 'crasher' }, cmd: crashCmd })
    await docker.run({ name: 'stopped', publish: ['80'], env: { SERVICE_NAME: 'stopped' } })
    await docker.run({ name: 'killed', publish: ['80'], env: { SERVICE_NAME: 'killed' } })
    const registrator = await startRegistrator(t, docker, consul, { hostId, deregister: 'on-success' })
    for (const n of ['crasher', 'stopped', 'killed'])
      await waitFor(`${n} registered`, async () => (await health(n)).length === 1)
    await docker.docker(['kill', '-s', 'USR1', 'crasher'])
    await waitFor(
      'crasher in maintenance',
      async () =>
        (await health('crasher'))[0]?.Checks.some(
          (c) => c.CheckID === `_service_maintenance:${hostId}:crasher:80` && c.Status === 'critical',
        ),
      10_000,
    )
    t.equal((await docker.inspect('crasher')).State.ExitCode, 3)
    await docker.docker(['stop', '-t', '1', 'stopped'])
    await docker.docker(['kill', '-s', 'KILL', 'killed'])
    await waitFor(
      'stopped deregistered (exit 137 after the grace period or 143)',
      async () => (await health('stopped')).length === 0,
      10_000,
    )
    await waitFor('killed deregistered (exit 137)', async () => (await health('killed')).length === 0, 10_000)
    const s = await registrator.syncNow()
    t.ok(s.ok)
    t.equal((await health('crasher')).length, 1, 'a resync keeps the crashed one (exit code 3)')
    t.equal((await health('stopped')).length + (await health('killed')).length, 0, 'and does not bring the others back')
    await docker.docker(['rm', 'crasher'])
    await waitFor('crasher deregistered on destroy', async () => (await health('crasher')).length === 0, 5000)
    await docker.docker(['rm', '-f', 'stopped', 'killed'])
  },
)

t.test(
  '--deregister=never keeps a stopped container in maintenance until it is removed, and lifts it on start',
  async (t) => {
    const hostId = 'never'
    docker.removeOnTeardown(t, 'keeper')
    await docker.run({ name: 'keeper', publish: ['80'], env: { SERVICE_NAME: 'keeper' } })
    const registrator = await startRegistrator(t, docker, consul, { hostId, deregister: 'never' })
    await waitFor('keeper registered', async () => (await health('keeper')).length === 1)
    await docker.docker(['stop', '-t', '1', 'keeper'])
    const inMaintenance = async () =>
      (await health('keeper'))[0]?.Checks.some(
        (c) => c.CheckID.startsWith('_service_maintenance:') && c.Status === 'critical',
      )
    await waitFor('keeper in maintenance', inMaintenance, 10_000)
    t.ok((await registrator.syncNow()).ok)
    t.equal((await health('keeper')).length, 1, 'a resync keeps it')
    await docker.docker(['start', 'keeper'])
    await waitFor(
      'maintenance lifted on start',
      async () => (await health('keeper'))[0] && !(await inMaintenance()),
      10_000,
    )
    await docker.docker(['rm', '-f', 'keeper'])
    await waitFor('keeper deregistered on destroy', async () => (await health('keeper')).length === 0, 10_000)
  },
)

// The shell traps the stop signal and takes ~2 s to exit, like a server finishing its in-flight requests. Docker's
// `kill` event reports the signal by number: TERM (15) by default, the image's STOPSIGNAL otherwise (httpd: WINCH, 28).
for (const { name, stopSignal } of [
  { name: 'slowstop', stopSignal: null },
  { name: 'winch', stopSignal: 'WINCH' },
]) {
  t.test(
    `docker stop drains first: the instance is in maintenance while the container still runs (stop signal ${stopSignal ?? 'TERM'})`,
    async (t) => {
      const hostId = `drain-${name}`
      docker.removeOnTeardown(t, name)
      await docker.run({
        name,
        publish: ['80'],
        env: { SERVICE_NAME: name },
        extra: stopSignal ? ['--stop-signal', `SIG${stopSignal}`] : [],
        cmd: [
          'sh',
          '-c',
          `trap "sleep 2; exit 0" ${stopSignal ?? 'TERM'}; httpd -p 80 -h /www; while true; do sleep 0.2; done`,
        ],
      })
      await startRegistrator(t, docker, consul, { hostId })
      await waitFor(`${name} registered`, async () => (await health(name)).length === 1)
      const stopping = docker.docker(['stop', '-t', '10', name])
      await waitFor(
        'maintenance on',
        async () => (await health(name))[0]?.Checks.some((c) => c.CheckID.startsWith('_service_maintenance:')),
        5000,
        20,
      )
      t.equal((await docker.inspect(name)).State.Running, true, 'maintenance was set before the container exited')
      await stopping
      await waitFor(`${name} deregistered`, async () => (await health(name)).length === 0, 5000)
      await docker.docker(['rm', '-f', name])
    },
  )
}

t.test(
  "pause puts the instance into maintenance, unpause takes it out; an operator's maintenance is left alone",
  async (t) => {
    const hostId = 'pause'
    docker.removeOnTeardown(t, 'napper', 'manual')
    await docker.run({ name: 'napper', publish: ['80'], env: { SERVICE_NAME: 'napper' } })
    await docker.run({ name: 'manual', publish: ['80'], env: { SERVICE_NAME: 'manual' } })
    const registrator = await startRegistrator(t, docker, consul, { hostId })
    await waitFor('both registered', async () => Object.keys(await agentServicesOf(consul, `${hostId}:`)).length === 2)
    const inMaintenance = async (service: string) =>
      (await health(service))[0]?.Checks.some((c) => c.CheckID.startsWith('_service_maintenance:')) ?? false
    await consul.maintenance(`${hostId}:manual:80`, true)
    await docker.docker(['pause', 'napper'])
    await waitFor('napper in maintenance', () => inMaintenance('napper'), 5000)
    await docker.docker(['unpause', 'napper'])
    await waitFor('napper out of maintenance', async () => !(await inMaintenance('napper')), 5000)
    t.ok((await registrator.syncNow()).ok)
    t.ok(await inMaintenance('manual'), 'maintenance set by someone else survives a resync')
    t.notOk(await inMaintenance('napper'))
  },
)

t.test('a Docker HEALTHCHECK drives a TTL check through health_status events', async (t) => {
  const hostId = 'health'
  docker.removeOnTeardown(t, 'checked')
  await docker.run({
    name: 'checked',
    publish: ['80'],
    env: { SERVICE_NAME: 'checked' },
    healthCmd: 'test -f /www/healthy',
  })
  await startRegistrator(t, docker, consul, { hostId, resync: 0 })
  const ttlStatus = async () =>
    (await health('checked'))[0]?.Checks.find((c) => c.CheckID === `service:${hostId}:checked:80:docker-health`)?.Status
  t.equal(await waitFor('TTL check registered', ttlStatus), 'critical', 'not healthy yet: critical')
  await docker.docker(['exec', 'checked', '/bin/busybox', 'touch', '/www/healthy'])
  await waitFor('TTL check passing', async () => (await ttlStatus()) === 'passing', 10_000)
  await docker.docker(['exec', 'checked', '/bin/busybox', 'rm', '/www/healthy'])
  await waitFor('TTL check critical again', async () => (await ttlStatus()) === 'critical', 10_000)
  t.pass('followed healthy and unhealthy')
  await docker.docker(['rm', '-f', 'checked'])
})

t.test('dockerd restarted: the event stream reconnects and the registrations resync', async (t) => {
  const hostId = 'dockerd'
  docker.removeOnTeardown(t, 'survivor')
  await docker.run({ name: 'survivor', publish: ['80'], env: { SERVICE_NAME: 'survivor' } })
  // Resync off: only the resync on reconnect can repair what happens while the engine is down.
  const registrator = await startRegistrator(t, docker, consul, { hostId, resync: 0 })
  await waitFor(
    'survivor registered',
    async () => (await agentServicesOf(consul, `${hostId}:`))[`${hostId}:survivor:80`],
  )
  await docker.stop()
  await waitFor(
    'stream down',
    async () => (registrator.status() as { docker: { eventStream: string } }).docker.eventStream !== 'connected',
    5000,
  )
  // While the engine is down the service is lost from Consul (an operator, an agent that lost its state).
  await consul.deregister(`${hostId}:survivor:80`)
  await docker.start()
  const svc = await waitFor(
    'survivor re-registered after the reconnect',
    async () => (await agentServicesOf(consul, `${hostId}:`))[`${hostId}:survivor:80`],
    15_000,
  )
  t.equal(svc.Port, await docker.hostPort('survivor'))
  const st = registrator.status() as { docker: { eventStream: string; connects: number }; lastSync: { reason: string } }
  t.equal(st.docker.eventStream, 'connected')
  t.ok(st.docker.connects >= 2, 'reconnected')
  // And events flow again on the new stream.
  await docker.docker(['rm', '-f', 'survivor'])
  await waitFor(
    'survivor gone after rm',
    async () => Object.keys(await agentServicesOf(consul, `${hostId}:`)).length === 0,
    5000,
  )
})

t.test('Consul restarted with empty state: everything is back within one resync period', async (t) => {
  const hostId = 'amnesia'
  docker.removeOnTeardown(t, 'keep-1', 'keep-2')
  await docker.run({
    name: 'keep-1',
    publish: ['80'],
    env: { SERVICE_NAME: 'keep', SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_INTERVAL: '1s' },
  })
  await docker.run({
    name: 'keep-2',
    publish: ['80'],
    env: { SERVICE_NAME: 'keep', SERVICE_CHECK_TCP: 'true', SERVICE_CHECK_INTERVAL: '1s' },
  })
  const resyncS = 2
  await startRegistrator(t, docker, consul, { hostId, resync: resyncS })
  await consul.waitPassing('keep', 2)
  await consul.stop()
  await consul.start()
  const t0 = Date.now()
  t.equal(Object.keys(await agentServicesOf(consul, `${hostId}:`)).length, 0, 'the restarted agent is empty')
  await waitFor(
    'both back',
    async () => Object.keys(await agentServicesOf(consul, `${hostId}:`)).length === 2,
    resyncS * 1000 + 5000,
  )
  const took = Date.now() - t0
  t.ok(took <= resyncS * 1000 + 1500, `re-registered in ${took} ms (resync ${resyncS} s)`)
  await consul.waitPassing('keep', 2)
  await docker.docker(['rm', '-f', 'keep-1', 'keep-2'])
})

t.test('no re-register churn: resyncs of an unchanged host write nothing', async (t) => {
  const hostId = 'churn'
  docker.removeOnTeardown(t, 'steady')
  await docker.run({ name: 'steady', publish: ['80'], env: { SERVICE_NAME: 'steady' } })
  const registrator = await startRegistrator(t, docker, consul, { hostId })
  t.ok((await registrator.syncNow()).ok)
  const index1 = (await fetch(`${consul.httpAddr}/v1/catalog/service/steady`)).headers.get('x-consul-index')
  const second = await registrator.syncNow()
  await sleep(300)
  const index2 = (await fetch(`${consul.httpAddr}/v1/catalog/service/steady`)).headers.get('x-consul-index')
  t.equal(second.registered, 0)
  t.equal(second.unchanged, 1)
  t.equal(index2, index1, 'the catalog index of the service did not move')
  await docker.docker(['rm', '-f', 'steady'])
})

t.test('invalid values are logged with the container name and field; the container is still registered', async (t) => {
  const hostId = 'invalid'
  docker.removeOnTeardown(t, 'sloppy', 'tidy')
  const lines: Record<string, unknown>[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l))
      cb()
    },
  })
  await docker.run({
    name: 'sloppy',
    publish: ['80'],
    env: {
      SERVICE_NAME: 'sloppy',
      SERVICE_99999_NAME: 'nope',
      SERVICE_CHECK_HTTP: '/',
      SERVICE_CHECK_INTERVAL: 'often',
      SERVICE_TAGS: 'a,,b c,d',
    },
  })
  await docker.run({ name: 'tidy', publish: ['80'], env: { SERVICE_NAME: 'tidy' } })
  const registrator = await startRegistrator(t, docker, consul, { hostId }, createLogger('warn', sink))
  const svcs = await waitFor('both registered', async () => {
    const s = await agentServicesOf(consul, `${hostId}:`)
    return Object.keys(s).length === 2 ? s : null
  })
  t.same(svcs[`${hostId}:sloppy:80`]?.Tags, ['a', 'd'], 'the good tags are kept')
  const warned = lines.filter((l) => l.code === 'CLB_REG_BAD_CONVENTION' && l.container === 'sloppy')
  t.same([...new Set(warned.map((l) => l.field))].sort(), [
    'SERVICE_99999_NAME',
    'SERVICE_CHECK_INTERVAL',
    'SERVICE_TAGS',
  ])
  const checks = (await consul.api('GET', '/v1/agent/checks')) as Record<
    string,
    { ServiceID: string; Interval?: string }
  >
  t.ok(
    Object.values(checks).some((c) => c.ServiceID === `${hostId}:sloppy:80`),
    'the HTTP check is registered with the default interval',
  )
  const st = registrator.status() as { containers: { name: string; warnings: { field: string }[] }[] }
  t.equal(
    st.containers.find((c) => c.name === 'sloppy')?.warnings.length,
    3,
    '/status lists the warnings (the empty tag is skipped silently, as gliderlabs does)',
  )
  await docker.docker(['rm', '-f', 'sloppy', 'tidy'])
})
