import type { Dispatcher } from 'undici'
import { undici } from '../lazy.js'
import type { Logger } from '../log.js'
import { type TlsFailure, tlsFailureOf } from '../tls/failure.js'
import type { ConsulConnection } from './connection.js'
import { ConsulCredentials } from './credentials.js'
import { ConsulAclError, ConsulApiError, ConsulTlsError, type TlsContext, transportError } from './errors.js'

export interface ConsulClientOptions {
  connection: ConsulConnection
  /** Timeout of an ordinary call; blocking queries add their wait time to it. */
  timeoutMs?: number
  /** Token and TLS files are looked at for changes at most this often (and at once after a TLS or ACL failure). */
  recheckMs?: number
  /** Credential reloads and unusable rotated files are logged here. */
  log?: Logger
}

/** What an API call is for, so a 403 can say which operation needed which permission. */
export interface Operation {
  /** "register service \"web\"" */
  what: string
  /** The permission it needs when Consul's answer does not say: "service:write on \"web\"". */
  needs: string | null
}

export interface CallResult<T> {
  value: T
  index: string | null
  /** Consul removed entries the token may not read (X-Consul-Results-Filtered-By-ACLs; not sent for anonymous). */
  filteredByAcls: boolean
}

/** Consul's agent service definition as the registrator writes it (PascalCase like the API). */
export interface AgentServiceRegistration {
  ID: string
  Name: string
  Address?: string
  Port?: number
  Tags?: string[]
  Meta?: Record<string, string>
  Check?: Record<string, unknown>
  Checks?: Record<string, unknown>[]
  EnableTagOverride?: boolean
}

export interface AgentService {
  ID: string
  Service: string
  Address: string
  Port: number
  Tags: string[] | null
  Meta: Record<string, string> | null
}

/** One entry of `/v1/agent/checks` (the fields the registrator reads). */
export interface AgentCheck {
  CheckID: string
  ServiceID: string
  Status: string
  /** For a maintenance check: the reason given when it was enabled. */
  Notes?: string
}

export interface BlockingResult<T> {
  index: string
  value: T
  filteredByAcls: boolean
}

/** One entry of `/v1/health/service/<name>`: an instance with its checks. */
export interface HealthEntry {
  Node: { Node: string; Address: string }
  Service: { ID: string; Service: string; Address: string; Port: number; Tags: string[] | null }
  Checks: { CheckID: string; Status: string; ServiceID: string; Name: string; Notes?: string; Output?: string }[]
}

/** `/v1/acl/token/self` without the secret (which is dropped as soon as the answer is parsed). */
export interface TokenInfo {
  accessorId: string
  description: string
  policies: string[]
  /** ServiceIdentities, NodeIdentities, roles and templated policies, by name. */
  identities: string[]
  expirationTime: string | null
}

/**
 * A small client for the parts of Consul's HTTP API we use, over HTTP, HTTPS (CA, client certificate, server name) or
 * a unix socket. One undici Agent per client (keep-alive to the agent), rebuilt when the TLS files change; the token
 * is read from its file when that changes. Every call has a timeout and fails with a ConsulApiError carrying a stable
 * code: a 403 is a ConsulAclError naming the operation and the permission it needs, a handshake failure a
 * ConsulTlsError naming the certificate problem. The token never appears in an error or a log line.
 */
export class ConsulClient {
  readonly address: string
  readonly connection: ConsulConnection
  readonly credentials: ConsulCredentials
  /** The agent's `default_policy` as its last answer said (X-Consul-Default-Acl-Policy); null: ACLs off or unknown. */
  aclDefaultPolicy: 'allow' | 'deny' | null = null
  private readonly origin: string
  private readonly timeoutMs: number
  private readonly socketPath: string | null
  private readonly pathPrefix: string
  private dispatcher: Dispatcher
  private tlsGeneration = 0
  private forceRecheck = false

  constructor(opts: ConsulClientOptions) {
    this.connection = opts.connection
    this.address = opts.connection.address.replace(/\/+$/, '')
    this.timeoutMs = opts.timeoutMs ?? 10_000
    const log = opts.log
    this.credentials = new ConsulCredentials(opts.connection, {
      ...(opts.recheckMs !== undefined ? { recheckMs: opts.recheckMs } : {}),
      onChange: (what, err) => {
        if (err)
          log?.error(
            { code: err.code, file: err.path },
            `changed ${what} file not usable; keeping the previous one: ${err.message}`,
          )
        else log?.info({ what }, `Consul ${what === 'tls' ? 'TLS files' : 'token file'} changed; using the new one`)
      },
    })
    const u = new URL(this.address)
    const scheme = opts.connection.tls ? 'https' : 'http'
    if (u.protocol === 'unix:') {
      // undici speaks HTTP over the socket; the origin's host is only sent as the Host header.
      this.socketPath = decodeURIComponent(u.pathname)
      this.origin = `${scheme}://localhost`
      this.pathPrefix = ''
    } else {
      this.socketPath = null
      this.origin = `${scheme}://${u.host}`
      // An API gateway's prefix (Consul's PathPrefix), already without its trailing slash.
      this.pathPrefix = u.pathname === '/' ? '' : u.pathname
    }
    this.tlsGeneration = this.credentials.tls?.generation ?? 0
    this.dispatcher = this.newDispatcher()
  }

  private newDispatcher(): Dispatcher {
    return new (undici().Agent)({
      keepAliveTimeout: 10_000,
      connections: 8,
      connect: {
        ...this.credentials.connectOptions(),
        ...(this.socketPath ? { socketPath: this.socketPath } : {}),
        timeout: this.timeoutMs,
      },
    })
  }

  /** Re-reads changed credential files; a new TLS generation gets a new connection pool (new handshakes). */
  private currentDispatcher(): Dispatcher {
    this.credentials.refresh(this.forceRecheck)
    this.forceRecheck = false
    const gen = this.credentials.tls?.generation ?? 0
    if (gen !== this.tlsGeneration) {
      this.tlsGeneration = gen
      const old = this.dispatcher
      this.dispatcher = this.newDispatcher()
      // In-flight calls (a watcher's blocking query) finish on the old connections.
      old.close().catch(() => undefined)
    }
    return this.dispatcher
  }

  async call<T>(
    method: 'GET' | 'PUT' | 'POST' | 'DELETE',
    path: string,
    body?: unknown,
    extraWaitMs = 0,
    op: Operation = { what: `${method} ${path.replace(/\?.*$/, '')}`, needs: null },
  ): Promise<CallResult<T>> {
    const dispatcher = this.currentDispatcher()
    const token = this.credentials.token
    const headers: Record<string, string> = {}
    if (token) headers['x-consul-token'] = token
    if (body !== undefined) headers['content-type'] = 'application/json'
    const timeout = this.timeoutMs + extraWaitMs
    let res: Dispatcher.ResponseData
    let text: string
    try {
      res = await undici().request(`${this.origin}${this.pathPrefix}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        dispatcher,
        headersTimeout: timeout,
        bodyTimeout: timeout,
      })
      // Inside the try: a body cut off or stalled (agent restarting mid-answer) is a transport failure with a code too.
      text = await res.body.text()
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
        throw new ConsulApiError('CLB_CONSUL_TIMEOUT', `Consul ${method} ${path} timed out after ${timeout} ms`, null, {
          cause: err,
        })
      }
      const tls = this.tlsContext()
      const e = transportError(err, this.address, tls, tls ? await this.tlsFailure(err, tls) : null)
      if (e instanceof ConsulTlsError) this.forceRecheck = true
      throw e
    }
    const policy = res.headers['x-consul-default-acl-policy']
    if (policy === 'allow' || policy === 'deny') this.aclDefaultPolicy = policy
    if (res.statusCode === 403) {
      this.forceRecheck = true
      throw this.aclError(op, text, res.statusCode)
    }
    if (res.statusCode === 400 && /HTTP request to an HTTPS server/i.test(text))
      throw transportError(null, this.address, null, { problem: 'tls-required', detail: text.trim() })
    if (res.statusCode >= 300) {
      throw new ConsulApiError(
        'CLB_CONSUL_HTTP',
        this.redact(`Consul ${method} ${path} answered ${res.statusCode}: ${text.slice(0, 300).trim()}`),
        res.statusCode,
      )
    }
    const index = res.headers['x-consul-index']
    let value: T
    try {
      value = (text ? JSON.parse(text) : null) as T
    } catch (err) {
      // A proxy or load balancer in front of the agent answering with an HTML page, for example.
      throw new ConsulApiError(
        'CLB_CONSUL_BAD_RESPONSE',
        this.redact(`Consul ${method} ${path}: answer is not JSON (${text.slice(0, 100).trim()})`),
        res.statusCode,
        { cause: err },
      )
    }
    return {
      value,
      index: typeof index === 'string' ? index : null,
      filteredByAcls: res.headers['x-consul-results-filtered-by-acls'] === 'true',
    }
  }

  /** The TLS problem behind a failed call, reading the agent's alert with a probe when it just hung up. */
  private tlsFailure(err: unknown, tls: TlsContext): Promise<TlsFailure | null> {
    const u = new URL(this.origin)
    return tlsFailureOf(err, tls, {
      target: this.socketPath
        ? { socketPath: this.socketPath }
        : { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 443) },
      connect: this.credentials.connectOptions(),
      timeoutMs: Math.min(this.timeoutMs, 5000),
    })
  }

  private tlsContext(): TlsContext | null {
    const tls = this.connection.tls
    return tls
      ? {
          serverName: tls.serverName,
          hasClientCert: tls.certFile !== null,
          clientCertValidTo: this.credentials.tls?.material.clientCertValidTo ?? null,
        }
      : null
  }

  /** Consul's 403 text names the missing permission ("lacks permission 'service:write' on \"web\""): keep it. */
  private aclError(op: Operation, text: string, status: number): ConsulAclError {
    const who = this.credentials.tokenSource
    if (/ACL not found/i.test(text))
      return new ConsulAclError(
        op.what,
        op.needs,
        'unknown-token',
        `Consul denied ${op.what}: it does not know ${who} (ACL not found: a typo, a deleted or expired token, or one from another cluster)`,
        status,
      )
    const m = /lacks permission '([^']+)'(?: on "([^"]*)")?/.exec(text)
    const permission = m ? `${m[1]}${m[2] !== undefined ? ` on "${m[2]}"` : ''}` : op.needs
    return new ConsulAclError(
      op.what,
      permission,
      'permission',
      this.redact(
        `Consul denied ${op.what}: ${who} lacks ${permission ?? 'a permission'} (ACL default policy ${this.aclDefaultPolicy ?? 'deny'})`,
      ),
      status,
    )
  }

  /** Belt and braces: no message built from an answer may carry the token. */
  private redact(s: string): string {
    const token = this.credentials.token
    return token ? s.split(token).join('<token>') : s
  }

  async agentServices(): Promise<Record<string, AgentService>> {
    return (
      await this.call<Record<string, AgentService>>('GET', '/v1/agent/services', undefined, 0, {
        what: "list the agent's services",
        needs: 'service:read',
      })
    ).value
  }

  async agentChecks(): Promise<Record<string, AgentCheck>> {
    return (
      (
        await this.call<Record<string, AgentCheck>>('GET', '/v1/agent/checks', undefined, 0, {
          what: "list the agent's checks",
          needs: 'service:read',
        })
      ).value ?? {}
    )
  }

  async registerService(reg: AgentServiceRegistration): Promise<void> {
    await this.call('PUT', '/v1/agent/service/register', reg, 0, {
      what: `register service "${reg.Name}" (${reg.ID})`,
      needs: `service:write on "${reg.Name}"`,
    })
  }

  async deregisterService(id: string, name?: string): Promise<void> {
    await this.call('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`, undefined, 0, {
      what: `deregister service ${id}`,
      needs: name ? `service:write on "${name}"` : 'service:write',
    })
  }

  async setServiceMaintenance(id: string, enable: boolean, reason: string): Promise<void> {
    await this.call(
      'PUT',
      `/v1/agent/service/maintenance/${encodeURIComponent(id)}?enable=${enable}&reason=${encodeURIComponent(reason)}`,
      undefined,
      0,
      { what: `${enable ? 'enable' : 'disable'} maintenance of ${id}`, needs: 'service:write' },
    )
  }

  async updateTtlCheck(checkId: string, status: 'passing' | 'warning' | 'critical', output: string): Promise<void> {
    await this.call(
      'PUT',
      `/v1/agent/check/update/${encodeURIComponent(checkId)}`,
      { Status: status, Output: output },
      0,
      { what: `update check ${checkId}`, needs: 'service:write' },
    )
  }

  /** The raft leader's address (`/v1/status/leader`, no ACL needed): whether the agent answers at all. */
  async leader(): Promise<string> {
    return (await this.call<string>('GET', '/v1/status/leader')).value ?? ''
  }

  /** `/v1/agent/self`: needs agent:read on the agent's node name. */
  async agentSelf(): Promise<AgentSelf> {
    return (
      await this.call<AgentSelf>('GET', '/v1/agent/self', undefined, 0, {
        what: "read the agent's configuration (/v1/agent/self)",
        needs: 'agent:read',
      })
    ).value
  }

  /**
   * `/v1/catalog/services` as a blocking query: returns when the index moves past `index` or after `waitS` seconds.
   * Service name → tags. Under ACLs the answer holds only the services the token may read (and nothing for a token
   * that may read none): see `filteredByAcls` and `aclDefaultPolicy`.
   */
  async catalogServices(index?: string, waitS = 30): Promise<BlockingResult<Record<string, string[]>>> {
    const q = index ? `?index=${encodeURIComponent(index)}&wait=${waitS}s` : ''
    const r = await this.call<Record<string, string[]>>(
      'GET',
      `/v1/catalog/services${q}`,
      undefined,
      index ? waitS * 1000 + 5000 : 0,
      { what: "list the catalog's services", needs: 'service:read and node:read' },
    )
    const value = r.value ?? {}
    // Consul lists itself ("consul") to anyone who may read services at all, so an empty answer under a deny policy
    // means the token may read nothing: say so rather than let a caller take it for an empty catalog.
    if (Object.keys(value).length === 0 && (r.filteredByAcls || this.aclDefaultPolicy === 'deny'))
      throw new ConsulAclError(
        "list the catalog's services",
        'service:read',
        'permission',
        `Consul's catalog lists no service readable with ${this.credentials.tokenSource} (ACL default policy deny): the token needs service:read on the services to list and node:read on their nodes (service_prefix "" { policy = "read" } and node_prefix "" { policy = "read" })`,
        200,
      )
    return { index: r.index ?? '0', value, filteredByAcls: r.filteredByAcls }
  }

  /** Every instance of a service with its checks (`/v1/health/service`), passing or not; needs service and node read. */
  async healthService(
    service: string,
    opts: { tag?: string | null; datacenter?: string | null } = {},
  ): Promise<{ entries: HealthEntry[]; filteredByAcls: boolean }> {
    const q = new URLSearchParams()
    if (opts.tag) q.set('tag', opts.tag)
    if (opts.datacenter) q.set('dc', opts.datacenter)
    const qs = q.size ? `?${q}` : ''
    const r = await this.call<HealthEntry[]>(
      'GET',
      `/v1/health/service/${encodeURIComponent(service)}${qs}`,
      undefined,
      0,
      { what: `read the health of service "${service}"`, needs: `service:read on "${service}" and node:read` },
    )
    return { entries: r.value ?? [], filteredByAcls: r.filteredByAcls }
  }

  /** The token's own description (`/v1/acl/token/self`); the secret in the answer is dropped here. */
  async tokenSelf(): Promise<TokenInfo> {
    const r = await this.call<{
      AccessorID: string
      Description?: string
      Policies?: { Name: string }[] | null
      Roles?: { Name: string }[] | null
      ServiceIdentities?: { ServiceName: string }[] | null
      NodeIdentities?: { NodeName: string }[] | null
      TemplatedPolicies?: { TemplateName: string }[] | null
      ExpirationTime?: string
    }>('GET', '/v1/acl/token/self', undefined, 0, { what: 'read the token (/v1/acl/token/self)', needs: null })
    const v = r.value
    return {
      accessorId: v.AccessorID,
      description: v.Description ?? '',
      policies: (v.Policies ?? []).map((p) => p.Name),
      identities: [
        ...(v.Roles ?? []).map((x) => `role ${x.Name}`),
        ...(v.ServiceIdentities ?? []).map((x) => `service identity ${x.ServiceName}`),
        ...(v.NodeIdentities ?? []).map((x) => `node identity ${x.NodeName}`),
        ...(v.TemplatedPolicies ?? []).map((x) => `templated policy ${x.TemplateName}`),
      ],
      expirationTime: v.ExpirationTime ?? null,
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close()
  }

  /** Like close(), but aborts in-flight calls (a watcher's abandoned blocking query) instead of waiting for them. */
  async destroy(): Promise<void> {
    await this.dispatcher.destroy()
  }
}

/** The parts of `/v1/agent/self` we read (doctor, nginx --check). */
export interface AgentSelf {
  Config: { NodeName: string; Datacenter: string; Version?: string; Server?: boolean }
  DebugConfig?: {
    DNSEnableTruncate?: boolean
    DNSUDPAnswerLimit?: number
    DNSOnlyPassing?: boolean
    DNSServiceTTL?: Record<string, string | number> | null
    DNSNodeTTL?: string | number
    DNSAllowStale?: boolean
    DNSDomain?: string
    DNSPort?: number
    ACLsEnabled?: boolean
    ACLResolverSettings?: { ACLDefaultPolicy?: string; ACLsEnabled?: boolean }
    ACLDefaultPolicy?: string
    ACLTokens?: Record<string, unknown>
  }
}
