import { Agent, type Dispatcher, request } from 'undici'
import { ConsulApiError } from './errors.js'

export interface ConsulClientOptions {
  /** http://127.0.0.1:8500 (https works; unix sockets are not supported by Consul's API here). */
  address: string
  /** ACL token, sent as X-Consul-Token. */
  token?: string | undefined
  /** Timeout of an ordinary call; blocking queries add their wait time to it. */
  timeoutMs?: number
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
}

/**
 * A small client for the parts of Consul's HTTP API we use. One undici Agent per client (keep-alive to the agent);
 * every call has a timeout and fails with a ConsulApiError carrying a stable code.
 */
export class ConsulClient {
  readonly address: string
  private readonly token: string | undefined
  private readonly timeoutMs: number
  private readonly dispatcher: Dispatcher

  constructor(opts: ConsulClientOptions) {
    this.address = opts.address.replace(/\/+$/, '')
    this.token = opts.token
    this.timeoutMs = opts.timeoutMs ?? 10_000
    this.dispatcher = new Agent({ keepAliveTimeout: 10_000, connections: 8 })
  }

  async call<T>(
    method: 'GET' | 'PUT' | 'POST' | 'DELETE',
    path: string,
    body?: unknown,
    extraWaitMs = 0,
  ): Promise<{ value: T; index: string | null }> {
    const headers: Record<string, string> = {}
    if (this.token) headers['x-consul-token'] = this.token
    if (body !== undefined) headers['content-type'] = 'application/json'
    const timeout = this.timeoutMs + extraWaitMs
    let res: Dispatcher.ResponseData
    let text: string
    try {
      res = await request(`${this.address}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        dispatcher: this.dispatcher,
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
      throw new ConsulApiError(
        'CLB_CONSUL_UNREACHABLE',
        `Consul at ${this.address} unreachable (${code ?? (err as Error).message})`,
        null,
        { cause: err },
      )
    }
    if (res.statusCode >= 300) {
      throw new ConsulApiError(
        'CLB_CONSUL_HTTP',
        `Consul ${method} ${path} answered ${res.statusCode}: ${text.slice(0, 300).trim()}`,
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
        `Consul ${method} ${path}: answer is not JSON (${text.slice(0, 100).trim()})`,
        res.statusCode,
        { cause: err },
      )
    }
    return { value, index: typeof index === 'string' ? index : null }
  }

  async agentServices(): Promise<Record<string, AgentService>> {
    return (await this.call<Record<string, AgentService>>('GET', '/v1/agent/services')).value
  }

  async agentChecks(): Promise<Record<string, AgentCheck>> {
    return (await this.call<Record<string, AgentCheck>>('GET', '/v1/agent/checks')).value ?? {}
  }

  async registerService(reg: AgentServiceRegistration): Promise<void> {
    await this.call('PUT', '/v1/agent/service/register', reg)
  }

  async deregisterService(id: string): Promise<void> {
    await this.call('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`)
  }

  async setServiceMaintenance(id: string, enable: boolean, reason: string): Promise<void> {
    await this.call(
      'PUT',
      `/v1/agent/service/maintenance/${encodeURIComponent(id)}?enable=${enable}&reason=${encodeURIComponent(reason)}`,
    )
  }

  async updateTtlCheck(checkId: string, status: 'passing' | 'warning' | 'critical', output: string): Promise<void> {
    await this.call('PUT', `/v1/agent/check/update/${encodeURIComponent(checkId)}`, { Status: status, Output: output })
  }

  async agentSelf(): Promise<{ Config: { NodeName: string; Datacenter: string } }> {
    return (await this.call<{ Config: { NodeName: string; Datacenter: string } }>('GET', '/v1/agent/self')).value
  }

  /**
   * `/v1/catalog/services` as a blocking query: returns when the index moves past `index` or after `waitS` seconds.
   * Service name → tags.
   */
  async catalogServices(index?: string, waitS = 30): Promise<BlockingResult<Record<string, string[]>>> {
    const q = index ? `?index=${encodeURIComponent(index)}&wait=${waitS}s` : ''
    const r = await this.call<Record<string, string[]>>(
      'GET',
      `/v1/catalog/services${q}`,
      undefined,
      index ? waitS * 1000 + 5000 : 0,
    )
    return { index: r.index ?? '0', value: r.value ?? {} }
  }

  async close(): Promise<void> {
    await this.dispatcher.close()
  }

  /** Like close(), but aborts in-flight calls (a watcher's abandoned blocking query) instead of waiting for them. */
  async destroy(): Promise<void> {
    await this.dispatcher.destroy()
  }
}
