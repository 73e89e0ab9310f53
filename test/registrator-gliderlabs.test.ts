import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'

import { META_OWNER } from '../src/registrator/desired.js'
import { type ConsulAgent, makeTlsMaterial, POLICIES, startConsul, startSecureConsul } from './helpers/consul.js'
import { startDocker, waitFor } from './helpers/docker.js'
import { http } from './helpers/http.js'
import { type LoggedChild, runCliProcess, stopChild } from './helpers/process.js'
import { startTestProxy } from './helpers/proxy.js'
import { agentServicesOf, startRegistrator } from './helpers/registrator.js'

/**
 * Migrating from gliderlabs/registrator, against a real dockerd and Consul: its command line started verbatim (also
 * as `consul-lb <options> <uri>`, the `docker run <image> …` form), its registry URIs, and its registrations taken
 * over in place while traffic flows through `serve`.
 */

const docker = await startDocker(t, ['clb-busybox:test', 'my_app:1'])
const HOST = hostname()

type Cli = LoggedChild

/** `consul-lb <args>` from the sources, with the test engine as DOCKER_HOST and no admin listener (no port clash). */
function cli(t: { teardown(fn: () => unknown): void }, args: string[], env: Record<string, string> = {}): Cli {
  const c = runCliProcess(args, { CONSUL_HTTP_ADDR: '', DOCKER_HOST: docker.url, CONSUL_LB_ADMIN: 'off', ...env })
  t.teardown(() => stopChild(c.proc))
  return c
}

async function stopped(t: Test, c: Cli): Promise<void> {
  c.proc.kill('SIGTERM')
  const code = await c.exited
  if (code !== 0) t.comment(c.output().slice(-3000))
  t.equal(code, 0, 'exit 0 on SIGTERM')
}

/** Waits for `what`; on a time-out the CLI's output is shown. */
async function waitCli<T>(c: Cli, what: string, fn: () => Promise<T | null | undefined | false>): Promise<T> {
  try {
    return await waitFor(what, fn, 30_000)
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${c.output().slice(-3000)}`)
  }
}

t.test('a gliderlabs command line, started verbatim, registers with every flag it gives', async (t) => {
  const consul = await startConsul(t)
  docker.removeOnTeardown(t, 'gl-verbatim')
  await docker.run({
    name: 'gl-verbatim',
    publish: ['80'],
    env: { SERVICE_NAME: 'glv', SERVICE_TAGS: 'urlprefix-/a\\,b,v1' },
    labels: { team: 'pay', SERVICE_REGISTER: 'yes' },
  })
  const c = cli(t, [
    'registrator',
    '-ip=127.0.0.1',
    '-resync',
    '2',
    '-cleanup',
    '-require-label',
    '-tags',
    'forced,host-{{.Config.Hostname}},team-{{index .Config.Labels "team"}}',
    '-deregister',
    'on-success',
    '-retry-attempts',
    '5',
    '-retry-interval=200',
    '-ttl',
    '30',
    '-ttl-refresh',
    '10',
    `consul://127.0.0.1:${consul.httpPort}`,
  ])
  const id = `${HOST}:gl-verbatim:80`
  const svc = await waitCli(c, 'the container registered', async () => (await agentServicesOf(consul, HOST))[id])
  const inspect = await docker.inspect('gl-verbatim')
  t.equal(svc.Service, 'glv')
  t.equal(svc.Address, '127.0.0.1', '-ip')
  t.equal(svc.Port, await docker.hostPort('gl-verbatim'))
  t.same(
    svc.Tags,
    ['urlprefix-/a,b', 'v1', 'forced', `host-${inspect.Config.Hostname}`, 'team-pay'],
    'SERVICE_TAGS with an escaped comma, then -tags evaluated as a Go template over the container',
  )
  t.match(c.output(), /-ttl 30 -ttl-refresh 10 ignored/, 'accepted, and the log says why they change nothing')
  await stopped(t, c)
  await docker.docker(['rm', '-f', 'gl-verbatim'])
})

t.test('`consul-lb <options> consul-unix:///…`: the docker-run form, over the agent unix socket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clb-sock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const sock = join(dir, 'agent.sock')
  const consul = await startConsul(t, { extra: { addresses: { http: `127.0.0.1 unix://${sock}` } } })
  docker.removeOnTeardown(t, 'gl-unix')
  await docker.run({ name: 'gl-unix', publish: ['80'], image: 'my_app:1' })
  const c = cli(t, ['-resync=2', '-ip', '127.0.0.1', `consul-unix://${sock}`])
  const svc = await waitCli(
    c,
    'registered through the socket',
    async () => (await agentServicesOf(consul, HOST))[`${HOST}:gl-unix:80`],
  )
  t.equal(svc.Service, 'my_app', "gliderlabs' default name: the image's, underscore kept")
  await stopped(t, c)
  await docker.docker(['rm', '-f', 'gl-unix'])
})

t.test(
  'consul-tls:// with the certificates in CONSUL_CACERT and gliderlabs’ CONSUL_TLSCERT, CONSUL_TLSKEY',
  async (t) => {
    const secure = await startSecureConsul(t)
    const token = await secure.createToken(POLICIES.registrator, 'registrator')
    docker.removeOnTeardown(t, 'gl-tls')
    await docker.run({ name: 'gl-tls', publish: ['80'], env: { SERVICE_NAME: 'gltls' } })
    const c = cli(
      t,
      ['registrator', '-resync', '2', '-retry-attempts', '10', `consul-tls://127.0.0.1:${secure.agent.httpPort}`],
      {
        CONSUL_CACERT: secure.tls.caFile,
        CONSUL_TLSCERT: secure.tls.clientCert,
        CONSUL_TLSKEY: secure.tls.clientKey,
        CONSUL_HTTP_TOKEN: token,
      },
    )
    const svc = await waitCli(
      c,
      'registered over TLS',
      async () => (await agentServicesOf(secure.agent, HOST))[`${HOST}:gl-tls:80`],
    )
    t.equal(svc.Service, 'gltls')
    await stopped(t, c)
    await docker.docker(['rm', '-f', 'gl-tls'])
  },
)

t.test('other registry backends and bad gliderlabs flags exit 2 with a message that says why', async (t) => {
  for (const [args, re] of [
    [['-ip=10.0.0.5', 'etcd://127.0.0.1:2379/services'], /etcd is not supported/],
    [['registrator', 'skydns2://127.0.0.1:4001/skydns.local'], /SkyDNS 2 is not supported/],
    [['registrator', '-internal', 'zookeeper://127.0.0.1:2181/services'], /ZooKeeper is not supported/],
    [['registrator', '-ipp=1.2.3.4', 'consul://127.0.0.1:8500'], /-ipp: flag provided but not defined/],
    [['registrator', '-ip=1.2.3.4'], /registry URI.*missing/],
    [['registrator', 'consul://127.0.0.1:8500', '-cleanup'], /options come before the registry URI/],
    [['registrator', '-ttl', '10', 'consul://127.0.0.1:8500'], /-ttl and -ttl-refresh must be specified together/],
    [['registrator', '-cleanup=maybe', 'consul://127.0.0.1:8500'], /-cleanup.*invalid boolean/],
  ] as [string[], RegExp][]) {
    const c = cli(t, args)
    t.equal(await c.exited, 2, args.join(' '))
    t.match(c.output(), re)
  }
  const help = cli(t, ['registrator', '-help'])
  t.equal(await help.exited, 0)
  t.match(help.output(), /-useIpFromLabel <label>/)
})

/** Counts of passing instances of `service` seen through Consul blocking queries until `stop` is set. */
function watchPassing(consul: ConsulAgent, service: string, stop: { done: boolean }): Promise<number[]> {
  return (async () => {
    const seen: number[] = []
    let index = '0'
    while (!stop.done) {
      const res = await fetch(`${consul.httpAddr}/v1/health/service/${service}?passing=true&index=${index}&wait=1s`, {
        signal: AbortSignal.timeout(5000),
      })
      index = res.headers.get('x-consul-index') ?? index
      seen.push(((await res.json()) as unknown[]).length)
    }
    return seen
  })()
}

t.test(
  'gliderlabs registrations of this host are taken over in place while serve carries traffic: no instance lost, the dead and nobody else’s removed',
  async (t) => {
    const consul = await startConsul(t)
    const hostId = 'migrating'
    const names = ['gl-web-1', 'gl-web-2', 'gl-web-3']
    docker.removeOnTeardown(t, ...names)
    const env = {
      SERVICE_NAME: 'glweb',
      SERVICE_TAGS: 'blue',
      SERVICE_CHECK_HTTP: '/index.html',
      SERVICE_CHECK_INTERVAL: '1s',
    }
    for (const name of names) await docker.run({ name, publish: ['80'], env })
    // What gliderlabs/registrator (master) wrote for them through the agent API: ID <hostname>:<container>:<port>,
    // the resolved address, tags, Meta from the other SERVICE_* values, and one check (CheckID service:<ID>).
    for (const name of names) {
      const port = await docker.hostPort(name)
      await consul.register({
        ID: `${hostId}:${name}:80`,
        Name: 'glweb',
        Address: '127.0.0.1',
        Port: port,
        Tags: ['blue'],
        Meta: { check_http: '/index.html', check_interval: '1s' },
        Check: { HTTP: `http://127.0.0.1:${port}/index.html`, Interval: '1s' },
      })
    }
    // A container that is gone, another host's entry, and hand-made ones (one borrowing the ID shape).
    await consul.register({ ID: `${hostId}:gl-gone:80`, Name: 'glgone', Address: '127.0.0.1', Port: 1 })
    await consul.register({ ID: 'otherhost:gl-web-1:80', Name: 'glother', Address: '127.0.0.1', Port: 2 })
    await consul.register({ ID: 'payments-by-hand', Name: 'payments', Address: '127.0.0.1', Port: 3 })
    await consul.register({ ID: `${hostId}:gl-web-1:8080`, Name: 'manual', Port: 4 })
    await consul.waitPassing('glweb', 3)
    const created = async () => {
      const entries = (await consul.api('GET', '/v1/catalog/service/glweb')) as {
        ServiceID: string
        CreateIndex: number
      }[]
      return Object.fromEntries(entries.map((e) => [e.ServiceID, e.CreateIndex]))
    }
    const before = await created()

    const proxy = await startTestProxy(t, consul, { routes: ['/=glweb'], ttlFloorMs: 100 })
    const stop = { done: false }
    const counts = watchPassing(consul, 'glweb', stop)
    let ok = 0
    const failures: string[] = []
    const traffic = (async () => {
      const deadline = Date.now() + 60_000
      while (!stop.done && Date.now() < deadline) {
        try {
          const r = await http(proxy.port, '/index.html', { timeoutMs: 5000 })
          if (r.status === 200) ok++
          else failures.push(`status ${r.status}`)
        } catch (err) {
          failures.push((err as Error).message)
        }
      }
    })()
    await waitFor('traffic flowing', async () => ok > 20)

    const registrator = await startRegistrator(t, docker, consul, { hostId, cleanup: true, ip: '127.0.0.1' })
    const summary = registrator.status() as { lastSync: { adopted: number; deregistered: number; conflicts: number } }
    t.equal(summary.lastSync.adopted, 3, 'three registrations taken over')
    t.equal(summary.lastSync.deregistered, 1, "the gone container's registration removed")
    const okAtAdoption = ok
    await waitFor('more traffic after the take-over', async () => ok > okAtAdoption + 50)
    stop.done = true
    await traffic
    const seen = await counts

    t.same(failures, [], `no failed request (${ok} answered)`)
    t.ok(Math.min(...seen) >= 3, `passing instances never below 3 (blocking-query views: ${seen.join(',')})`)
    t.same(await created(), before, 'same catalog entries (CreateIndex): updated in place, never deregistered')
    const svcs = await agentServicesOf(consul, '')
    for (const name of names) {
      const s = svcs[`${hostId}:${name}:80`]!
      t.equal(s.Meta[META_OWNER], hostId, `${name}: now carries this registrator's mark`)
    }
    t.notOk(svcs[`${hostId}:gl-gone:80`], 'the gone container is removed')
    t.ok(svcs['otherhost:gl-web-1:80'], "another host's registration is untouched")
    t.ok(svcs['payments-by-hand'], 'a hand-made registration is untouched')
    t.equal(svcs[`${hostId}:gl-web-1:8080`]?.Port, 4, 'a hand-made one in the ID shape, without an address: untouched')
    await docker.docker(['rm', '-f', ...names])
  },
)

t.test(
  "gliderlabs' conventions on real containers: escaped commas, HTTPS method, gRPC checks, SERVICE_IGNORE=false, container:<id> networks",
  async (t) => {
    const consul = await startConsul(t)
    const hostId = 'conventions'
    docker.removeOnTeardown(t, 'cv-https', 'cv-grpc', 'cv-ignored', 'cv-pod', 'cv-member', 'cv-tls')
    await docker.run({
      name: 'cv-https',
      publish: ['80'],
      env: {
        SERVICE_NAME: 'cvhttps',
        SERVICE_TAGS: 'urlprefix-/x\\,y,plain',
        SERVICE_CHECK_HTTPS: '/health',
        SERVICE_CHECK_HTTPS_METHOD: 'HEAD',
        SERVICE_CHECK_TLS_SKIP_VERIFY: 'true',
      },
    })
    await docker.run({
      name: 'cv-grpc',
      publish: ['80'],
      env: {
        SERVICE_NAME: 'cvgrpc',
        SERVICE_CHECK_GRPC: 'true',
        SERVICE_CHECK_GRPC_USE_TLS: 'true',
        SERVICE_CHECK_INTERVAL: '1s',
      },
    })
    await docker.run({
      name: 'cv-ignored',
      publish: ['80'],
      env: { SERVICE_NAME: 'cvignored', SERVICE_IGNORE: 'false' },
    })
    await docker.run({ name: 'cv-pod', cmd: ['sleep', '3600'] })
    // An HTTPS server with a certificate no system trusts, reached by a host-networked container's named port.
    const tlsServer = await startTlsServer(t)
    await docker.run({
      name: 'cv-tls',
      network: 'host',
      cmd: ['sleep', '3600'],
      env: {
        [`SERVICE_${tlsServer.port}_NAME`]: 'cvtls',
        SERVICE_CHECK_HTTPS: '/health',
        SERVICE_CHECK_HTTPS_METHOD: 'HEAD',
        SERVICE_CHECK_INTERVAL: '1s',
        SERVICE_CHECK_TLS_SKIP_VERIFY: 'true',
      },
    })
    await docker.run({
      name: 'cv-member',
      env: { SERVICE_NAME: 'cvmember' },
      network: 'container:cv-pod',
    })
    await startRegistrator(t, docker, consul, { hostId, ip: '127.0.0.1' })
    const svcs = await waitFor('four services', async () => {
      const s = await agentServicesOf(consul, `${hostId}:`)
      return Object.keys(s).length >= 4 ? s : null
    })
    t.same(svcs[`${hostId}:cv-https:80`]?.Tags, ['urlprefix-/x,y', 'plain'], '`\\,` is a comma inside one tag')
    t.notOk(svcs[`${hostId}:cv-ignored:80`], 'SERVICE_IGNORE=false ignores, as gliderlabs did')
    const podIp = Object.values(
      (await docker.inspect('cv-pod')).NetworkSettings.Networks as Record<string, { IPAddress: string }>,
    )[0]!.IPAddress
    t.same(
      [svcs[`${hostId}:cv-member:80`]?.Address, svcs[`${hostId}:cv-member:80`]?.Port],
      [podIp, 80],
      "a container in another's network: its exposed port at that container's address",
    )
    // Consul's APIs do not show a check's definition; what its checks did shows in their output (and, for HTTPS, in
    // what the server below saw).
    const checkOutput = (id: string, re: RegExp) =>
      waitFor(`output of ${id} matching ${re}`, async () => {
        const c = ((await consul.api('GET', '/v1/agent/checks')) as Record<string, { Output: string }>)[id]
        return c && re.test(c.Output) ? c.Output : null
      })
    t.match(
      await checkOutput(`service:${hostId}:cv-grpc:80`, /./),
      /tls|handshake|first record/i,
      'the gRPC check spoke TLS (SERVICE_CHECK_GRPC_USE_TLS) to a plain HTTP server',
    )
    t.match(
      await checkOutput(`service:${hostId}:cv-tls:${tlsServer.port}`, /200/),
      /HEAD https:\/\/127\.0\.0\.1:\d+\/health.*200/,
      'the HTTPS check passed against a certificate no system trusts (SERVICE_CHECK_TLS_SKIP_VERIFY)',
    )
    t.equal(tlsServer.method(), 'HEAD', 'the HTTPS check used SERVICE_CHECK_HTTPS_METHOD')
  },
)

/** An HTTPS server on 127.0.0.1 with a certificate of a private CA; remembers the method of the last request. */
async function startTlsServer(t: Test): Promise<{ port: number; method: () => string }> {
  const dir = mkdtempSync(join(tmpdir(), 'clb-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const tls = makeTlsMaterial(dir)
  let last = ''
  const server = createHttpsServer(
    { cert: readFileSync(tls.serverCert), key: readFileSync(tls.serverKey) },
    (req, res) => {
      last = req.method ?? ''
      res.writeHead(200).end('ok')
    },
  )
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return { port: (server.address() as AddressInfo).port, method: () => last }
}

t.test('without -cleanup nothing that only looks like gliderlabs’ is touched, however many resyncs pass', async (t) => {
  const consul = await startConsul(t)
  const hostId = 'lookalike'
  docker.removeOnTeardown(t, 'la-web', 'la-copy', 'la-noaddr')
  // gliderlabs reads env over labels: the env var names the service.
  await docker.run({
    name: 'la-web',
    publish: ['80'],
    env: { SERVICE_NAME: 'laweb' },
    labels: { SERVICE_NAME: 'fromlabel' },
  })
  await docker.run({
    name: 'la-copy',
    publish: ['80'],
    env: { SERVICE_NAME: 'lacopy', SERVICE_ID: 'otherhost:la-copy:80' },
  })
  await docker.run({ name: 'la-noaddr', publish: ['80'], env: { SERVICE_NAME: 'lanoaddr' } })
  // A database outside Docker registered by hand in gliderlabs' ID form; another host's gliderlabs registering on
  // this agent (its ID copied by a container's SERVICE_ID); a hand-made entry with a container's ID, name and port
  // but no address.
  await consul.register({ ID: `${hostId}:postgres:5432`, Name: 'postgres', Address: '127.0.0.1', Port: 5432 })
  const copyPort = await docker.hostPort('la-copy')
  await consul.register({ ID: 'otherhost:la-copy:80', Name: 'lacopy', Address: '127.0.0.2', Port: copyPort })
  const noAddrPort = await docker.hostPort('la-noaddr')
  await consul.register({ ID: `${hostId}:la-noaddr:80`, Name: 'lanoaddr', Port: noAddrPort })
  const before = await agentServicesOf(consul, '')

  const registrator = await startRegistrator(t, docker, consul, { hostId, ip: '127.0.0.1', resync: 1 })
  const web = await waitFor(
    'la-web registered',
    async () => (await agentServicesOf(consul, hostId))[`${hostId}:la-web:80`],
  )
  t.equal(web.Service, 'laweb', 'env over label, as gliderlabs')
  const periodic = () => {
    const s = registrator.status() as { lastSync: { reason: string; at: string; conflicts: number } }
    return s.lastSync.reason === 'periodic' ? s.lastSync : null
  }
  const first = await waitFor('a periodic resync', async () => periodic())
  await waitFor('a second periodic resync', async () => (periodic()?.at ?? '') > first.at && periodic())
  const after = await agentServicesOf(consul, '')
  for (const id of [`${hostId}:postgres:5432`, 'otherhost:la-copy:80', `${hostId}:la-noaddr:80`])
    t.same(after[id], before[id], `${id}: untouched`)
  t.ok(periodic()!.conflicts >= 3, 'each reported as a conflict with its reason')
  await docker.docker(['rm', '-f', 'la-web', 'la-copy', 'la-noaddr'])
})
