import { createServer, type Server, type Socket } from 'node:net'
import type { Upstream } from '../balancer/upstream.js'
import { BodyTooLargeError, ClientRequestError, ConsulLbError } from '../errors.js'
import { answerBytes, errorAnswer, wantsJson } from '../proxy/answers.js'
import type { ServiceStats } from '../proxy/metrics.js'
import { isHostValue } from '../proxy/path.js'
import { codingProblem, MAX_HEADER_FIELDS } from '../proxy/request-head.js'
import type { ServiceTarget } from '../proxy/target.js'
import { ClientConnection, type ClientHost, type ClientLimits } from './client-connection.js'
import { Exchange, type PassthroughContext } from './exchange.js'
import { rewriteRequestHead } from './head.js'
import { Framing, methodName } from './llhttp.js'
import { ConnectionPool } from './upstream-pool.js'

/** Where a routed request goes, and with which path and Host (the load balancer's routing, shared by both planes). */
export interface Routed {
  target: ServiceTarget
  /** Normalised path (and query), prefix stripped when the route says so. */
  path: string
  /** The Host the request is for (the header, or an absolute-form target's authority). */
  host: string | undefined
  /** The request used absolute form: its authority replaces the Host header upstream (RFC 9112 §3.2.2). */
  replaceHost: boolean
}

/** What the pass-through data plane needs from the load balancer around it, besides what its exchanges share. */
export interface PassthroughOptions extends Omit<PassthroughContext, 'poolFor'> {
  readonly limits: ClientLimits
  readonly connectTimeoutMs: number
  readonly upstreamKeepAliveMs: number
  /** The load balancer's routing: normalised path, configured routes, Host routing; or the error that answers. */
  route(url: string, host: string | undefined): Routed | ConsulLbError
  /** Where requests answered before a service was known are counted. */
  readonly unrouted: ServiceStats
}

/**
 * The pass-through data plane: a TCP listener whose connections are read as bytes (ClientConnection), each request
 * head parsed once by llhttp and rewritten in one pass, and forwarded over per-instance pools of raw keep-alive
 * connections (ConnectionPool) by one Exchange each. Routing, the resolver, the balancer, retries, answers and
 * metrics are the load balancer's, shared with the classic data plane; only the wire differs. One interval sweeps
 * every deadline (client head, body and keep-alive; the instance's head and body) and the pools' idle connections.
 */
export class PassthroughServer implements ClientHost {
  readonly limits: ClientLimits
  private readonly opts: PassthroughOptions
  private readonly ctx: PassthroughContext
  private server: Server | null = null
  private readonly clients = new Set<ClientConnection>()
  private readonly pools = new Map<string, ConnectionPool>()
  private sweepTimer: NodeJS.Timeout | null = null
  private closing = false

  constructor(opts: PassthroughOptions) {
    this.opts = opts
    this.limits = opts.limits
    this.ctx = { ...opts, poolFor: (u) => this.poolFor(u) }
  }

  /** The keep-alive connections of an instance, made on first use. */
  private poolFor(u: Upstream): ConnectionPool {
    let p = this.pools.get(u.key)
    if (p === undefined) {
      p = new ConnectionPool(u.address, u.port, {
        connectTimeoutMs: this.opts.connectTimeoutMs,
        keepAliveMs: this.opts.upstreamKeepAliveMs,
      })
      this.pools.set(u.key, p)
    }
    return p
  }

  async listen(port: number, host: string): Promise<{ address: string; port: number }> {
    // allowHalfOpen: a client that half-closes after its request still gets the answer.
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.accept(s))
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })
    this.server = server
    const l = this.limits
    const o = this.opts
    const shortest = Math.min(
      l.clientHeadersTimeoutMs,
      l.clientKeepAliveMs,
      l.clientRequestTimeoutMs || Number.POSITIVE_INFINITY,
      o.upstreamHeadersTimeoutMs,
      o.upstreamBodyTimeoutMs,
      o.upstreamKeepAliveMs,
    )
    // Deadlines are checked to a tenth of the shortest timeout (10 ms … 1 s), like node:http's connection checks.
    this.sweepTimer = setInterval(() => this.sweep(Date.now()), Math.max(10, Math.min(1000, shortest / 10)))
    this.sweepTimer.unref()
    return server.address() as { address: string; port: number }
  }

  get port(): number {
    return (this.server?.address() as { port: number } | null)?.port ?? 0
  }

  private accept(s: Socket): void {
    if (this.closing) {
      s.destroy()
      return
    }
    this.clients.add(new ClientConnection(s, this, Date.now()))
  }

  closed(client: ClientConnection): void {
    this.clients.delete(client)
  }

  refused(e: ClientRequestError): void {
    this.opts.unrouted.count(e.statusCode)
    this.opts.errors.labels(e.code).inc()
  }

  /**
   * One request head, read top to bottom: what HTTP requires that llhttp lets through, the route, the body limit,
   * then the rewritten head and an Exchange that owns the request to its end. Null: answered here.
   */
  request(
    client: ClientConnection,
    head: Buffer,
    headStart: number,
    headEnd: number,
    framing: Framing,
  ): Exchange | null {
    const p = client.parser
    const f = client.facts
    const method = methodName(p.method)
    const isHead = method === 'HEAD'
    const json = wantsJson(f.accept)
    // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored; it goes on as a plain one.
    const upgrade = p.upgrade && p.httpMinor === 1 && method !== 'CONNECT' ? (f.upgrade ?? null) : null
    const problem = requestProblem(client, method, framing, upgrade !== null)
    const routed =
      problem ??
      this.opts.route(head.toString('latin1', headStart + p.spans[0]!, headStart + p.spans[0]! + p.spans[1]!), f.host)
    if (routed instanceof ConsulLbError) return this.refuse(client, routed, this.opts.unrouted, isHead, json, framing)
    const target = routed.target
    const max = this.limits.maxBodyBytes
    if (max > 0 && framing === Framing.Length && p.contentLength > max)
      return this.refuse(
        client,
        new BodyTooLargeError(max, String(p.contentLength)),
        target.stats,
        isHead,
        json,
        framing,
      )
    const out = rewriteRequestHead(head, headStart, headEnd, p, f, {
      path: routed.path,
      clientAddress: client.remoteAddress,
      host: routed.host,
      replaceHost: routed.replaceHost,
      upgrade,
    })
    return new Exchange(this.ctx, client, target, out, {
      method,
      isHead,
      hasBody: framing !== Framing.None,
      upgrade: upgrade === null ? null : upgrade.split(',').map((x) => x.trim().toLowerCase()),
      json,
      expectContinue: f.hasExpect && framing !== Framing.None,
      // A body of known length up to requestBufferBytes is read whole before an instance is chosen: a client that
      // sends it slowly holds no instance slot meanwhile (as on the classic plane).
      bufferBody:
        framing === Framing.Length && p.contentLength > 0 && p.contentLength <= this.limits.requestBufferBytes,
    })
  }

  /** Answers a request the data plane does not forward, counted under `stats` (the service's, or `_unrouted`). */
  private refuse(
    client: ClientConnection,
    e: ConsulLbError,
    stats: ServiceStats,
    isHead: boolean,
    json: boolean,
    framing: Framing,
  ): null {
    // A request whose framing or headers are suspect ends its connection; so does one whose body is unread.
    const close =
      (e instanceof ClientRequestError && e.code !== 'CLB_BAD_PATH') ||
      framing !== Framing.None ||
      client.parser.upgrade
    client.writeAnswer(answerBytes(errorAnswer(e, { json, retryAfterS: this.opts.retryAfterS, close }), isHead), close)
    const now = Date.now()
    stats.recordError(e, now)
    stats.count(e.statusCode, now)
    this.opts.errors.labels(e.code).inc()
    return null
  }

  private sweep(now: number): void {
    for (const c of this.clients) {
      const ex = c.current
      if (ex !== null && ex.deadline !== 0 && now > ex.deadline) ex.timedOut()
      if (c.deadline !== 0 && now > c.deadline) c.expire()
    }
    for (const [key, p] of this.pools) {
      p.sweep(now)
      // A pool with no connection left is made again on next use: bounded by the instances in use, not by time.
      if (p.openConnections === 0) this.pools.delete(key)
    }
  }

  get connections(): number {
    return this.clients.size
  }

  /** Upgraded connections (WebSocket and other tunnels) open now. */
  get tunnels(): number {
    let n = 0
    for (const c of this.clients) if (c.tunnel) n++
    return n
  }

  /** Stops accepting; idle keep-alive connections and tunnels close now; busy ones close after their answer. */
  stopAccepting(): void {
    this.closing = true
    this.server?.close()
    for (const c of this.clients) {
      if (c.isIdle || c.tunnel) c.destroy()
      else c.closeAfterAnswer()
    }
  }

  /** Cuts what is left and releases the pools and the sweep. */
  destroyAll(): void {
    for (const c of this.clients) c.destroy()
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer)
    for (const p of this.pools.values()) p.close()
    this.pools.clear()
  }
}

/**
 * What HTTP/1.1 requires of a request that llhttp lets through (the pass-through twin of proxy/request-head.ts
 * requestProblem); null when the request may go on. llhttp itself refuses Content-Length with Transfer-Encoding,
 * differing or repeated Content-Length, bad chunk framing, obs-fold, bare LF and whitespace before a colon.
 */
function requestProblem(
  client: ClientConnection,
  method: string,
  framing: Framing,
  isUpgrade: boolean,
): ClientRequestError | null {
  const p = client.parser
  const f = client.facts
  if (p.httpMajor !== 1)
    return new ClientRequestError(
      'CLB_HTTP_VERSION',
      `HTTP/${p.httpMajor}.${p.httpMinor} is not supported; use HTTP/1.1`,
    )
  if (method === 'CONNECT') return new ClientRequestError('CLB_NOT_IMPLEMENTED', 'CONNECT is not supported')
  // nginx refuses TRACE too: a backend echoing the request would hand cookies and credentials back to a script.
  if (method === 'TRACE') return new ClientRequestError('CLB_NOT_IMPLEMENTED', 'TRACE is not forwarded')
  if (f.count >= MAX_HEADER_FIELDS)
    return new ClientRequestError('CLB_HEADERS_TOO_LARGE', `${MAX_HEADER_FIELDS} header fields or more`)
  if (f.hostCount > 1)
    return new ClientRequestError('CLB_BAD_REQUEST', 'more than one Host header field (RFC 9112 §3.2)')
  if (f.host === undefined ? p.httpMinor === 1 : !isHostValue(f.host))
    return new ClientRequestError(
      'CLB_BAD_REQUEST',
      f.host === undefined ? 'an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)' : 'invalid Host header',
    )
  const te = f.transferEncoding
  if (te !== undefined) {
    // RFC 9112 §6.1: a chunked HTTP/1.0 message cannot be framed reliably; treat it as faulty.
    if (p.httpMinor === 0)
      return new ClientRequestError('CLB_BAD_REQUEST', 'Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)')
    if (te !== 'chunked') {
      const problem = codingProblem(te)
      if (problem !== null) return problem
    }
  }
  if (isUpgrade && framing !== Framing.None && !(framing === Framing.Length && p.contentLength === 0))
    return new ClientRequestError('CLB_BAD_REQUEST', 'an Upgrade request with a body is not forwarded')
  return null
}
