import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { isGliderlabsSyntax, parseGliderlabsCommandLine } from '../src/config/gliderlabs.js'
import { loadRegistratorConfig, REGISTRATOR_COMMAND_FIELDS } from '../src/config/registrator.js'
import { ConsulClient } from '../src/consul/client.js'
import { ConfigError } from '../src/errors.js'
import { silentLogger } from '../src/log.js'
import { DockerClient, type DockerEvent } from '../src/registrator/docker.js'
import { DockerEventWatcher } from '../src/registrator/events.js'
import { Registrator } from '../src/registrator/index.js'
import { plainConnection } from './helpers/consul.js'
import { waitFor } from './helpers/docker.js'
import { freePort } from './helpers/ports.js'
import { runCli, runCliProcess } from './helpers/process.js'

t.test('defaults, env aliases and scheme-less CONSUL_HTTP_ADDR', async (t) => {
  const c = loadRegistratorConfig({
    env: { DOCKER_HOST: 'tcp://127.0.0.1:2375', CONSUL_HTTP_ADDR: '127.0.0.1:8501', CONSUL_HTTP_TOKEN: 's3cret' },
  })
  t.equal(c.dockerUrl, 'http://127.0.0.1:2375')
  t.equal(c.consul.address, 'http://127.0.0.1:8501')
  t.equal(c.consul.token, 's3cret')
  t.equal(c.resyncMs, 30_000)
  t.equal(c.deregister, 'always')
  t.same(c.admin, { host: '127.0.0.1', port: 8082 })
  t.equal(
    loadRegistratorConfig({ env: { CONSUL_HTTP_ADDR: 'consul:8501', CONSUL_HTTP_SSL: 'true' } }).consul.address,
    'https://consul:8501',
  )
  t.equal(loadRegistratorConfig({ env: {} }).dockerUrl, 'unix:///var/run/docker.sock')
  t.equal(loadRegistratorConfig({ flags: { admin: 'off' }, env: {} }).admin, null)
})

t.test('bad values fail at the edge with a ConfigError naming the field', async (t) => {
  const bad = (sources: Parameters<typeof loadRegistratorConfig>[0], field: RegExp) => {
    try {
      loadRegistratorConfig(sources)
      t.fail('accepted')
    } catch (err) {
      t.ok(err instanceof ConfigError)
      t.match((err as ConfigError).field, field)
      t.equal((err as ConfigError).code, 'CLB_CONFIG_INVALID')
    }
  }
  bad({ flags: { resync: 'soon' } }, /--resync/)
  bad({ flags: { deregister: 'sometimes' } }, /--deregister/)
  bad({ flags: { tags: ['env-{{.Config.Hostname'] } }, /tags/)
  bad({ flags: { tags: ['{{httpGet "http://x"}}'] } }, /tags/)
  bad({ flags: { ip: '300.1.1.1' } }, /ip/)
  bad({ flags: { docker: 'ftp://x' } }, /docker/)
  bad({ flags: { consul: 'ftp://consul:8500' } }, /consul/)
  bad({ flags: { consul: 'https://user:pw@consul:8501' } }, /consul/)
  bad({ flags: { consulCaFile: '/nonexistent/ca.pem', consul: 'https://consul:8501' } }, /consulCaFile/)
  bad({ flags: { consulCaFile: '/etc/hostname' } }, /consulCaFile/)
  bad({ flags: { consulClientCert: '/etc/hostname', consul: 'https://consul:8501' } }, /consulClientKey/)
  bad({ flags: { consulTokenFile: '/nonexistent/token' } }, /consulTokenFile/)
  bad({ flags: { hostId: 'a:b' } }, /hostId/)
  bad({ flags: { admin: 'localhost' } }, /admin/)
  bad({ object: { resyncc: 3 } }, /resyncc/)
})

t.test("gliderlabs' command line on odd inputs: Go's flag rules, and gliderlabs' meaning of its values", async (t) => {
  const load = (...args: string[]) => {
    const p = parseGliderlabsCommandLine(args, REGISTRATOR_COMMAND_FIELDS, {})
    return { config: loadRegistratorConfig({ flags: p.flags, env: {} }), notes: p.notes }
  }
  const fails = (args: string[], re: RegExp) =>
    t.throws(() => load(...args), { code: 'CLB_CONFIG_INVALID', message: re }, args.join(' '))
  fails(['-ip'], /-ip: flag needs an argument/)
  fails(['-ip', 'consul://127.0.0.1:8500'], /registry URI: missing/)
  fails(['consul://127.0.0.1:8500', '-ip=10.0.0.5'], /options come before the registry URI/)
  fails(['-cleanup', 'false', 'consul://127.0.0.1:8500'], /extra arguments/)
  fails(['-retry-interval=0', 'consul://127.0.0.1:8500'], /retry-interval/)
  // `-ip=$HOST_IP` with the variable unset: gliderlabs took "" as no forced address.
  t.equal(load('-ip=', 'consul://127.0.0.1:8500').config.ip, null)
  t.equal(load('--ip=', '-tags', '', 'consul://127.0.0.1:8500').config.tags.length, 0)
  t.equal(load('-useIpFromLabel=', 'consul://127.0.0.1:8500').config.useIpFromLabel, null)
  t.equal(
    load('-resync=-1', 'consul://127.0.0.1:8500').config.resyncMs,
    0,
    'a negative -resync is off, as in gliderlabs',
  )
  t.equal(load('-resync', '0', 'consul://127.0.0.1:8500').config.resyncMs, 0)
  const twice = load('-tags', 'a', '-ip=10.0.0.1', '-tags', 'b,c', '-ip=10.0.0.2', 'consul://127.0.0.1:8500').config
  t.same([twice.tags, twice.ip], [['b,c'], '10.0.0.2'], 'a flag given twice keeps its last value (flag.String)')
  t.same(load('-tags', 'prod, eu', 'consul://127.0.0.1:8500').config.tags, ['prod, eu'], 'spaces around commas')
  fails(['-tags', 'a b', 'consul://127.0.0.1:8500'], /whitespace/)
  t.equal(load('--', 'consul://10.0.0.9:8500').config.consul.address, 'http://10.0.0.9:8500', '`--` ends the flags')
  t.ok(isGliderlabsSyntax(['--', 'consul://10.0.0.9:8500']))
  t.notOk(isGliderlabsSyntax(['--', '-ip=1.2.3.4']), 'after `--`, only a registry URI tells')
  const uri = load('consul://user:pw@10.0.0.9:8500/v1?prefix=x#y')
  t.equal(uri.config.consul.address, 'http://10.0.0.9:8500', "only the host, as gliderlabs' adapter read it")
  t.match(uri.notes, [/the rest of .* is ignored/])
  t.equal(load('consul://10.0.0.9:8500?prefix=x').config.consul.address, 'http://10.0.0.9:8500')
})

t.test('a shared config file may hold keys of other subcommands', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'clb-reg-cfg-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'c.yaml')
  writeFileSync(file, 'listen: 0.0.0.0:8080\nresync: 5\ntags: [a, b]\n')
  const c = loadRegistratorConfig({ file, env: {} })
  t.equal(c.resyncMs, 5000)
  t.same(c.tags, ['a', 'b'])
})

/** A fake engine on a unix socket: /events sends one event and drops the connection, to watch the reconnect. */
t.test(
  'the event stream reconnects after a drop and asks the engine to replay from the last event (since=)',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'clb-ev-'))
    const socket = join(dir, 's')
    const requests: string[] = []
    const event: DockerEvent = {
      Type: 'container',
      Action: 'start',
      Actor: { ID: 'abc', Attributes: { name: 'x' } },
      time: 1700000000,
      timeNano: 1700000000123456800,
    }
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      requests.push(req.url ?? '')
      res.writeHead(200, { 'content-type': 'application/json' })
      if (requests.length === 1)
        res.end(`${JSON.stringify(event)}\n`) // the engine "restarts" right after this event
      else if (requests.length === 2)
        res.end(`${JSON.stringify(event)}\n`) // the replay repeats it: must be skipped
      else res.write('') // stays open
    })
    await new Promise<void>((r) => server.listen(socket, r))
    const docker = new DockerClient({ url: `unix://${socket}` })
    const seen: DockerEvent[] = []
    const connected: boolean[] = []
    const watcher = new DockerEventWatcher(docker, {
      log: silentLogger(),
      initialDelayMs: 10,
      maxDelayMs: 50,
      onEvent: (e) => seen.push(e),
      onConnected: (r) => connected.push(r),
      onDisconnected: () => undefined,
    })
    t.teardown(async () => {
      await watcher.close()
      await docker.close()
      server.closeAllConnections()
      await new Promise((r) => server.close(r))
      rmSync(dir, { recursive: true, force: true })
    })
    watcher.start()
    await waitFor('three connects', async () => requests.length >= 3, 5000, 10)
    t.notMatch(requests[0], /since=/, 'the first connect replays nothing (the startup sync covers the past)')
    t.match(requests[1], /since=1700000000(&|$)/, 'the reconnect replays from the last event')
    t.match(
      decodeURIComponent(requests[0]!),
      /"event":\["start","die","stop","kill","destroy","pause","unpause","health_status"\]/,
    )
    t.same(connected.slice(0, 2), [false, true], 'each reconnect is reported (the registrator resyncs on it)')
    t.equal(seen.length, 1, 'a replayed event is not delivered twice')
  },
)

t.test(
  'with --retry-attempts, start() gives up on an unreachable Consul with CLB_REG_CONSUL_UNAVAILABLE',
  async (t) => {
    const config = loadRegistratorConfig({
      object: {
        consul: 'http://127.0.0.1:1',
        docker: 'unix:///tmp/clb-no-such-docker.sock',
        retryAttempts: 2,
        retryInterval: 10,
      },
      env: {},
    })
    const r = new Registrator(config, { log: silentLogger() })
    t.teardown(() => r.close())
    await t.rejects(r.start(), { code: 'CLB_REG_CONSUL_UNAVAILABLE' })
  },
)

t.test('consul-lb registrator: exit 2 on a bad value, naming it', async (t) => {
  const r = await runCli(['registrator', '--resync', 'soon'], {}, 30_000)
  t.equal(r.code, 2)
  t.match(r.stderr, /--resync/)
})

t.test('consul-lb registrator: serves /status while Docker is away, exits 0 on SIGTERM', async (t) => {
  const port = await freePort()
  const r = runCliProcess([
    'registrator',
    '--docker',
    'unix:///tmp/clb-no-such-docker.sock',
    '--consul',
    'http://127.0.0.1:1',
    '--admin',
    `127.0.0.1:${port}`,
    '--host-id',
    'cli-test',
  ])
  const timer = setTimeout(() => r.proc.kill('SIGKILL'), 60_000)
  t.teardown(() => clearTimeout(timer))
  const status = await waitFor(
    'admin /status',
    async () => {
      const res = await fetch(`http://127.0.0.1:${port}/status`, { signal: AbortSignal.timeout(1000) })
      const body = (await res.json()) as {
        registrator: { hostId: string; docker: { eventStream: string; lastError: { code: string } | null } }
      }
      return body.registrator.docker.lastError ? body : null
    },
    20_000,
  )
  t.equal(status.registrator.hostId, 'cli-test')
  t.equal(status.registrator.docker.lastError?.code, 'CLB_DOCKER_UNREACHABLE')
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.match(metrics, /consul_lb_registrator_docker_disconnects_total\{code="CLB_DOCKER_UNREACHABLE"\} \d+/)
  r.proc.kill('SIGTERM')
  t.equal(await r.exited, 0, r.output().slice(-2000))
})

t.test('close() while start() waits for Consul: start() gives up and leaves no timer or stream behind', async (t) => {
  // A Consul that answers /v1/agent/self only after close() was called.
  const server = createServer((_req, res) => {
    setTimeout(
      () =>
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end('{"Config":{"NodeName":"n","Datacenter":"dc1"}}'),
      300,
    )
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise((r) => server.close(r))
  })
  const port = (server.address() as { port: number }).port
  const config = loadRegistratorConfig({
    object: {
      consul: `http://127.0.0.1:${port}`,
      docker: 'unix:///tmp/clb-no-such-docker.sock',
      retryAttempts: 3,
      retryInterval: 10,
      admin: 'off',
    },
    env: {},
  })
  const r = new Registrator(config, { log: silentLogger() })
  const starting = r.start().then(
    () => null,
    (err: unknown) => err,
  )
  await new Promise((res) => setTimeout(res, 50))
  await r.close()
  t.equal(((await starting) as { code?: string } | null)?.code, 'CLB_REG_CLOSED', 'start() reports that it was closed')
  t.equal((r as unknown as { tickTimer: unknown }).tickTimer, null, 'no resync timer was started after close()')
  t.equal((r.status() as { docker: { connects: number } }).docker.connects, 0, 'the event stream was never opened')
})

t.test(
  'a Consul answer that is not JSON, or is cut off, fails with a stable code (not a bare SyntaxError)',
  async (t) => {
    let mode: 'html' | 'cut' = 'html'
    const server = createServer((_req, res) => {
      if (mode === 'html') {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>502 Bad Gateway</html>')
        return
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' })
      res.write('{"web":')
      setTimeout(() => res.destroy(), 20)
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    t.teardown(() => {
      server.closeAllConnections()
      return new Promise((r) => server.close(r))
    })
    const client = new ConsulClient({
      connection: plainConnection(`http://127.0.0.1:${(server.address() as { port: number }).port}`),
    })
    t.teardown(() => client.destroy())
    await t.rejects(client.catalogServices(), { code: 'CLB_CONSUL_BAD_RESPONSE' })
    mode = 'cut'
    await t.rejects(client.agentServices(), { code: 'CLB_CONSUL_UNREACHABLE' })
  },
)

t.test(
  'resync ticks faster than a slow Consul answers do not pile up full syncs (a drain would wait behind them)',
  async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'clb-slow-'))
    const socket = join(dir, 's')
    // An engine with no containers whose event stream stays open, and a Consul that takes 2 s per answer.
    const engine = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      if (req.url?.startsWith('/events')) res.write('')
      else res.end('[]')
    })
    await new Promise<void>((r) => engine.listen(socket, r))
    const consul = createServer((_req, res) => {
      setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'), 2000)
    })
    await new Promise<void>((r) => consul.listen(0, '127.0.0.1', r))
    const config = loadRegistratorConfig({
      object: {
        consul: `http://127.0.0.1:${(consul.address() as { port: number }).port}`,
        docker: `unix://${socket}`,
        resync: 1,
        admin: 'off',
      },
      env: {},
    })
    const r = new Registrator(config, { log: silentLogger() })
    t.teardown(async () => {
      await r.close()
      for (const s of [engine, consul]) {
        s.closeAllConnections()
        await new Promise((res) => s.close(res))
      }
      rmSync(dir, { recursive: true, force: true })
    })
    await r.start()
    let most = 0
    for (let i = 0; i < 30; i++) {
      await new Promise((res) => setTimeout(res, 200))
      most = Math.max(most, (r.status() as { queuedOperations: number }).queuedOperations)
    }
    t.ok(most <= 1, `at most one full sync waits behind the running one (saw ${most} queued)`)
  },
)
