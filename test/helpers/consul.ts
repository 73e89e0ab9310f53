import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { Agent, fetch as undiciFetch } from 'undici'
import type { ConsulConnection, ConsulTls } from '../../src/consul/connection.js'
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
  /**
   * HTTPS only (no plain HTTP port) with `verify_incoming`, and ACLs with default deny: see startSecureConsul.
   * The helper's own API calls present `client` and send `token`.
   */
  secure?: { tls: TlsMaterial; serverCert?: 'dc1' | 'dc2' }
}

/** TLS files made by `consul tls ca create` / `consul tls cert create` in one folder. */
export interface TlsMaterial {
  dir: string
  caFile: string
  caKeyFile: string
  serverCert: string
  serverKey: string
  /** A server certificate for another datacenter (server.dc2.consul): the wrong name for a dc1 client. */
  otherServerCert: string
  otherServerKey: string
  clientCert: string
  clientKey: string
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
  /** Sent by the helper's own API calls (the management token once ACLs are bootstrapped). */
  token: string | null = null
  private readonly dispatcher: Agent | undefined

  constructor(ports: Record<string, number>, dir: string, options: ConsulOptions) {
    this.ports = ports
    this.httpPort = ports.http!
    this.dnsPort = ports.dns!
    this.dir = dir
    this.options = options
    const tls = options.secure?.tls
    this.dispatcher = tls
      ? new Agent({
          connect: {
            ca: readFileSync(tls.caFile),
            cert: readFileSync(tls.clientCert),
            key: readFileSync(tls.clientKey),
          },
        })
      : undefined
  }

  get httpAddr(): string {
    return `${this.options.secure ? 'https' : 'http'}://127.0.0.1:${this.httpPort}`
  }

  /** fetch against this agent: with the client certificate and the helper's token when the agent is secure. */
  fetch(path: string, init: { method?: string; body?: string; token?: string | null } = {}): Promise<Response> {
    const token = init.token === undefined ? this.token : init.token
    return undiciFetch(`${this.httpAddr}${path}`, {
      method: init.method ?? 'GET',
      ...(init.body !== undefined ? { body: init.body } : {}),
      headers: token ? { 'x-consul-token': token } : {},
      signal: AbortSignal.timeout(10_000),
      ...(this.dispatcher ? { dispatcher: this.dispatcher } : {}),
    }) as unknown as Promise<Response>
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
    const secure = this.options.secure
    const cfg = {
      ports: {
        dns: this.ports.dns,
        http: secure ? -1 : this.ports.http,
        https: secure ? this.ports.http : -1,
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
      ...(secure ? secureAgentConfig(secure) : {}),
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
        const leader = await this.fetch('/v1/status/leader')
        const text = await leader.text()
        // A secure agent is ready once it has a leader: its node is listed only after ACLs are bootstrapped and it
        // has an agent token (startSecureConsul does both).
        if (leader.ok && text.length > 4 && secure) return
        if (leader.ok && text.length > 4) {
          // The catalog answers before DNS is ready for services on a fresh dev agent; wait until the node is listed.
          const nodes = (await (await this.fetch('/v1/catalog/nodes')).json()) as unknown[]
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
    const res = await this.fetch(path, { method, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
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

/**
 * TLS material as an operator makes it: `consul tls ca create`, then server certificates for dc1 and dc2 and a client
 * certificate (`consul tls cert create -server|-client`), all in `dir`.
 */
export function makeTlsMaterial(dir: string, opts: { clientDays?: number } = {}): TlsMaterial {
  const consul = (args: string[]) => execFileSync(consulBinary(), ['tls', ...args], { cwd: dir, stdio: 'ignore' })
  consul(['ca', 'create'])
  consul(['cert', 'create', '-server', '-dc', 'dc1'])
  consul(['cert', 'create', '-server', '-dc', 'dc2'])
  consul(['cert', 'create', '-client', '-dc', 'dc1', ...(opts.clientDays ? ['-days', String(opts.clientDays)] : [])])
  const f = (name: string) => join(dir, name)
  return {
    dir,
    caFile: f('consul-agent-ca.pem'),
    caKeyFile: f('consul-agent-ca-key.pem'),
    serverCert: f('dc1-server-consul-0.pem'),
    serverKey: f('dc1-server-consul-0-key.pem'),
    otherServerCert: f('dc2-server-consul-0.pem'),
    otherServerKey: f('dc2-server-consul-0-key.pem'),
    clientCert: f('dc1-client-consul-0.pem'),
    clientKey: f('dc1-client-consul-0-key.pem'),
  }
}

/** One more client certificate from the same CA, valid `days` (a certificate about to expire). */
export function makeClientCert(tls: TlsMaterial, days: number): { cert: string; key: string } {
  const before = new Set(readdirSync(tls.dir))
  execFileSync(consulBinary(), ['tls', 'cert', 'create', '-client', '-dc', 'dc1', '-days', String(days)], {
    cwd: tls.dir,
    stdio: 'ignore',
  })
  const made = readdirSync(tls.dir).filter((f) => !before.has(f))
  return {
    cert: join(tls.dir, made.find((f) => !f.endsWith('-key.pem'))!),
    key: join(tls.dir, made.find((f) => f.endsWith('-key.pem'))!),
  }
}

/**
 * A certificate signed by the CA of `tls` with openssl, for what `consul tls cert create` cannot make: one that has
 * already expired (`days` < 0: its end lies before its start) or one without Consul's usual names (`sans`, e.g.
 * `DNS:docker.test`: a server that is not who the client expects). Written into tls.dir as `<name>.pem`/`-key.pem`.
 */
export function signCert(
  tls: TlsMaterial,
  opts: { name: string; days: number; usage: 'clientAuth' | 'serverAuth'; sans?: string[] },
): { cert: string; key: string } {
  const f = (suffix: string) => join(tls.dir, `${opts.name}${suffix}`)
  const ossl = (args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' })
  ossl(
    ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('-key.pem')].concat([
      '-subj',
      `/CN=${opts.name}`,
      '-out',
      f('.csr'),
    ]),
  )
  writeFileSync(
    f('.ext'),
    `extendedKeyUsage=${opts.usage}\n${opts.sans?.length ? `subjectAltName=${opts.sans.join(',')}\n` : ''}`,
  )
  ossl(
    ['x509', '-req', '-in', f('.csr'), '-CA', tls.caFile, '-CAkey', tls.caKeyFile, '-CAcreateserial'].concat([
      '-CAserial',
      f('.srl'),
      '-days',
      String(opts.days),
      '-extfile',
      f('.ext'),
      '-out',
      f('.pem'),
    ]),
  )
  return { cert: f('.pem'), key: f('-key.pem') }
}

function secureAgentConfig(secure: NonNullable<ConsulOptions['secure']>): Record<string, unknown> {
  const { tls } = secure
  const other = secure.serverCert === 'dc2'
  return {
    tls: {
      defaults: {
        ca_file: tls.caFile,
        cert_file: other ? tls.otherServerCert : tls.serverCert,
        key_file: other ? tls.otherServerKey : tls.serverKey,
        verify_incoming: true,
        verify_outgoing: true,
      },
    },
    acl: { enabled: true, default_policy: 'deny', enable_token_persistence: false },
  }
}

/** A Consul agent as production runs it: see ConsulOptions.secure. Its ACL system is bootstrapped here. */
export interface SecureConsul {
  agent: ConsulAgent
  tls: TlsMaterial
  /** The bootstrap (management) token; the helper's own calls use it. */
  managementToken: string
  /** Creates a policy with these rules and a token holding it; returns the token's SecretID. */
  createToken(rules: string, name?: string): Promise<string>
  /** Sets (or with null, clears) the agent's DNS token (`acl.tokens.dns`). */
  setDnsToken(token: string | null): Promise<void>
}

/** Rules the consul-lb commands need (the README's minimal policies), for tests that grant them. */
export const POLICIES = {
  /** Proven sufficient (consul-secure-registrator.test.ts): agent service writes need no node rule. */
  registrator: 'service_prefix "" { policy = "write" }',
  catalogRead: 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }',
  readOnly: 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }',
  dns: 'node_prefix "" { policy = "read" }\nservice_prefix "" { policy = "read" }',
  agent: 'node_prefix "" { policy = "write" }\nservice_prefix "" { policy = "read" }',
  doctor:
    'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\nagent_prefix "" { policy = "read" }',
} as const

/**
 * Starts an HTTPS-only agent (`verify_incoming = true`, its own CA from `consul tls ca create`) with ACLs on and
 * `default_policy = "deny"`, bootstraps ACLs (PUT /v1/acl/bootstrap), and gives the agent its own token (node:write)
 * so its node is in the catalog. No DNS token unless `dnsToken`: Consul DNS then answers NXDOMAIN for every service.
 */
export async function startSecureConsul(
  t: { teardown(fn: () => unknown): void },
  opts: {
    dnsToken?: boolean
    serverCert?: 'dc1' | 'dc2'
    clientDays?: number
    tls?: TlsMaterial
    enableTruncate?: boolean
    /** Extra agent configuration (for example `addresses` with a unix socket). */
    extra?: Record<string, unknown>
  } = {},
): Promise<SecureConsul> {
  const tls = opts.tls ?? makeTlsMaterial(mkdtempSync(join(tmpdir(), 'consul-lb-tls-')), opts)
  if (!opts.tls) t.teardown(() => rmSync(tls.dir, { recursive: true, force: true }))
  const agent = await startConsul(t, {
    secure: { tls, ...(opts.serverCert ? { serverCert: opts.serverCert } : {}) },
    ...(opts.enableTruncate !== undefined ? { enableTruncate: opts.enableTruncate } : {}),
    ...(opts.extra ? { extra: opts.extra } : {}),
  })
  let managementToken = ''
  const deadline = Date.now() + 30_000
  for (;;) {
    // The ACL system answers "not yet initialized" for a moment after the leader is elected.
    const res = await agent.fetch('/v1/acl/bootstrap', { method: 'PUT', token: null })
    const text = await res.text()
    if (res.ok) {
      managementToken = (JSON.parse(text) as { SecretID: string }).SecretID
      break
    }
    if (Date.now() > deadline) throw new Error(`ACL bootstrap failed: ${res.status} ${text}`)
    await sleep(200)
  }
  agent.token = managementToken
  let policies = 0
  const createToken = async (rules: string, name = 'test'): Promise<string> => {
    const policy = (await agent.api('PUT', '/v1/acl/policy', { Name: `${name}-${++policies}`, Rules: rules })) as {
      ID: string
    }
    const token = (await agent.api('PUT', '/v1/acl/token', { Policies: [{ ID: policy.ID }], Description: name })) as {
      SecretID: string
    }
    return token.SecretID
  }
  const setDnsToken = async (token: string | null): Promise<void> => {
    await agent.api('PUT', '/v1/agent/token/dns', { Token: token ?? '' })
  }
  await agent.api('PUT', '/v1/agent/token/agent', { Token: await createToken(POLICIES.agent, 'agent') })
  // The node reaches the catalog at the next anti-entropy sync once the agent has its token.
  const nodeDeadline = Date.now() + 30_000
  while (((await agent.api('GET', '/v1/catalog/nodes')) as unknown[]).length === 0) {
    if (Date.now() > nodeDeadline) throw new Error(`the agent's node never reached the catalog:\n${agent.log}`)
    await sleep(100)
  }
  if (opts.dnsToken) await setDnsToken(await createToken(POLICIES.dns, 'dns'))
  return { agent, tls, managementToken, createToken, setDnsToken }
}

/** A plain-HTTP connection to `address` without a token (for ConsulClient in tests of agents without ACLs). */
export function plainConnection(address: string): ConsulConnection {
  return { address, token: null, tokenFile: null, tls: null }
}

/**
 * A verified mTLS connection to a secure agent: its CA, the client certificate, and `token` (or `tokenFile`).
 * `tls` overrides single files (a wrong CA, a server name).
 */
export function secureConnection(
  s: SecureConsul,
  opts: { token?: string | null; tokenFile?: string | null; tls?: Partial<ConsulTls> } = {},
): ConsulConnection {
  return {
    address: s.agent.httpAddr,
    token: opts.token ?? null,
    tokenFile: opts.tokenFile ?? null,
    tls: {
      caFile: s.tls.caFile,
      caPath: null,
      certFile: s.tls.clientCert,
      keyFile: s.tls.clientKey,
      serverName: null,
      verify: true,
      ...opts.tls,
    },
  }
}

/** The environment an operator of a secure agent has: Consul's own variable names (address, CA, client certificate). */
export function secureEnv(s: SecureConsul, extra: Record<string, string> = {}): Record<string, string> {
  return {
    CONSUL_HTTP_ADDR: s.agent.httpAddr,
    CONSUL_CACERT: s.tls.caFile,
    CONSUL_CLIENT_CERT: s.tls.clientCert,
    CONSUL_CLIENT_KEY: s.tls.clientKey,
    ...extra,
  }
}
