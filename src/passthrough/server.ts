import { createServer, type Server, type Socket } from 'node:net'
import type { Upstream } from '../balancer/upstream.js'
import { hostOf } from '../proxy/router.js'
import type { ServiceTarget } from '../proxy/target.js'
import { errorAnswer } from './answer.js'
import { ClientConnection, type ClientHost, type ClientLimits } from './client-connection.js'
import { Exchange, type ExchangeHost, type Refusal } from './exchange.js'
import { rewriteRequestHead } from './head.js'
import { type Framing, METHOD_CONNECT, METHOD_HEAD } from './llhttp.js'
import { ConnectionPool } from './upstream-pool.js'

/** Where a request goes, or the answer that says why nowhere. */
export type RouteResult = { target: ServiceTarget; path: string | null } | Refusal

/** What the pass-through data plane needs from the load balancer around it (routing, readiness, accounting). */
export interface PassthroughBalancer extends Omit<ExchangeHost, 'poolFor'> {
  /** `path`: the request target to forward when it differs from the client's (a stripped prefix), else null. */
  route(host: string, url: string): RouteResult
  /**
   * Runs `go` once the target can take the request: at once when it has instances, else after the bounded wait
   * for a cold name's first answer, a revalidation or an empty pool; `go(null)` to go on, or the answer to give.
   */
  whenReady(target: ServiceTarget, go: (refusal: Refusal | null) => void): void
  /** A request was read (counted in flight until `finished`). */
  began(): void
  /** A request answered before it reached a service (no route, forbidden, malformed). */
  unrouted(status: number, code: string | null): void
  readonly connectTimeoutMs: number
  readonly upstreamKeepAliveMs: number
  readonly maxBodyBytes: number
}

/** RFC 9110 §9.2.2: methods whose repetition has the effect of one request (llhttp method numbers). */
const IDEMPOTENT_METHODS = new Set([
  0 /* DELETE */, 1 /* GET */, 2 /* HEAD */, 4 /* PUT */, 6 /* OPTIONS */, 7 /* TRACE */,
])

/**
 * The pass-through data plane: a TCP listener whose connections are read as bytes (ClientConnection), requests
 * forwarded over per-instance pools of raw keep-alive connections (ConnectionPool) by one Exchange each. The load
 * balancer around it (routes, resolver, balancer, metrics) is the classic data plane's; only the wire differs.
 * One interval sweeps every deadline (client head, body and keep-alive; the instance's head and body) and every
 * pool's idle connections.
 */
export class PassthroughServer implements ClientHost, ExchangeHost {
  readonly limits: ClientLimits
  private readonly lb: PassthroughBalancer
  private server: Server | null = null
  private readonly clients = new Set<ClientConnection>()
  private readonly pools = new Map<string, ConnectionPool>()
  private sweepTimer: NodeJS.Timeout | null = null
  private closing = false

  constructor(lb: PassthroughBalancer, limits: ClientLimits) {
    this.lb = lb
    this.limits = limits
  }

  // ExchangeHost, delegated (the balancer owns this state; the data plane owns the pools).
  get maxInflightPerInstance(): number {
    return this.lb.maxInflightPerInstance
  }
  get retries(): number {
    return this.lb.retries
  }
  get retryAfterS(): number {
    return this.lb.retryAfterS
  }
  get upstreamHeadersTimeoutMs(): number {
    return this.lb.upstreamHeadersTimeoutMs
  }
  get upstreamBodyTimeoutMs(): number {
    return this.lb.upstreamBodyTimeoutMs
  }
  get maxResponseHeaderBytes(): number {
    return this.lb.maxResponseHeaderBytes
  }
  get isClosing(): boolean {
    return this.lb.isClosing
  }
  recordFailure(u: Upstream, code: string, target: ServiceTarget, now: number): void {
    this.lb.recordFailure(u, code, target, now)
  }
  recordSuccess(u: Upstream): void {
    this.lb.recordSuccess(u)
  }
  mayRetry(): boolean {
    return this.lb.mayRetry()
  }
  retryStarted(): void {
    this.lb.retryStarted()
  }
  retryEnded(): void {
    this.lb.retryEnded()
  }
  logAttemptFailure(target: ServiceTarget, u: Upstream, code: string, final: boolean, attempts: number): void {
    this.lb.logAttemptFailure(target, u, code, final, attempts)
  }
  finished(target: ServiceTarget, status: number, code: string | null): void {
    this.lb.finished(target, status, code)
  }

  /** The keep-alive connections of an instance, made on first use. */
  poolFor(u: Upstream): ConnectionPool {
    let p = this.pools.get(u.key)
    if (p === undefined) {
      p = new ConnectionPool(u.address, u.port, {
        connectTimeoutMs: this.lb.connectTimeoutMs,
        keepAliveMs: this.lb.upstreamKeepAliveMs,
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
    const shortest = Math.min(
      l.clientHeadersTimeoutMs,
      l.clientKeepAliveMs,
      l.clientRequestTimeoutMs || Infinity,
      this.lb.upstreamHeadersTimeoutMs,
      this.lb.upstreamBodyTimeoutMs,
      this.lb.upstreamKeepAliveMs,
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
    if (this.closing && this.clients.size === 0) this.onIdle?.()
  }

  request(
    client: ClientConnection,
    head: Buffer,
    headStart: number,
    headEnd: number,
    framing: Framing,
  ): Exchange | null {
    const p = client.parser
    const f = client.facts
    const method = p.method
    const isHead = method === METHOD_HEAD
    this.lb.began()
    // An unread body would be parsed as the next request: answers given before one is read close the connection.
    const close = framing !== 0 || !client.keepAlive || p.upgrade
    const refuse = (status: number, code: string | null, message: string, retryAfterS?: number): null => {
      client.writeAnswer(
        errorAnswer(status, code, message, {
          accept: f.accept,
          isHead,
          close,
          ...(retryAfterS === undefined ? {} : { retryAfterS }),
        }),
        close,
      )
      this.lb.unrouted(status, code)
      return null
    }
    // RFC 9112 §3.2: a request with no Host or more than one is a 400; CONNECT makes no sense at a reverse proxy.
    if (f.duplicateHost || (f.host === null && p.httpMinor === 1)) return refuse(400, null, 'bad Host header')
    if (method === METHOD_CONNECT) return refuse(405, null, 'CONNECT is not supported')
    const url = head.toString('latin1', headStart + p.spans[0]!, headStart + p.spans[0]! + p.spans[1]!)
    const found = this.lb.route(hostOf(f.host ?? undefined), url)
    if (!('target' in found)) return refuse(found.status, found.code, found.message, found.retryAfterS)
    const target = found.target
    const max = this.lb.maxBodyBytes
    if (max > 0 && framing === 1 /* Length */ && p.contentLength > max) {
      this.lb.finished(target, 413, 'CLB_BODY_TOO_LARGE')
      client.writeAnswer(
        errorAnswer(
          413,
          'CLB_BODY_TOO_LARGE',
          `request body of ${p.contentLength} bytes is over the ${max}-byte limit`,
          {
            accept: f.accept,
            isHead,
            close: true,
          },
        ),
        true,
      )
      return null
    }
    const out = rewriteRequestHead(head, headStart, headEnd, p, f, {
      path: found.path,
      clientAddress: client.remoteAddress,
      host: f.host,
      isUpgrade: p.upgrade,
    })
    if (f.hasExpect && !p.upgrade) client.write(CONTINUE)
    return new Exchange(this, client, target, out, {
      isHead,
      isUpgrade: p.upgrade,
      idempotent: IDEMPOTENT_METHODS.has(method),
      hasBody: framing !== 0,
    })
  }

  whenReady(target: ServiceTarget, go: (refusal: Refusal | null) => void): void {
    this.lb.whenReady(target, go)
  }

  private sweep(now: number): void {
    for (const c of this.clients) {
      const ex = c.current
      if (ex !== null && ex.deadline !== 0 && now > ex.deadline) ex.timedOut()
      if (c.deadline !== 0 && now > c.deadline) c.expire()
    }
    for (const p of this.pools.values()) p.sweep(now)
  }

  get connections(): number {
    return this.clients.size
  }

  private onIdle: (() => void) | null = null

  /** Stops accepting; idle keep-alive connections close now, busy ones after their answer (or at `deadline`). */
  async close(deadlineMs: number): Promise<void> {
    this.closing = true
    this.server?.close()
    // Idle keep-alive connections and upgraded ones (WebSockets have no end to wait for) close now.
    for (const c of this.clients) if (c.isIdle || c.tunnel) c.destroy()
    for (const c of this.clients) c.closeAfterAnswer()
    if (this.clients.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadlineMs)
        this.onIdle = () => {
          clearTimeout(timer)
          resolve()
        }
      })
    }
    for (const c of this.clients) c.destroy()
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer)
    for (const p of this.pools.values()) p.close()
    this.pools.clear()
  }
}

const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1')
