import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Counter } from 'prom-client'
import type { Dispatcher } from 'undici'
import type { Upstream } from '../balancer/upstream.js'
import { ConsulLbError, UpstreamError } from '../errors.js'
import type { Logger } from '../log.js'
import { errorAnswer, wantsJson, writeAnswer } from './answers.js'
import type { LimitedBody } from './body.js'
import type { BodyReader, ClientConnection, ClientConnections } from './connection.js'
import { forwardResponseHeaders, withClose } from './headers.js'
import { isRetryable, type RetryBudget, TIMEOUTS } from './retry.js'
import type { ServiceTarget } from './target.js'

/** What every exchange of one proxy shares: small owners and settings, never the proxy itself. */
export interface ExchangeContext {
  readonly budget: RetryBudget
  /** 1 + --retries. */
  readonly maxAttempts: number
  readonly retryAfterS: number
  /** consul_lb_errors_total{code}. */
  readonly errors: Counter<'code'>
  readonly connections: ClientConnections
  readonly log: Logger
  /** A client whose response stays blocked (it reads nothing) this long is cut off. */
  readonly sendTimeoutMs: number
}

/**
 * One client request on its way through the proxy, from the moment it is routed to its last byte, and the undici
 * dispatch handler of each attempt (the legacy handler interface, undici's native one: no wrapper per request). It
 * writes upstream bytes straight into the client response and retries on another instance when an attempt failed
 * before any response byte came back.
 *
 * It owns everything the request holds, and gives each back in one place: the instance slot of the attempt in flight
 * (`endAttempt`, the only caller of `Upstream.end()` for requests), and its request slot, retry slot and counters
 * (`finish`, reached exactly once however the request ends: answered, failed, refused, or its client gone).
 *
 * A body of known length up to requestBufferBytes is read whole before an instance is chosen (a client that sends it
 * slowly holds no instance slot, and the body can be sent again on a retry); a larger one streams. A client that
 * stops reading its response is cut off after sendTimeoutMs (undici's body timeout does not run while the proxy
 * holds it paused), so it cannot hold the instance either.
 */
export class Exchange implements Dispatcher.DispatchHandler, BodyReader {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly target: ServiceTarget
  private readonly ctx: ExchangeContext
  private readonly opts: Dispatcher.DispatchOptions
  private readonly body: IncomingMessage | LimitedBody | null
  private readonly conn: ClientConnection | null
  private expectContinue: boolean
  /** The body is to be read whole before dispatch (then it is a Buffer in `opts.body`). */
  private buffering: boolean
  private bodyBuffered = false
  /** The attempt in flight holds a slot of this instance. */
  private upstream: Upstream | null = null
  private lastUpstream: Upstream | null = null
  private tried: Upstream[] | null = null
  private abortFn: ((err?: Error) => void) | null = null
  private startedAt = 0
  private attempts = 0
  private holdsRetry = false
  private done = false
  private status = 0
  private bodyError: ConsulLbError | null = null
  private resume: (() => void) | null = null
  private drainHooked = false
  private sendTimer: NodeJS.Timeout | null = null
  private sendTimedOut = false

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    target: ServiceTarget,
    path: string,
    headers: string[],
    body: IncomingMessage | LimitedBody | null,
    buffer: boolean,
    conn: ClientConnection | null,
    expectContinue: boolean,
    ctx: ExchangeContext,
  ) {
    this.req = req
    this.res = res
    this.target = target
    this.ctx = ctx
    this.body = body
    this.buffering = buffer && body === req
    this.expectContinue = expectContinue
    this.opts = { path, method: req.method as Dispatcher.HttpMethod, headers, body }
    this.conn = conn
    if (body !== null && conn !== null) conn.bodyReader = this
    ctx.budget.requestStarted()
    res.on('close', this.onClientClose)
  }

  /** After `target.ready()` settled: go on, answer 503, or count a client that left while it waited. */
  proceed(ready: boolean): void {
    if (this.done) return
    if (this.isClientGone()) this.finish(499, null)
    else if (this.bodyError !== null) this.fail(this.bodyError)
    else if (ready) this.start()
    else this.fail(this.target.unavailable())
  }

  /** The service has instances: read a small body whole if there is one, then send the first attempt. */
  start(): void {
    // Decided: route, limits and readiness are known, so the client may send its body now (RFC 9110 §10.1.1).
    if (this.expectContinue) {
      this.expectContinue = false
      this.res.writeContinue()
    }
    if (this.buffering) this.readBody()
    else this.dispatchFirst()
  }

  private dispatchFirst(): void {
    const u = this.target.pool.pick(Date.now(), null)
    if (u === null) this.fail(this.target.unavailable(true))
    else this.dispatch(u)
  }

  /** Reads the whole (small, known-length) body, then dispatches with it as a Buffer. */
  private readBody(): void {
    const req = this.req
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.once('end', () => {
      if (this.done) return
      this.buffering = false
      this.bodyBuffered = true
      this.opts.body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)
      this.dispatchFirst()
    })
  }

  /**
   * The connection carrying this request's body failed (bad chunk framing, request timeout): stop, and answer `e`
   * if nothing was sent yet.
   */
  clientFailed(e: ConsulLbError): void {
    if (this.done) return
    this.bodyError = e
    if (this.abortFn !== null) this.abortFn(e)
    else if (this.upstream === null) this.fail(e)
    // else: queued for a connection; onConnect aborts with bodyError
  }

  /** The client went away: stop the upstream request too (long responses, event streams). */
  private readonly onClientClose = (): void => {
    if (this.done) return
    if (this.abortFn !== null) this.abortFn()
    else if (this.buffering) this.finish(499, null)
  }

  private dispatch(u: Upstream): void {
    this.upstream = u
    this.lastUpstream = u
    this.attempts++
    const now = Date.now()
    u.begin(now)
    this.startedAt = now
    this.abortFn = null
    u.pool.dispatch(this.opts, this)
  }

  /** The only place a request gives its instance slot back: each attempt ends here once. */
  private endAttempt(): Upstream | null {
    const u = this.upstream
    if (u !== null) {
      this.upstream = null
      u.end()
    }
    return u
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abortFn = abort
    if (this.bodyError !== null) abort(this.bodyError)
    else if (this.done || this.res.destroyed || this.req.socket.destroyed) abort()
  }

  /**
   * The client connection is gone. A response Node has not yet put on its socket (the one before it is still being
   * written) hears nothing of the socket closing, so the socket is asked too.
   */
  private isClientGone(): boolean {
    return this.res.destroyed || this.req.socket.destroyed
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (this.done) return false
    if (statusCode < 200) {
      if (statusCode === 103) this.earlyHints(rawHeaders)
      return true
    }
    const now = Date.now()
    this.upstream?.recordSuccess(now - this.startedAt, now)
    this.target.stats.observe((now - this.startedAt) / 1000)
    const res = this.res
    if (res.destroyed) return false
    this.status = statusCode
    const headers = forwardResponseHeaders(rawHeaders, statusCode)
    // A 426 carries `Connection: upgrade`; Node would read any Connection value but close as keep-alive.
    if (statusCode === 426 && !res.shouldKeepAlive) withClose(headers)
    res.writeHead(statusCode, statusText || undefined, headers)
    if (statusCode === 204 || statusCode === 304) {
      // No body follows, whatever Content-Length says (RFC 9112 §6.3; RFC 9110 §8.6 lets a 304 carry one). undici
      // checks that length against the empty body and fails the attempt, which would cut this answer: it is
      // complete now.
      res.end()
      this.finish(statusCode, null)
      return true
    }
    this.resume = resume
    // No cork() here: measured with strace, Node already sends header block, body and end of a small answer in one
    // writev, and undici the request in one write; corking changed nothing.
    return true
  }

  onData(chunk: Buffer): boolean {
    if (this.done) return true
    if (this.res.write(chunk)) return true
    // Backpressure: the client reads slower than the upstream sends; undici pauses until the socket drains, and the
    // client has sendTimeoutMs to read something. Listener and timer exist only for responses that ever stall.
    if (!this.drainHooked) {
      this.drainHooked = true
      const resume = this.resume!
      this.res.on('drain', () => {
        if (this.sendTimer !== null) {
          clearTimeout(this.sendTimer)
          this.sendTimer = null
        }
        resume()
      })
    }
    if (this.sendTimer === null) {
      this.sendTimer = setTimeout(() => {
        this.sendTimer = null
        this.sendTimedOut = true
        this.res.destroy()
      }, this.ctx.sendTimeoutMs)
      this.sendTimer.unref()
    }
    return false
  }

  onComplete(): void {
    if (this.done) {
      this.endAttempt()
      return
    }
    this.res.end()
    this.finish(this.status, null)
  }

  onError(err: Error): void {
    const u = this.endAttempt()
    if (this.done) return
    // undici's parser errors (bad framing, bare LF, invalid header bytes from the instance) may come without a code.
    const code = (err as { code?: string }).code ?? err.name
    const now = Date.now()
    const clientGone = code === 'UND_ERR_ABORTED' || this.isClientGone()
    if (u !== null && !clientGone) this.target.attemptFailed(u, code, now, this.ctx.log)
    if (clientGone) {
      this.finish(499, this.sendTimedOut ? 'CLB_CLIENT_TIMEOUT' : null)
      return
    }
    if (u !== null && !this.res.headersSent && this.mayRetry(code)) {
      if (this.tried === null) this.tried = []
      const ctx = this.ctx
      const next = this.target.retryAfter(u, code, this.tried, this.attempts, now, this.holdsRetry, ctx.budget, ctx.log)
      if (next !== null) {
        this.holdsRetry = true
        this.dispatch(next)
        return
      }
    }
    this.failFinal(code, err)
  }

  private mayRetry(code: string): boolean {
    const b = this.body
    return isRetryable({
      code,
      method: this.req.method!,
      hasBody: b !== null,
      bodyStarted:
        b !== null &&
        !this.bodyBuffered &&
        (b === this.req ? this.req.readableDidRead || this.req.destroyed : (b as LimitedBody).started),
      attempts: this.attempts,
      maxAttempts: this.ctx.maxAttempts,
    })
  }

  /** The last attempt failed: the one answer that says why (413, 400/408, 504, 502), or a cut connection. */
  private failFinal(code: string, err: Error): void {
    if (err instanceof ConsulLbError) {
      // The client's side failed (body over the limit, broken body): not the instance's doing.
      this.fail(err)
      return
    }
    const where = `${this.target.service} instance ${this.lastUpstream?.key ?? '?'}`
    const why = (err as { code?: string }).code === undefined ? `${code}: ${err.message}` : code
    this.ctx.log.warn(
      {
        service: this.target.service,
        instance: this.lastUpstream?.key,
        code,
        attempts: this.attempts,
        method: this.req.method,
        url: this.req.url,
      },
      `upstream request failed: ${err.message}`,
    )
    if (this.res.headersSent) {
      // Part of the answer is out: the only honest signal left is to cut the connection.
      this.res.destroy(err)
      this.finish(this.status, null)
      return
    }
    const tries = this.attempts > 1 ? ` after ${this.attempts} attempts` : ''
    this.fail(
      TIMEOUTS.has(code)
        ? new UpstreamError('CLB_UPSTREAM_TIMEOUT', `${where} did not answer in time${tries}`, { cause: err })
        : new UpstreamError('CLB_UPSTREAM_FAILED', `${where} failed (${why})${tries}`, { cause: err }),
    )
  }

  /** Answers with the error (or cuts a response already under way) and ends the exchange. */
  private fail(e: ConsulLbError): void {
    const req = this.req
    // A request body we did not read would take bandwidth to skip: close such connections (gently).
    const close = this.bodyError !== null || (this.body !== null && !req.complete)
    writeAnswer(
      this.res,
      errorAnswer(e, { json: wantsJson(req.headers.accept), retryAfterS: this.ctx.retryAfterS, close }),
      req.method === 'HEAD',
    )
    if (close) this.ctx.connections.lingerAfter(this.res)
    this.target.stats.recordError(e, Date.now())
    this.finish(e.statusCode, e.code)
  }

  /** Relays 103 Early Hints (a proxy forwards 1xx, RFC 9110 §15.2; never to an HTTP/1.0 client). */
  private earlyHints(rawHeaders: Buffer[]): void {
    if (this.req.httpVersionMinor === 0 || this.res.headersSent || this.res.destroyed) return
    const headers = forwardResponseHeaders(rawHeaders, 103)
    const hints: Record<string, string | string[]> = {}
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!.toLowerCase()
      const prev = hints[name]
      hints[name] = prev === undefined ? headers[i + 1]! : [prev, headers[i + 1]!].flat()
    }
    if (hints.link === undefined) return
    try {
      this.res.writeEarlyHints(hints)
    } catch {
      // Node refuses a Link value it cannot validate; hints are advisory (RFC 8297), the final answer still comes.
    }
  }

  /**
   * The only place the exchange ends: its instance slot, retry slot, request slot, counters and its connection's
   * turn (the next pipelined request may start), given back once.
   */
  private finish(status: number, code: string | null): void {
    if (this.done) return
    this.done = true
    this.endAttempt()
    if (this.sendTimer !== null) {
      clearTimeout(this.sendTimer)
      this.sendTimer = null
    }
    const conn = this.conn
    if (conn !== null) {
      if (conn.bodyReader === this) conn.bodyReader = null
      conn.done()
    }
    if (this.holdsRetry) {
      this.holdsRetry = false
      this.ctx.budget.retryEnded()
    }
    this.target.stats.count(status)
    if (code !== null) this.ctx.errors.labels(code).inc()
    this.ctx.budget.requestEnded()
  }
}
