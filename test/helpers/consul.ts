import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { freePorts } from './ports.js'

/**
 * Starts and stops real Consul agents (`consul agent -dev`) on 127.0.0.1 with ephemeral ports, built or found by
 * scripts/ensure-consul.sh. Every test that needs Consul goes through here and registers `agent.stop()` in teardown.
 */

const ROOT = resolve(import.meta.dirname, '..', '..')
let consulBin: string | undefined

export function consulBinary(): string {
  if (consulBin) return consulBin
  consulBin = execFileSync('bash', [join(ROOT, 'scripts', 'ensure-consul.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 20 * 60_000,
  }).trim()
  return consulBin
}

export interface ConsulOptions {
  /** dns_config.enable_truncate: set the TC bit when a UDP answer is cut (nginx then retries over TCP). */
  enableTruncate?: boolean
  /** dns_config.only_passing: drop `warning` instances from DNS answers. */
  onlyPassing?: boolean
  /** Extra agent configuration merged at the top level. */
  extra?: Record<string, unknown>
  /** Node name (distinct names for several agents). */
  nodeName?: string
  /** Run as a server of a cluster (not -dev): expect this many servers and join these serf_lan addresses. */
  cluster?: { bootstrapExpect: number; join: string[] }
}

export interface ServiceRegistration {
  ID?: string
  Name: string
  Address?: string
  Port?: number
  Tags?: string[]
  Meta?: Record<string, string>
  Weights?: { Passing: number; Warning: number }
  Check?: Record<string, unknown>
  Checks?: Record<string, unknown>[]
}

export class ConsulAgent {
  readonly httpPort: number
  readonly dnsPort: number
  readonly ports: Record<string, number>
  readonly dir: string
  readonly options: ConsulOptions
  private proc: ChildProcess | null = null
  private output = ''

  constructor(ports: Record<string, number>, dir: string, options: ConsulOptions) {
    this.ports = ports
    this.httpPort = ports.http!
    this.dnsPort = ports.dns!
    this.dir = dir
    this.options = options
  }

  get httpAddr(): string {
    return `http://127.0.0.1:${this.httpPort}`
  }
  get dnsAddr(): string {
    return `127.0.0.1:${this.dnsPort}`
  }
  get pid(): number | undefined {
    return this.proc?.pid
  }
  get isRunning(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null
  }
  get log(): string {
    return this.output
  }

  async start(): Promise<void> {
    if (this.isRunning) return
    const cfg = {
      ports: {
        dns: this.ports.dns,
        http: this.ports.http,
        https: -1,
        grpc: -1,
        grpc_tls: -1,
        serf_lan: this.ports.serf_lan,
        serf_wan: this.ports.serf_wan,
        server: this.ports.server,
      },
      dns_config: {
        enable_truncate: this.options.enableTruncate ?? false,
        only_passing: this.options.onlyPassing ?? false,
      },
      log_level: 'warn',
      disable_update_check: true,
      ...this.options.extra,
    }
    const cfgFile = join(this.dir, 'agent.json')
    writeFileSync(cfgFile, JSON.stringify(cfg))
    this.output = ''
    const c = this.options.cluster
    const mode = c
      ? [
          '-server',
          '-bootstrap-expect',
          String(c.bootstrapExpect),
          '-data-dir',
          join(this.dir, 'data'),
          ...c.join.flatMap((j) => ['-retry-join', j]),
          '-retry-interval',
          '1s',
        ]
      : ['-dev']
    const proc = spawn(
      consulBinary(),
      [
        'agent',
        ...mode,
        '-bind',
        '127.0.0.1',
        '-client',
        '127.0.0.1',
        '-node',
        this.options.nodeName ?? 'consul-lb-test',
        '-config-file',
        cfgFile,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    this.proc = proc
    const keep = (b: Buffer) => {
      this.output = (this.output + b.toString()).slice(-20000)
    }
    proc.stdout!.on('data', keep)
    proc.stderr!.on('data', keep)
    const deadline = Date.now() + (c ? 90_000 : 60_000)
    while (Date.now() < deadline) {
      if (!this.isRunning) throw new Error(`consul exited (${proc.exitCode ?? proc.signalCode}):\n${this.output}`)
      try {
        const leader = await fetch(`${this.httpAddr}/v1/status/leader`, { signal: AbortSignal.timeout(1000) })
        const text = await leader.text()
        if (leader.ok && text.length > 4) {
          // The catalog answers before DNS is ready for services on a fresh dev agent; wait until the node is listed.
          const nodes = (await (await fetch(`${this.httpAddr}/v1/catalog/nodes`)).json()) as unknown[]
          if (nodes.length > 0) return
        }
      } catch {
        /* not listening yet: keep polling until the deadline */
      }
      await sleep(100)
    }
    await this.stop()
    throw new Error(`consul did not become ready within 60 s:\n${this.output}`)
  }

  /** Stops the agent this helper started (by PID). A dev agent keeps no state: the next start() is empty. */
  async stop(): Promise<void> {
    const proc = this.proc
    if (!proc || !this.isRunning) {
      this.proc = null
      return
    }
    const exited = new Promise<void>((r) => proc.once('exit', () => r()))
    proc.kill('SIGTERM')
    const timer = setTimeout(() => {
      if (proc.exitCode === null) proc.kill('SIGKILL')
    }, 5000)
    await exited
    clearTimeout(timer)
    this.proc = null
  }

  async api(method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await fetch(`${this.httpAddr}${path}`, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    })
    const text = await res.text()
    if (!res.ok) throw new Error(`consul ${method} ${path}: ${res.status} ${text}`)
    return text ? JSON.parse(text) : null
  }

  async register(svc: ServiceRegistration): Promise<void> {
    await this.api('PUT', '/v1/agent/service/register', svc)
  }
  async deregister(id: string): Promise<void> {
    await this.api('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`)
  }
  async maintenance(id: string, enable: boolean): Promise<void> {
    await this.api('PUT', `/v1/agent/service/maintenance/${encodeURIComponent(id)}?enable=${enable}&reason=test`)
  }
  async checkUpdate(checkId: string, status: 'pass' | 'warn' | 'fail'): Promise<void> {
    await this.api('PUT', `/v1/agent/check/${status}/${encodeURIComponent(checkId)}`)
  }

  /** Passing instances of a service as the health API sees them (what DNS will answer). */
  async passing(service: string): Promise<unknown[]> {
    return (await this.api('GET', `/v1/health/service/${service}?passing=true`)) as unknown[]
  }

  /** Waits until `count` instances of `service` pass their checks. */
  async waitPassing(service: string, count: number, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    let n = -1
    while (Date.now() < deadline) {
      // During a leader election the API answers 500 for a moment: keep asking until the deadline.
      n = await this.passing(service).then(
        (l) => l.length,
        () => -1,
      )
      if (n === count) return
      await sleep(100)
    }
    throw new Error(`${service}: ${n} passing instances, wanted ${count}`)
  }
}

/** Starts a dev agent; pass the tap test to have it stopped and its folder removed in teardown, even on failure. */
export async function startConsul(
  t?: { teardown(fn: () => unknown): void },
  options: ConsulOptions = {},
): Promise<ConsulAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'consul-lb-consul-'))
  let lastErr: unknown
  for (let attempt = 0; attempt < 3; attempt++) {
    const [dns, http, serfLan, serfWan, server] = await freePorts(5)
    const agent = new ConsulAgent(
      { dns: dns!, http: http!, serf_lan: serfLan!, serf_wan: serfWan!, server: server! },
      dir,
      options,
    )
    try {
      await agent.start()
      t?.teardown(async () => {
        await agent.stop()
        rmSync(dir, { recursive: true, force: true })
      })
      return agent
    } catch (err) {
      lastErr = err // most likely a port taken between freePorts() and Consul's bind: try new ports
      await agent.stop()
    }
  }
  rmSync(dir, { recursive: true, force: true })
  throw lastErr
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/**
 * Three Consul servers on 127.0.0.1 forming one cluster (raft quorum 2 of 3): for failover between DNS servers.
 * All are stopped and their folders removed in teardown.
 */
export async function startConsulCluster(t: { teardown(fn: () => unknown): void }, size = 3): Promise<ConsulAgent[]> {
  const dirs = Array.from({ length: size }, () => mkdtempSync(join(tmpdir(), 'consul-lb-cluster-')))
  const ports = await freePorts(5 * size)
  const agents = dirs.map((dir, i) => {
    const [dns, http, serfLan, serfWan, server] = ports.slice(i * 5, i * 5 + 5) as [
      number,
      number,
      number,
      number,
      number,
    ]
    return { dir, ports: { dns, http, serf_lan: serfLan, serf_wan: serfWan, server } }
  })
  const joinAddrs = agents.map((a) => `127.0.0.1:${a.ports.serf_lan}`)
  const out = agents.map(
    (a, i) =>
      new ConsulAgent(a.ports, a.dir, {
        nodeName: `server-${i + 1}`,
        cluster: { bootstrapExpect: size, join: joinAddrs.filter((_, k) => k !== i) },
      }),
  )
  t.teardown(async () => {
    await Promise.all(out.map((a) => a.stop()))
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })
  await Promise.all(out.map((a) => a.start()))
  return out
}
