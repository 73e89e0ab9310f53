import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Dispatcher } from 'undici'
import type { Upstream } from '../balancer/upstream.js'
import type { LimitedBody } from './body.js'
import { connectionTokens, isHopByHop } from './headers.js'
import { sendError } from './respond.js'
import type { ServiceTarget } from './target.js'

/** What an exchange needs from the proxy that runs it (one object shared by all requests). */
export interface ExchangeHost {
  readonly maxInflightPerInstance: number
  readonly retries: number
  readonly retryAfterS: number
  /** Shutting down: pools are being destroyed, so nothing is retried. */
  readonly isClosing: boolean
  recordFailure(u: Upstream, code: string, target: ServiceTarget, now: number): void
  recordSuccess(u: Upstream): void
  /** Whether one more retry fits the retry budget (retries in flight vs requests in flight). */
  mayRetry(): boolean
  retryStarted(): void
  retryEnded(): void
  logFailure(ex: Exchange, u: Upstream, err: Error, final: boolean): void
  finished(ex: Exchange, status: number, code: string | null): void
}

/** Errors that mean "this instance did not take the request (well)": counted against it. */
// (UND_ERR_CLOSED / UND_ERR_DESTROYED are not here: they mean we closed the pool, while shutting down.)
const INSTANCE_FAILURES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_HEADERS_TIMEOUT',
])
/** Failures before a connection existed: the request cannot have reached the instance, whatever its method. */
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT'])
/** RFC 9110 §9.2.2: methods whose repetition has the effect of one request. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

/**
 * One client request on its way through the proxy, and the undici dispatch handler for each attempt (the legacy
 * handler interface, which is undici's native one: no wrapper per request). It writes upstream bytes straight into
 * the client response and retries on another instance when an attempt failed before any response byte came back.
 */
export class Exchange implements Dispatcher.DispatchHandler {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly target: ServiceTarget
  private readonly host: ExchangeHost
  private readonly opts: Dispatcher.DispatchOptions
  private readonly body: IncomingMessage | LimitedBody | null
  private upstream: Upstream | null = null
  private tried: Upstream[] | null = null
  private abortFn: ((err?: Error) => void) | null = null
  private startedAt = 0
  private retrying = false
  attempts = 0
  private done = false
  status = 0
  lastErrorCode: string | null = null
  private lastUpstream: Upstream | null = null
  private resume: (() => void) | null = null
  private drainHooked = false

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    target: ServiceTarget,
    host: ExchangeHost,
    path: string,
    headers: string[],
    body: IncomingMessage | LimitedBody | null,
  ) {
    this.req = req
    this.res = res
    this.target = target
    this.host = host
    this.body = body
    this.opts = { path, method: req.method as Dispatcher.HttpMethod, headers, body }
    res.on('close', this.onClientClose)
  }

  /** The client went away: stop the upstream request too (long responses, event streams). */
  private readonly onClientClose = (): void => {
    if (!this.done && this.abortFn !== null && !this.res.writableFinished) this.abortFn()
  }

  /** Sends the first attempt (the service has instances). */
  start(): void {
    const u = this.target.pool.pick(Date.now(), this.host.maxInflightPerInstance, null)
    if (u === null) {
      this.finish(null)
      sendError(
        this.req,
        this.res,
        503,
        'CLB_NO_HEALTHY_INSTANCE',
        `no healthy instance of ${this.target.service} (every instance is at its connection cap)`,
        this.host.retryAfterS,
      )
      this.host.finished(this, 503, 'CLB_NO_HEALTHY_INSTANCE')
      return
    }
    this.dispatch(u)
  }

  private dispatch(u: Upstream): void {
    this.upstream = u
    this.attempts++
    u.inflight++
    u.requests++
    this.startedAt = Date.now()
    this.abortFn = null
    u.pool.dispatch(this.opts, this)
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abortFn = abort
    if (this.res.destroyed) abort()
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) return true // 1xx interim answers (103 Early Hints) are not relayed
    const u = this.upstream!
    this.host.recordSuccess(u)
    this.target.stats.observe((Date.now() - this.startedAt) / 1000)
    const res = this.res
    if (res.destroyed) return false
    // Response headers go out as a flat [name, value, …] list, hop-by-hop ones removed.
    const out: string[] = []
    let tokens: Set<string> | null = null
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!.toString('latin1')
      if (isHopByHop(name)) {
        if (name.length === 10 && name.toLowerCase() === 'connection')
          tokens = connectionTokens(rawHeaders[i + 1]!.toString('latin1'))
        continue
      }
      out.push(name, rawHeaders[i + 1]!.toString('latin1'))
    }
    if (tokens !== null) {
      for (let i = out.length - 2; i >= 0; i -= 2) if (tokens.has(out[i]!.toLowerCase())) out.splice(i, 2)
    }
    this.status = statusCode
    res.writeHead(statusCode, statusText || undefined, out)
    this.resume = resume
    // No cork() here: measured with strace, Node already sends header block, body and end of a small answer in one
    // writev, and undici the request in one write; corking changed nothing.
    return true
  }

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true
    // Backpressure: the client reads slower than the upstream sends; undici pauses until the socket drains.
    // The listener is added only for responses that ever fill the socket buffer.
    if (!this.drainHooked) {
      this.drainHooked = true
      this.res.on('drain', this.resume!)
    }
    return false
  }

  onComplete(): void {
    this.res.end()
    this.finish(this.upstream)
    this.host.finished(this, this.status, null)
  }

  onError(err: Error): void {
    const u = this.upstream!
    const code = (err as { code?: string }).code ?? 'ERR'
    this.lastErrorCode = code
    this.lastUpstream = u
    const now = Date.now()
    const clientGone = this.res.destroyed || code === 'UND_ERR_ABORTED'
    if (INSTANCE_FAILURES.has(code) && !clientGone) this.host.recordFailure(u, code, this.target, now)
    u.inflight--
    this.upstream = null
    if (clientGone) {
      this.finish(null)
      this.host.finished(this, 499, null)
      return
    }
    if (!this.res.headersSent && this.isRetryable(code)) {
      if (this.tried === null) this.tried = []
      this.tried.push(u)
      const next = this.target.pool.pick(now, this.host.maxInflightPerInstance, this.tried)
      if (next !== null) {
        this.host.logFailure(this, u, err, false)
        this.target.stats.retries++
        if (!this.retrying) {
          this.retrying = true
          this.host.retryStarted()
        }
        this.dispatch(next)
        return
      }
    }
    this.host.logFailure(this, u, err, true)
    this.failFinal(code, err)
  }

  /** The last attempt failed: the one answer that says why (413, 504, 502), or a cut connection mid-response. */
  private failFinal(code: string, err: Error): void {
    this.finish(null)
    if (this.res.headersSent) {
      // Part of the answer is out: the only honest signal left is to cut the connection.
      this.res.destroy(err)
      this.host.finished(this, this.status, null)
      return
    }
    const where = `${this.target.service} instance ${this.lastUpstream?.key ?? '?'}`
    const tries = this.attempts > 1 ? ` after ${this.attempts} attempts` : ''
    if (code === 'CLB_BODY_TOO_LARGE') {
      sendError(this.req, this.res, 413, code, err.message)
      this.host.finished(this, 413, code)
    } else if (TIMEOUTS.has(code)) {
      sendError(this.req, this.res, 504, 'CLB_UPSTREAM_TIMEOUT', `${where} did not answer in time${tries}`)
      this.host.finished(this, 504, 'CLB_UPSTREAM_TIMEOUT')
    } else {
      sendError(this.req, this.res, 502, 'CLB_UPSTREAM_FAILED', `${where} failed (${code})${tries}`)
      this.host.finished(this, 502, 'CLB_UPSTREAM_FAILED')
    }
  }

  /**
   * A retry is safe when nothing of the request body has been read (a body we started sending cannot be replayed)
   * and the request either is idempotent or provably never reached the instance (refused, unreachable, connect
   * timeout): a POST that timed out waiting for headers was received and must not run twice. Bounded by the
   * attempt count and the retry budget.
   */
  private isRetryable(code: string): boolean {
    if (!INSTANCE_FAILURES.has(code) || this.attempts > this.host.retries || this.host.isClosing) return false
    const b = this.body
    if (b !== null && (b === this.req ? this.req.readableDidRead || this.req.destroyed : (b as LimitedBody).started))
      return false
    if (
      !CONNECT_FAILURES.has(code) &&
      !IDEMPOTENT.has(this.req.method!) &&
      (b !== null || code === 'UND_ERR_HEADERS_TIMEOUT')
    )
      return false
    return this.retrying || this.host.mayRetry()
  }

  private finish(u: Upstream | null): void {
    if (this.done) return
    this.done = true
    if (u !== null) u.inflight--
    if (this.retrying) {
      this.retrying = false
      this.host.retryEnded()
    }
  }
}
