import t from 'tap'
import { request } from 'undici'
import { startConsul } from './helpers/consul.js'
import { startDocker, waitFor } from './helpers/docker.js'
import { startTestProxy } from './helpers/proxy.js'
import { agentServicesOf, startRegistrator } from './helpers/registrator.js'

/** Asks the proxy `n` times for /host of my-web-server (each container answers its own hostname); counts answers. */
async function balance(proxyPort: number, n: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    // undici's request, not fetch: fetch does not send a Host header of our choosing.
    const res = await request(`http://127.0.0.1:${proxyPort}/host`, {
      headers: { host: 'my-web-server.service.consul' },
      headersTimeout: 5000,
      bodyTimeout: 5000,
    })
    const text = await res.body.text()
    const key = res.statusCode === 200 ? text : `status ${res.statusCode}`
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return counts
}

/**
 * The classic registrator tutorial, against a real dockerd and a real Consul agent: containers become services with
 * the names, IDs and checks gliderlabs/registrator would have given them.
 */

const docker = await startDocker(t, ['clb-busybox:test', 'nginx:latest', 'library/httpd:2.4'])
const consul = await startConsul(t)

t.test(
  'three web containers with SERVICE_80_NAME appear with passing HTTP checks; scaled to one, the others leave; SERVICE_IGNORE never appears',
  async (t) => {
    const hostId = 'compose'
    docker.removeOnTeardown(t, 'hidden', 'web-1', 'web-2', 'web-3')
    for (const n of [1, 2, 3]) {
      await docker.run({
        name: `web-${n}`,
        publish: ['80'],
        env: {
          SERVICE_80_NAME: 'my-web-server',
          SERVICE_80_CHECK_HTTP: '/index.html',
          SERVICE_80_CHECK_INTERVAL: '1s',
          SERVICE_TAGS: 'web,v1',
        },
      })
    }
    await docker.run({
      name: 'hidden',
      publish: ['80'],
      env: { SERVICE_80_NAME: 'my-web-server', SERVICE_IGNORE: 'true' },
    })
    const registrator = await startRegistrator(t, docker, consul, { hostId })

    await consul.waitPassing('my-web-server', 3, 20_000)
    const passing = (await consul.passing('my-web-server')) as {
      Service: { ID: string; Port: number; Address: string; Tags: string[] }
      Checks: { CheckID: string; Status: string }[]
    }[]
    const ports = await Promise.all([1, 2, 3].map((n) => docker.hostPort(`web-${n}`)))
    t.same(
      passing.map((p) => p.Service.ID).sort(),
      [1, 2, 3].map((n) => `${hostId}:web-${n}:80`),
      'registrator-compatible IDs <host>:<container>:<port>',
    )
    t.same(passing.map((p) => p.Service.Port).sort(), [...ports].sort(), 'the published ports are registered')
    for (const p of passing) {
      t.equal(p.Service.Address, '127.0.0.1', 'the binding address is registered')
      t.same(p.Service.Tags, ['web', 'v1'])
      t.ok(
        p.Checks.some((c) => c.CheckID === `service:${p.Service.ID}` && c.Status === 'passing'),
        'its HTTP check passes',
      )
    }
    // Every instance answers on its published port (traffic only to 127.0.0.1), and the proxy balances over all three.
    const hosts = new Set<string>()
    for (const port of ports)
      hosts.add(await (await fetch(`http://127.0.0.1:${port}/host`, { signal: AbortSignal.timeout(5000) })).text())
    t.equal(hosts.size, 3, 'three distinct backends')
    const proxy = await startTestProxy(t, consul)
    const spread = await balance(proxy.port, 30)
    t.same([...spread.keys()].sort(), [...hosts].sort(), 'the proxy sends requests to all three containers')
    t.ok(
      [...spread.values()].every((n) => n >= 5),
      `evenly enough: ${JSON.stringify([...spread.values()])}`,
    )

    const status = registrator.status() as {
      containersSeen: number
      registrationsOwned: number
      lastSync: { ok: boolean }
      containers: { name: string; skipped: string | null }[]
    }
    t.equal(status.registrationsOwned, 3)
    t.ok(status.lastSync.ok)
    t.equal(
      status.containers.find((c) => c.name === 'hidden')?.skipped,
      'SERVICE_IGNORE',
      '/status says why the ignored container has no service',
    )

    // Scale to one.
    const t0 = Date.now()
    await docker.docker(['rm', '-f', 'web-2', 'web-3'])
    await waitFor('two instances to leave', async () => (await consul.passing('my-web-server')).length === 1, 10_000)
    t.ok(Date.now() - t0 < 5000, `the others left Consul within seconds (${Date.now() - t0} ms)`)
    const web1 = await (await fetch(`http://127.0.0.1:${ports[0]}/host`)).text()
    // The proxy caches answers for ttlFloorMs (1 s): after that, only web-1 is in rotation.
    await waitFor(
      'the rotation to shrink to web-1',
      async () => {
        const c = await balance(proxy.port, 6)
        return c.size === 1 && c.get(web1) === 6
      },
      10_000,
      200,
    )
    t.pass('the removed containers left the rotation within seconds')
    const left = await agentServicesOf(consul, `${hostId}:`)
    t.same(Object.keys(left), [`${hostId}:web-1:80`])
    t.notOk(
      Object.values(await agentServicesOf(consul, '')).some(
        (s) => s.Meta?.['clb-container'] && s.ID.includes('hidden'),
      ),
      'the ignored container never appeared',
    )
    await docker.docker(['rm', '-f', 'web-1', 'hidden'])
    await waitFor(
      'web-1 to leave',
      async () => Object.keys(await agentServicesOf(consul, `${hostId}:`)).length === 0,
      10_000,
    )
  },
)

t.test('two images without labels are listed in the catalog under their default names', async (t) => {
  const hostId = 'defaults'
  docker.removeOnTeardown(t, 'plain-nginx', 'plain-httpd')
  await docker.run({ name: 'plain-nginx', image: 'nginx:latest', publish: ['80'] })
  await docker.run({ name: 'plain-httpd', image: 'library/httpd:2.4', publish: ['80', '8080'] })
  await startRegistrator(t, docker, consul, { hostId })
  const catalog = await waitFor('default names in the catalog', async () => {
    const c = (await consul.api('GET', '/v1/catalog/services')) as Record<string, string[]>
    return c.nginx && c['httpd-80'] && c['httpd-8080'] ? c : null
  })
  t.ok(catalog.nginx, 'nginx: the image name without tag')
  t.ok(
    catalog['httpd-80'] && catalog['httpd-8080'],
    'httpd publishes two ports: <image>-<port>, as registrator named them',
  )
  const svcs = await agentServicesOf(consul, `${hostId}:`)
  t.same(Object.keys(svcs).sort(), [
    `${hostId}:plain-httpd:80`,
    `${hostId}:plain-httpd:8080`,
    `${hostId}:plain-nginx:80`,
  ])
  await docker.docker(['rm', '-f', 'plain-nginx', 'plain-httpd'])
})

t.test('a registration made by hand is never removed, even with the same ID form', async (t) => {
  const hostId = 'handmade'
  docker.removeOnTeardown(t, 'ghost')
  t.teardown(async () => {
    await consul.deregister(`${hostId}:ghost:80`)
    await consul.deregister('by-hand')
  })
  await consul.register({ ID: `${hostId}:ghost:80`, Name: 'ghost', Port: 1234 })
  await consul.register({ ID: 'by-hand', Name: 'by-hand', Port: 1235, Meta: { 'clb-registrator': 'another-host' } })
  // A HEALTHCHECK and a pause: the registrator would mirror the one and drain the other on the service it registered,
  // but the service with this ID is not its own.
  await docker.run({ name: 'ghost', publish: ['80'], healthCmd: 'true' })
  const registrator = await startRegistrator(t, docker, consul, { hostId, cleanup: true })
  await docker.docker(['pause', 'ghost'])
  const paused = await registrator.syncNow()
  t.ok(
    paused.ok,
    `a sync with a foreign registration under the container's ID succeeds (${JSON.stringify(paused.error)})`,
  )
  const checks = (await consul.api('GET', '/v1/agent/checks')) as Record<string, { ServiceID: string }>
  t.same(
    Object.keys(checks).filter((id) => checks[id]!.ServiceID === `${hostId}:ghost:80`),
    [],
    'no maintenance and no check was put on the hand-made registration',
  )
  await docker.docker(['unpause', 'ghost'])
  await docker.docker(['rm', '-f', 'ghost'])
  await registrator.syncNow()
  const s1 = await registrator.syncNow()
  t.ok(s1.ok)
  const all = await agentServicesOf(consul, '')
  t.equal(all[`${hostId}:ghost:80`]?.Port, 1234, 'the hand-made registration with a registrator-style ID is untouched')
  t.ok(all['by-hand'], "another host's registration is untouched")
  const status = registrator.status() as { errors: { code: string }[] }
  t.ok(
    status.errors.some((e) => e.code === 'CLB_REG_CONFLICT'),
    'the conflict is reported with its code',
  )
})

t.test('host-networked containers register only the ports they name', async (t) => {
  const hostId = 'hostnet'
  docker.removeOnTeardown(t, 'hostnet', 'hostnet-unnamed')
  const { freePort } = await import('./helpers/ports.js')
  const port = await freePort()
  // The image EXPOSEs 80, but with host networking that port means nothing: only SERVICE_<port>_NAME counts.
  await docker.run({
    name: 'hostnet',
    network: 'host',
    cmd: ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', '/www'],
    env: {
      [`SERVICE_${port}_NAME`]: 'host-web',
      [`SERVICE_${port}_CHECK_HTTP`]: '/',
      [`SERVICE_${port}_CHECK_INTERVAL`]: '1s',
    },
  })
  await docker.run({ name: 'hostnet-unnamed', network: 'host', cmd: ['sleep', '3600'] })
  await startRegistrator(t, docker, consul, { hostId, ip: '127.0.0.1' })
  await consul.waitPassing('host-web', 1, 20_000)
  const svcs = await agentServicesOf(consul, `${hostId}:`)
  t.same(
    Object.keys(svcs),
    [`${hostId}:hostnet:${port}`],
    'one service, for the named port; none for EXPOSE 80 or the unnamed container',
  )
  t.equal(svcs[`${hostId}:hostnet:${port}`]!.Address, '127.0.0.1', '--ip is the address')
  t.equal(svcs[`${hostId}:hostnet:${port}`]!.Port, port)
  t.equal(
    await (await fetch(`http://127.0.0.1:${port}/index.html`, { signal: AbortSignal.timeout(5000) })).text(),
    'ok\n',
  )
  await docker.docker(['rm', '-f', 'hostnet', 'hostnet-unnamed'])
})

t.test(
  '--internal registers the container IP and exposed port; SERVICE_INTERNAL=false opts one container out',
  async (t) => {
    const hostId = 'internal'
    docker.removeOnTeardown(t, 'inside', 'outside')
    await docker.run({ name: 'inside', env: { SERVICE_NAME: 'inside' } })
    await docker.run({ name: 'outside', publish: ['80'], env: { SERVICE_NAME: 'outside', SERVICE_INTERNAL: 'false' } })
    await startRegistrator(t, docker, consul, { hostId, internal: true })
    const svcs = await waitFor('both registered', async () => {
      const s = await agentServicesOf(consul, `${hostId}:`)
      return Object.keys(s).length === 2 ? s : null
    })
    const inspect = await docker.inspect('inside')
    const ip = (inspect.NetworkSettings.Networks[docker.network] as { IPAddress: string }).IPAddress
    t.equal(svcs[`${hostId}:inside:80`]?.Address, ip, 'the container IP on its network')
    t.equal(svcs[`${hostId}:inside:80`]?.Port, 80, 'the exposed port, not a published one')
    t.equal(svcs[`${hostId}:outside:80`]?.Address, '127.0.0.1')
    t.equal(
      svcs[`${hostId}:outside:80`]?.Port,
      await docker.hostPort('outside'),
      'the per-container override uses the published port',
    )
    await docker.docker(['rm', '-f', 'inside', 'outside'])
  },
)

t.test(
  '--cleanup: leftovers of this host from before a restart are removed at start; without it only by a resync',
  async (t) => {
    const leftover = {
      ID: 'cleanup:gone:80',
      Name: 'gone',
      Port: 1,
      Meta: { 'clb-registrator': 'cleanup', 'clb-container': 'f'.repeat(64) },
    }
    t.teardown(() => consul.deregister(leftover.ID).catch(() => undefined)) // 404 when the test passed: it is gone
    await consul.register(leftover)
    const keeping = await startRegistrator(t, docker, consul, { hostId: 'cleanup', resync: 0 })
    t.ok((await agentServicesOf(consul, 'cleanup:'))[leftover.ID], 'the startup sync leaves it (gliderlabs behaviour)')
    const resync = await keeping.syncNow()
    t.equal(resync.deregistered, 1, 'a later resync removes it')
    await keeping.close()
    await consul.register(leftover)
    await startRegistrator(t, docker, consul, { hostId: 'cleanup', resync: 0, cleanup: true })
    t.notOk((await agentServicesOf(consul, 'cleanup:'))[leftover.ID], 'with --cleanup the startup sync removes it')
  },
)
