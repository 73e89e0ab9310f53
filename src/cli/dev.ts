import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command, Option } from 'commander'
import { ConfigError, ConsulLbError } from '../errors.js'
import { startProxy } from '../index.js'
import { createLogger } from '../log.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * `consul-lb dev`: the 30-second demo. A real `consul agent -dev` on loopback, demo backends registered with HTTP
 * health checks, and the proxy; prints a curl line that shows round-robin. Ctrl-C stops everything it started.
 */
export function devCommand(): Command {
  const cmd = new Command('dev')
    .description('demo: a Consul dev agent, demo backends with health checks, and the proxy (default 127.0.0.1:8080)')
    .addOption(new Option('--listen <host:port>', 'proxy listener').default('127.0.0.1:8080'))
    .addOption(new Option('--admin <host:port>', 'admin listener').default('127.0.0.1:8081'))
    .addOption(new Option('--instances <n>', 'demo backends').default('3'))
    .addOption(new Option('--consul-http-port <port>', "the dev agent's HTTP API port").default('8500'))
    .addOption(new Option('--consul-dns-port <port>', "the dev agent's DNS port").default('8600'))
    .addOption(
      new Option('--consul-bin <path>', 'Consul binary (default: scripts/ensure-consul.sh finds or builds it)').env(
        'CONSUL_BIN',
      ),
    )
    .action(
      async (o: {
        listen: string
        admin: string
        instances: string
        consulHttpPort: string
        consulDnsPort: string
        consulBin?: string
      }) => {
        const n = Number(o.instances)
        if (!Number.isInteger(n) || n < 1 || n > 20) throw new ConfigError('--instances', 'expected an integer 1-20')
        for (const [flag, v] of [
          ['--consul-http-port', o.consulHttpPort],
          ['--consul-dns-port', o.consulDnsPort],
        ] as const) {
          if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > 65535)
            throw new ConfigError(flag, `expected a port 1-65535 (got "${v}")`)
        }
        await runDev({
          listen: o.listen,
          admin: o.admin,
          instances: n,
          httpPort: Number(o.consulHttpPort),
          dnsPort: Number(o.consulDnsPort),
          consulBin: o.consulBin,
        })
      },
    )
  return cmd
}

interface DevOptions {
  listen: string
  admin: string
  instances: number
  httpPort: number
  dnsPort: number
  consulBin?: string | undefined
}

async function runDev(o: DevOptions): Promise<void> {
  const log = createLogger('warn')
  const bin = o.consulBin ?? findConsul()
  const dir = mkdtempSync(join(tmpdir(), 'consul-lb-dev-'))
  const backends: Server[] = []
  let consul: ChildProcess | null = null
  const cleanup = async (): Promise<void> => {
    for (const b of backends) b.close()
    if (consul && consul.exitCode === null) {
      const exited = new Promise((r) => consul!.once('exit', r))
      consul.kill('SIGTERM')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const cfg = join(dir, 'agent.json')
    writeFileSync(
      cfg,
      JSON.stringify({
        ports: { http: o.httpPort, dns: o.dnsPort, grpc: -1, grpc_tls: -1 },
        log_level: 'warn',
        disable_update_check: true,
      }),
    )
    consul = spawn(bin, ['agent', '-dev', '-bind', '127.0.0.1', '-client', '127.0.0.1', '-config-file', cfg], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let consulErr = ''
    consul.stderr!.on('data', (b: Buffer) => {
      consulErr = (consulErr + b.toString()).slice(-4000)
    })
    const api = `http://127.0.0.1:${o.httpPort}`
    await waitFor(
      async () => {
        if (consul!.exitCode !== null)
          throw new ConsulLbError(
            'CLB_DEV_CONSUL_EXITED',
            `consul agent exited: ${consulErr.trim() || 'no output'} (ports ${o.httpPort}/${o.dnsPort} in use? try --consul-http-port/--consul-dns-port)`,
          )
        const r = await fetch(`${api}/v1/status/leader`).catch(() => null)
        if (!r?.ok) return false
        return (await r.text()).length > 4
      },
      60_000,
      'Consul dev agent did not become ready',
    )
    for (let i = 1; i <= o.instances; i++) {
      const id = `demo-${i}`
      const server = createServer((req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': id })
        res.end(
          req.url === '/health'
            ? 'ok\n'
            : `hello from ${id} (${req.headers.host} → 127.0.0.1:${(server.address() as { port: number }).port})\n`,
        )
      })
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
      backends.push(server)
      const port = (server.address() as { port: number }).port
      const reg = await fetch(`${api}/v1/agent/service/register`, {
        method: 'PUT',
        body: JSON.stringify({
          ID: id,
          Name: 'demo',
          Address: '127.0.0.1',
          Port: port,
          Check: { HTTP: `http://127.0.0.1:${port}/health`, Interval: '2s', Timeout: '1s' },
        }),
      })
      if (!reg.ok)
        throw new ConsulLbError('CLB_DEV_REGISTER', `could not register ${id}: ${reg.status} ${await reg.text()}`)
    }
    await waitFor(
      async () => {
        const r = await fetch(`${api}/v1/health/service/demo?passing=true`)
        return ((await r.json()) as unknown[]).length === o.instances
      },
      30_000,
      'demo backends did not pass their health checks',
    )
    const proxy = await startProxy(
      {
        listen: o.listen,
        admin: o.admin,
        dns: [`127.0.0.1:${o.dnsPort}`],
        routes: ['/demo=demo,strip'],
        logLevel: 'warn',
      },
      { log },
    )
    const port = proxy.port
    process.stdout.write(`
consul-lb demo is running:
  Consul UI/API   ${api}/ui      (dev agent, DNS on 127.0.0.1:${o.dnsPort})
  proxy           http://${o.listen.replace(/:\d+$/, '')}:${port}   (${o.instances} instances of "demo")
  status page     http://${o.admin}/   (live; JSON at /status, Prometheus at /metrics)

Round-robin, by Host name and by route:
  for i in $(seq ${o.instances * 2}); do curl -s -H 'Host: demo.service.consul' http://127.0.0.1:${port}/; done
  for i in $(seq ${o.instances * 2}); do curl -s http://127.0.0.1:${port}/demo/; done

Try: stop an instance with  curl -X PUT ${api}/v1/agent/service/maintenance/demo-1?enable=true  and curl again.
Ctrl-C stops everything.
`)
    await new Promise<void>((r) => {
      process.once('SIGINT', r)
      process.once('SIGTERM', r)
    })
    await proxy.close()
  } finally {
    await cleanup()
  }
}

function findConsul(): string {
  const script = join(ROOT, 'scripts', 'ensure-consul.sh')
  if (!existsSync(script))
    throw new ConsulLbError('CLB_DEV_NO_CONSUL', 'no Consul binary: pass --consul-bin or set CONSUL_BIN')
  try {
    return execFileSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim()
  } catch (err) {
    throw new ConsulLbError(
      'CLB_DEV_NO_CONSUL',
      `could not find or build Consul (${(err as Error).message}); pass --consul-bin`,
    )
  }
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new ConsulLbError('CLB_DEV_TIMEOUT', `${what} within ${timeoutMs / 1000} s`)
}
