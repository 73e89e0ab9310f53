import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import type { ConnectionOptions } from 'node:tls'
import type { Dispatcher } from 'undici'
import { undici } from '../lazy.js'
import { describeTlsFailure, type TlsFixes, tlsFailureOf } from '../tls/failure.js'
import { DockerError, DockerTlsError } from './errors.js'

/** The parts of `GET /containers/{id}/json` the registrator reads. */
export interface ContainerInspect {
  Id: string
  /** With the leading slash Docker puts there ("/web-1"). */
  Name: string
  State: {
    Status: string
    Running: boolean
    Paused: boolean
    ExitCode: number
    StartedAt?: string
    Health?: { Status: string }
  }
  Config: {
    Image: string
    Env: string[] | null
    Labels: Record<string, string> | null
    ExposedPorts?: Record<string, unknown> | null
    Healthcheck?: { Test?: string[] | null } | null
    StopSignal?: string
  }
  HostConfig: { NetworkMode?: string }
  NetworkSettings: {
    Ports?: Record<string, { HostIp: string; HostPort: string }[] | null> | null
    Networks?: Record<string, { IPAddress?: string; GlobalIPv6Address?: string }> | null
  }
}

export interface ContainerSummary {
  Id: string
  Names: string[]
  /** created, restarting, running, removing, paused, exited, dead */
  State: string
}

export interface DockerEvent {
  Type: string
  Action: string
  Actor: { ID: string; Attributes?: Record<string, string> }
  time: number
  timeNano: number
}

/** The files of a TLS engine endpoint (DOCKER_CERT_PATH's ca.pem, cert.pem, key.pem); null: not given. */
export interface DockerTls {
  /** null: the system's CAs verify the engine. */
  caFile: string | null
  certFile: string | null
  keyFile: string | null
}

export interface DockerClientOptions {
  /** unix:///var/run/docker.sock, http://host:2375, or https://host:2376 (then `tls`). */
  url: string
  tls?: DockerTls | null
  /** Timeout of an ordinary call (the event stream has none: it is meant to stay open). */
  timeoutMs?: number
}

/** The engine's events worth acting on; anything else (exec_*, attach, resize…) is filtered out by the engine. */
export const WATCHED_ACTIONS = ['start', 'die', 'stop', 'kill', 'destroy', 'pause', 'unpause', 'health_status'] as const

/** An event line longer than this is not an event: stop reading rather than buffer without bound. */
const MAX_EVENT_LINE_BYTES = 1 << 20

/**
 * A small Docker Engine API client over the engine's unix socket (or TCP). Unversioned paths: the engine answers
 * with its own API version, and every field read here exists since API 1.25.
 */
export class DockerClient {
  readonly url: string
  private readonly origin: string
  private readonly timeoutMs: number
  private readonly dispatcher: Dispatcher

  /** The TLS connect options of an https:// engine (null otherwise), and when its client certificate ends. */
  private readonly tls: { connect: ConnectionOptions; clientCertValidTo: Date | null } | null

  constructor(opts: DockerClientOptions) {
    this.url = opts.url
    this.timeoutMs = opts.timeoutMs ?? 10_000
    const u = new URL(opts.url)
    if (u.protocol === 'unix:') {
      // undici talks HTTP over the socket; the host part of the origin is only sent as the Host header.
      this.origin = 'http://docker'
      this.tls = null
      this.dispatcher = new (undici().Agent)({
        connect: { socketPath: decodeURIComponent(u.pathname) },
        keepAliveTimeout: 10_000,
      })
    } else {
      this.origin = `${u.protocol === 'https:' ? 'https' : 'http'}://${u.host}`
      const tls = opts.tls
      // Read once: unlike Consul's, an engine's client certificate is not rotated under a running registrator here.
      const cert = tls?.certFile ? readFileSync(tls.certFile) : null
      const connect: ConnectionOptions = {
        ...(tls?.caFile ? { ca: readFileSync(tls.caFile) } : {}),
        ...(cert ? { cert } : {}),
        ...(tls?.keyFile ? { key: readFileSync(tls.keyFile) } : {}),
      }
      this.tls =
        u.protocol === 'https:'
          ? { connect, clientCertValidTo: cert ? new Date(new X509Certificate(cert).validTo) : null }
          : null
      this.dispatcher = new (undici().Agent)({ keepAliveTimeout: 10_000, ...(tls ? { connect } : {}) })
    }
  }

  /**
   * A transport failure as a coded error: a TLS problem as CLB_DOCKER_TLS naming it (reading the engine's alert with a
   * probe when it just hung up, as a refused client certificate looks in TLS 1.3), else unreachable or timeout.
   */
  private async failure(what: string, err: unknown): Promise<DockerError> {
    const code = (err as { code?: string }).code
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT')
      return new DockerError('CLB_DOCKER_TIMEOUT', `Docker ${what} timed out after ${this.timeoutMs} ms`, null, {
        cause: err,
      })
    const tls = this.tls
    const u = new URL(this.origin)
    const f = tls
      ? await tlsFailureOf(
          err,
          { hasClientCert: tls.connect.cert !== undefined, clientCertValidTo: tls.clientCertValidTo },
          {
            target: { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 443) },
            connect: tls.connect,
            timeoutMs: Math.min(this.timeoutMs, 5000),
          },
        )
      : null
    if (f)
      return new DockerTlsError(
        f.problem,
        `Docker at ${this.url}: ${describeTlsFailure(f, 'the engine', DOCKER_TLS_FIXES, tls ?? {})}`,
        {
          cause: err,
        },
      )
    return new DockerError(
      'CLB_DOCKER_UNREACHABLE',
      `Docker at ${this.url} unreachable during ${what} (${code ?? (err as Error).message})`,
      null,
      { cause: err },
    )
  }

  /** An error status as a coded error; Go's "HTTP request to an HTTPS server" is the engine's TLS port. */
  private statusError(what: string, status: number, text: string): DockerError {
    if (status === 400 && /HTTP request to an HTTPS server/i.test(text))
      return new DockerTlsError(
        'tls-required',
        `Docker at ${this.url}: ${describeTlsFailure({ problem: 'tls-required', detail: '' }, 'the engine', DOCKER_TLS_FIXES)}`,
      )
    return new DockerError('CLB_DOCKER_HTTP', `Docker ${what} answered ${status}: ${text.slice(0, 300).trim()}`, status)
  }

  private async call<T>(method: 'GET' | 'POST', path: string, allow404 = false): Promise<T | null> {
    let res: Dispatcher.ResponseData
    let text: string
    try {
      res = await undici().request(`${this.origin}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      })
      text = await res.body.text()
    } catch (err) {
      throw await this.failure(`${method} ${path}`, err)
    }
    if (res.statusCode === 404 && allow404) return null
    if (res.statusCode >= 300) throw this.statusError(`${method} ${path}`, res.statusCode, text)
    try {
      return (text ? JSON.parse(text) : null) as T
    } catch (err) {
      throw new DockerError('CLB_DOCKER_BAD_RESPONSE', `Docker ${method} ${path}: answer is not JSON`, res.statusCode, {
        cause: err,
      })
    }
  }

  async ping(): Promise<void> {
    try {
      const res = await undici().request(`${this.origin}/_ping`, {
        dispatcher: this.dispatcher,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      })
      const text = await res.body.text()
      if (res.statusCode !== 200) throw this.statusError('GET /_ping', res.statusCode, text)
    } catch (err) {
      if (err instanceof DockerError) throw err
      throw await this.failure('GET /_ping', err)
    }
  }

  /** Running and paused containers; with `all`, stopped ones too. */
  async listContainers(all = false): Promise<ContainerSummary[]> {
    return (await this.call<ContainerSummary[]>('GET', `/containers/json${all ? '?all=1' : ''}`)) ?? []
  }

  /** null when the container no longer exists (removed between the event and this call). */
  async inspectContainer(id: string): Promise<ContainerInspect | null> {
    return await this.call<ContainerInspect>('GET', `/containers/${encodeURIComponent(id)}/json`, true)
  }

  /**
   * Follows `/events` until the engine closes it or `signal` aborts. `since` (seconds, with a fractional part) makes the
   * engine replay what it still holds from that time on, so events during a reconnect are not lost. `onOpen` runs once
   * the engine accepted the stream: anything that happens after it is delivered. Resolves never: it rejects with
   * CLB_DOCKER_STREAM_ENDED when the stream closes, or with the transport error.
   */
  async streamEvents(opts: {
    since?: string
    signal: AbortSignal
    onOpen: () => void
    onEvent: (e: DockerEvent) => void
  }): Promise<never> {
    const filters = JSON.stringify({ type: ['container'], event: WATCHED_ACTIONS })
    const path = `/events?filters=${encodeURIComponent(filters)}${opts.since ? `&since=${opts.since}` : ''}`
    let res: Dispatcher.ResponseData
    try {
      res = await undici().request(`${this.origin}${path}`, {
        dispatcher: this.dispatcher,
        signal: opts.signal,
        headersTimeout: this.timeoutMs,
        bodyTimeout: 0,
      })
    } catch (err) {
      throw await this.failure('GET /events', err)
    }
    if (res.statusCode !== 200) throw this.statusError('GET /events', res.statusCode, await res.body.text())
    opts.onOpen()
    let buf = ''
    // A streaming decoder: a multi-byte character (a label value, a container name) split across two chunks must not
    // turn into two replacement characters.
    const decoder = new TextDecoder('utf-8')
    try {
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk as Buffer, { stream: true })
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl).trim()
          buf = buf.slice(nl + 1)
          if (line) opts.onEvent(parseEvent(line))
        }
        if (buf.length > MAX_EVENT_LINE_BYTES)
          throw new DockerError(
            'CLB_DOCKER_BAD_RESPONSE',
            `Docker /events sent a line longer than ${MAX_EVENT_LINE_BYTES} bytes`,
          )
      }
    } catch (err) {
      if (err instanceof DockerError) {
        res.body.destroy()
        throw err
      }
      throw await this.failure('GET /events', err)
    }
    throw new DockerError('CLB_DOCKER_STREAM_ENDED', `Docker at ${this.url} closed the event stream`)
  }

  async close(): Promise<void> {
    await this.dispatcher.destroy()
  }
}

function parseEvent(line: string): DockerEvent {
  let e: DockerEvent
  try {
    e = JSON.parse(line) as DockerEvent
  } catch (err) {
    throw new DockerError(
      'CLB_DOCKER_BAD_RESPONSE',
      `Docker /events sent a line that is not JSON: ${line.slice(0, 100)}`,
      null,
      { cause: err },
    )
  }
  if (typeof e?.Action !== 'string' || typeof e.Actor?.ID !== 'string')
    throw new DockerError(
      'CLB_DOCKER_BAD_RESPONSE',
      `Docker /events sent an event without Action/Actor: ${line.slice(0, 100)}`,
    )
  return e
}

/** How to fix each TLS problem with the engine, in the docker CLI's settings. */
const DOCKER_TLS_FIXES: TlsFixes = {
  'unknown-ca': 'put the CA that signed it in ca.pem of DOCKER_CERT_PATH (--docker-cert-path)',
  'name-mismatch': 'give DOCKER_HOST a name or address the certificate carries',
  'client-cert-required':
    'the engine runs with --tlsverify: put cert.pem and key.pem in DOCKER_CERT_PATH (--docker-cert-path)',
  'client-cert-expired': 'put a new cert.pem and key.pem in DOCKER_CERT_PATH and restart the registrator',
  'client-cert-rejected': "cert.pem must be signed by the CA of dockerd's --tlscacert and allow client authentication",
  'not-tls': "DOCKER_TLS_VERIFY=0 (--docker-tls-verify=false), or the engine's TLS port",
  'tls-required': 'set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem), as for the docker CLI',
}
