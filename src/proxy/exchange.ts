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
  recordFailure(u: Upstream, code: string, service: string, now: number): void
  recordSuccess(u: Upstream): void
  /** Whether one more retry fits the retry budget (retries in flight vs requests in flight). */
  mayRetry(): boolean
  retryStarted(): void
  retryEnded(): void
  logFailure(ex: Exchange, u: Upstream, err: Error, final: boolean): void
  finished(ex: Exchange, status: number): void
}

/** Errors that mean "this instance did not take the request": counted against it and worth a try elsewhere. */
const INSTANCE_FAILURES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_HEADERS_TIMEOUT'])

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
  private resume: (() => void) | null = null
  private drainHooked = false

  constructor(req: IncomingMessage, res: ServerResponse, target: ServiceTarget, host: ExchangeHost, path: string, headers: string[], body: IncomingMessage | LimitedBody | null) {
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

  start(): void {
    const now = Date.now()
    const u = this.target.pool.pick(now, this.host.maxInflightPerInstance, this.tried)
    if (u === null) {
      this.finish(null)
      if (this.attempts === 0) {
        sendError(this.req, this.res, 503, 'CLB_NO_HEALTHY_INSTANCE', `no healthy instance of ${this.target.service}`, this.host.retryAfterS)
        this.host.finished(this, 503)
      } else {
        sendError(this.req, this.res, 502, 'CLB_UPSTREAM_FAILED', `all ${this.attempts} attempts to ${this.target.service} failed (last: ${this.lastErrorCode})`)
        this.host.finished(this, 502)
      }
      return
    }
    this.upstream = u
    this.attempts++
    u.inflight++
    u.requests++
    this.startedAt = now
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
    this.target.metrics.latency.observe((Date.now() - this.startedAt) / 1000)
    const res = this.res
    if (res.destroyed) return false
    // Response headers go out as a flat [name, value, …] list, hop-by-hop ones removed.
    const out: string[] = []
    let tokens: Set<string> | null = null
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!.toString('latin1')
      if (isHopByHop(name)) {
        if (name.length === 10 && name.toLowerCase() === 'connection') tokens = connectionTokens(rawHeaders[i + 1]!.toString('latin1'))
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
    this.host.finished(this, this.status)
  }

  onError(err: Error): void {
    const u = this.upstream!
    const code = (err as { code?: string }).code ?? 'ERR'
    this.lastErrorCode = code
    const now = Date.now()
    const isInstanceFailure = INSTANCE_FAILURES.has(code)
    const clientGone = this.res.destroyed || code === 'UND_ERR_ABORTED'
    if (isInstanceFailure && !clientGone) this.host.recordFailure(u, code, this.target.service, now)
    u.inflight--
    this.upstream = null
    if (clientGone) {
      this.finish(null)
      this.host.finished(this, 499)
      return
    }
    if (!this.res.headersSent && isInstanceFailure && this.mayRetry()) {
      this.host.logFailure(this, u, err, false)
      ;(this.tried ??= []).push(u)
      this.target.metrics.retries.inc()
      if (!this.retrying) { this.retrying = true; this.host.retryStarted() }
      this.start()
      return
    }
    this.host.logFailure(this, u, err, true)
    this.finish(null)
    if (this.res.headersSent) {
      // Part of the answer is out: the only honest signal left is to cut the connection.
      this.res.destroy(err)
      this.host.finished(this, this.status)
      return
    }
    if (code === 'CLB_BODY_TOO_LARGE') {
      sendError(this.req, this.res, 413, code, err.message)
      this.host.finished(this, 413)
    } else if (TIMEOUTS.has(code)) {
      sendError(this.req, this.res, 504, 'CLB_UPSTREAM_TIMEOUT', `${this.target.service} instance ${u.key} did not answer in time`)
      this.host.finished(this, 504)
    } else {
      sendError(this.req, this.res, 502, 'CLB_UPSTREAM_FAILED', `${this.target.service} instance ${u.key} failed (${code})${this.attempts > 1 ? ` after ${this.attempts} attempts` : ''}`)
      this.host.finished(this, 502)
    }
  }

  /**
   * A retry is safe when nothing of the request body has been read (a body we started sending cannot be replayed,
   * and a non-idempotent request whose body was sent must never run twice), within the attempt count and budget.
   */
  private mayRetry(): boolean {
    if (this.attempts > this.host.retries) return false
    const b = this.body
    if (b !== null && (b === this.req ? this.req.readableDidRead || this.req.destroyed : (b as LimitedBody).started)) return false
    return this.retrying || this.host.mayRetry()
  }

  private finish(u: Upstream | null): void {
    if (this.done) return
    this.done = true
    if (u !== null) u.inflight--
    if (this.retrying) { this.retrying = false; this.host.retryEnded() }
  }
}
