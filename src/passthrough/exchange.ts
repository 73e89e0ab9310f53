import type { Upstream } from '../balancer/upstream.js'
import type { ServiceTarget } from '../proxy/target.js'
import { errorAnswer } from './answer.js'
import type { ClientConnection } from './client-connection.js'
import { rewriteResponseHead } from './head.js'
import { Framing, ParseError } from './llhttp.js'
import type { ConnectionPool, ConnectionUser, UpstreamConnection } from './upstream-pool.js'

/** An answer the load balancer gives instead of forwarding (no route, no instance, …). */
export interface Refusal {
  status: number
  code: string
  message: string
  retryAfterS?: number
}

/** What an exchange needs from the load balancer that runs it (one object shared by every request). */
export interface ExchangeHost {
  readonly maxInflightPerInstance: number
  readonly retries: number
  readonly retryAfterS: number
  readonly upstreamHeadersTimeoutMs: number
  readonly upstreamBodyTimeoutMs: number
  readonly maxResponseHeaderBytes: number
  /** Shutting down: nothing is retried. */
  readonly isClosing: boolean
  poolFor(u: Upstream): ConnectionPool
  /** Runs `go` once the target can take the request (see PassthroughBalancer.whenReady). */
  whenReady(target: ServiceTarget, go: (refusal: Refusal | null) => void): void
  recordFailure(u: Upstream, code: string, target: ServiceTarget, now: number): void
  recordSuccess(u: Upstream): void
  mayRetry(): boolean
  retryStarted(): void
  retryEnded(): void
  logAttemptFailure(target: ServiceTarget, u: Upstream, code: string, final: boolean, attempts: number): void
  finished(target: ServiceTarget, status: number, code: string | null): void
}

/** Errors that mean "this instance did not take the request (well)": counted against it. */
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
const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])
/** Request body bytes held while no connection is ready, before reading from the client pauses. */
const HOLD_LIMIT = 64 * 1024

enum Resp {
  Head = 0,
  Body = 1,
  Done = 2,
}

/**
 * One request on its way through the pass-through data plane: pick an instance, write the rewritten head and the
 * body bytes as the client sends them, parse the answer's head for its framing, rewrite its hop-by-hop lines in
 * place, and relay the rest as it arrives, with backpressure both ways. An attempt that failed before any byte of
 * an answer is retried on another instance under the classic data plane's rules (idempotent or never sent, no body
 * byte sent, within the retry budget). Every end of the exchange goes through `finish()`, once.
 */
export class Exchange implements ConnectionUser {
  private readonly host: ExchangeHost
  private readonly client: ClientConnection
  readonly target: ServiceTarget
  private readonly head: Buffer
  private readonly isHead: boolean
  readonly isUpgrade: boolean
  private readonly idempotent: boolean
  private readonly hasBody: boolean
  private held: Buffer[] | null = null
  private heldBytes = 0
  private bodyEnded: boolean
  private bodySent = false
  private sent = false
  private upstream: Upstream | null = null
  private conn: UpstreamConnection | null = null
  private tried: Upstream[] | null = null
  private retrying = false
  attempts = 0
  private resp = Resp.Head
  private respFraming = Framing.None
  private respLeft = 0
  private respHeadParts: Buffer[] | null = null
  private respHeadBytes = 0
  /** Bytes of the answer have gone to the client: no retry, and a failure can only cut the connection. */
  private answered = false
  private upstreamPaused = false
  status = 0
  private startedAt = 0
  /** Sweep deadline (ms since epoch) for the instance's answer, 0 when none runs. */
  deadline = 0
  private done = false

  constructor(
    host: ExchangeHost,
    client: ClientConnection,
    target: ServiceTarget,
    head: Buffer,
    opts: { isHead: boolean; isUpgrade: boolean; idempotent: boolean; hasBody: boolean },
  ) {
    this.host = host
    this.client = client
    this.target = target
    this.head = head
    this.isHead = opts.isHead
    this.isUpgrade = opts.isUpgrade
    this.idempotent = opts.idempotent
    this.hasBody = opts.hasBody
    this.bodyEnded = !opts.hasBody
  }

  /**
   * Sends the first attempt once the service has instances (at once, the usual case; or after the bounded wait
   * for a cold name, a revalidation or an empty pool). The client connection holds this exchange before it begins,
   * so an answer given at once finds it.
   */
  begin(): void {
    const e = this.target.entry
    if (e.instances.length > 0 && !e.revalidating) {
      this.start()
      return
    }
    this.host.whenReady(this.target, this.onReady)
  }

  private readonly onReady = (refusal: Refusal | null): void => {
    if (this.done) return
    if (refusal === null) this.start()
    else this.answerError(refusal.status, refusal.code, refusal.message, refusal.retryAfterS)
  }

  private start(): void {
    const u = this.target.pool.pick(Date.now(), this.host.maxInflightPerInstance, null)
    if (u === null) {
      this.answerError(
        503,
        'CLB_NO_HEALTHY_INSTANCE',
        `no healthy instance of ${this.target.service} (every instance is at its connection cap)`,
        this.host.retryAfterS,
      )
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
    this.sent = false
    const c = this.host.poolFor(u).acquire(this)
    this.conn = c
    if (c.connected) this.send(c)
  }

  onUpstreamConnected(c: UpstreamConnection): void {
    if (c === this.conn) this.send(c)
  }

  /** Head, then whatever body bytes arrived meanwhile: corked, so a small request leaves in one write. */
  private send(c: UpstreamConnection): void {
    this.sent = true
    c.parser.skipBody = this.isHead
    this.deadline = Date.now() + this.host.upstreamHeadersTimeoutMs
    const held = this.held
    if (held === null) {
      c.write(this.head)
      return
    }
    this.held = null
    this.bodySent = true
    const s = c.socket
    s.cork()
    s.write(this.head)
    let ok = true
    for (let i = 0; i < held.length; i++) ok = s.write(held[i]!)
    s.uncork()
    if (this.heldBytes >= HOLD_LIMIT) this.client.resumeReading()
    this.heldBytes = 0
    if (!ok) this.client.pauseReading()
  }

  /** Request body bytes from the client, exactly those of this request. */
  onBody(chunk: Buffer): void {
    const c = this.conn
    if (c !== null && this.sent) {
      this.bodySent = true
      if (!c.write(chunk)) this.client.pauseReading()
      return
    }
    if (this.held === null) this.held = []
    this.held.push(chunk)
    this.heldBytes += chunk.length
    if (this.heldBytes >= HOLD_LIMIT) this.client.pauseReading()
  }

  onBodyEnd(): void {
    this.bodyEnded = true
  }

  onUpstreamDrain(): void {
    this.client.resumeReading()
  }

  /** The client's socket drained: the instance may send again. */
  onClientDrain(): void {
    if (this.upstreamPaused && this.conn !== null) {
      this.upstreamPaused = false
      this.conn.socket.resume()
    }
  }

  private toClient(b: Uint8Array): void {
    if (!this.client.write(b) && this.conn !== null && !this.upstreamPaused) {
      this.upstreamPaused = true
      this.conn.socket.pause()
    }
  }

  onUpstreamData(c: UpstreamConnection, chunk: Buffer): void {
    let at = 0
    const len = chunk.length
    try {
      while (at < len) {
        if (this.resp === Resp.Head) {
          at = this.readHead(c, chunk, at)
          // Done: the answer ended in this read (the exchange may be finished). Head: a 1xx went by, or the head
          // continues in the next read (then nothing is left of this one).
          if ((this.resp as Resp) === Resp.Done) return
          continue
        }
        if (this.respFraming === Framing.Length) {
          const take = Math.min(this.respLeft, len - at)
          this.toClient(at === 0 && take === len ? chunk : chunk.subarray(at, at + take))
          at += take
          this.respLeft -= take
          if (this.respLeft === 0) {
            c.parser.skipLengthBody()
            this.responseEnd(c, at === len)
            return
          }
        } else if (this.respFraming === Framing.Chunked) {
          const n = c.parser.execute(chunk, at, len, 0)
          this.toClient(at === 0 && n === len ? chunk : chunk.subarray(at, at + n))
          at += n
          if (c.parser.messageComplete) {
            this.responseEnd(c, at === len)
            return
          }
        } else {
          this.toClient(at === 0 ? chunk : chunk.subarray(at))
          at = len
        }
      }
      this.deadline = Date.now() + this.host.upstreamBodyTimeoutMs
    } catch (err) {
      this.protocolError(c, err)
    }
  }

  /** Parses (part of) the answer's head; at its end rewrites it and sends it with the body bytes that came along. */
  private readHead(c: UpstreamConnection, chunk: Buffer, at: number): number {
    const p = c.parser
    const len = chunk.length
    const limit = this.host.maxResponseHeaderBytes - this.respHeadBytes
    const end = Math.min(len, at + limit)
    const n = p.execute(chunk, at, end, this.respHeadBytes)
    if (!p.headComplete) {
      if (end - at >= limit) throw new ParseError('HPE_HEADER_OVERFLOW', 'answer head too large')
      if (this.respHeadParts === null) this.respHeadParts = []
      this.respHeadParts.push(at === 0 && n === len ? chunk : chunk.subarray(at, at + n))
      this.respHeadBytes += n
      return at + n
    }
    let buf = chunk
    let headStart = at
    let headEnd = at + n
    if (this.respHeadParts !== null) {
      this.respHeadParts.push(chunk.subarray(at, at + n))
      buf = Buffer.concat(this.respHeadParts)
      headStart = 0
      headEnd = buf.length
      this.respHeadParts = null
    }
    this.respHeadBytes = 0
    const status = p.statusCode
    const framing = p.framing()
    if (status < 200 && status !== 101) {
      // 1xx interim answers (100 Continue, 103 Early Hints) are not relayed, as in the classic data plane; the
      // final answer follows on the same connection.
      p.next()
      p.skipBody = this.isHead
      return at + n
    }
    const u = this.upstream!
    this.host.recordSuccess(u)
    this.target.stats.observe((Date.now() - this.startedAt) / 1000)
    this.status = status
    this.answered = true
    if (status === 101) {
      if (!this.isUpgrade) throw new ParseError('HPE_UNEXPECTED_101', 'a 101 answer to a request that asked no upgrade')
      this.tunnel(c, buf, headStart, headEnd, chunk, at + n)
      return len
    }
    this.respFraming = framing
    if (framing === Framing.Length) this.respLeft = p.contentLength
    // The client connection ends after this answer when its request said so, when the answer ends with the
    // instance's connection, or when the request body is still arriving (its end cannot be waited for).
    const close = !this.client.keepAlive || framing === Framing.UntilClose || !this.bodyEnded
    if (close) this.client.closeAfterAnswer()
    const rewritten = rewriteResponseHead(buf, headStart, headEnd, p, {
      connection: close ? 'close' : this.client.isHttp10 ? 'keep-alive' : null,
      isUpgrade: false,
    })
    this.resp = framing === Framing.None ? Resp.Done : Resp.Body
    if (typeof rewritten !== 'number') {
      this.toClient(rewritten)
      if (this.resp === Resp.Done) this.responseEnd(c, at + n === len)
      return at + n
    }
    // In place: the head and the body bytes that follow it in this read leave in one write.
    let bodyEnd = headEnd
    if (buf === chunk) {
      if (framing === Framing.Length) {
        const take = Math.min(this.respLeft, len - headEnd)
        bodyEnd += take
        this.respLeft -= take
      } else if (framing === Framing.Chunked) {
        bodyEnd += p.execute(chunk, headEnd, len, 0)
      } else if (framing === Framing.UntilClose) {
        bodyEnd = len
      }
    }
    this.toClient(buf.subarray(rewritten, bodyEnd))
    const next = buf === chunk ? bodyEnd : at + n
    if (framing === Framing.None || (framing === Framing.Length && this.respLeft === 0)) {
      if (framing === Framing.Length) p.skipLengthBody()
      this.responseEnd(c, next === len)
    } else if (framing === Framing.Chunked && p.messageComplete) {
      this.responseEnd(c, next === len)
    }
    return next
  }

  /**
   * The whole answer is out. `clean`: nothing followed it in the read (bytes after a complete answer mean the
   * instance is out of step: that connection is not reused). The caller returns at once: finishing may start the
   * client's next request, which may take this very connection from the pool.
   */
  private responseEnd(c: UpstreamConnection, clean: boolean): void {
    this.resp = Resp.Done
    this.deadline = 0
    // An answer that came before the whole request body (an early 413, a redirect) leaves a connection that cannot
    // be reused; the client connection closes after the answer (closeAfterAnswer was decided with the head).
    if (!clean || !this.bodyEnded) {
      this.conn = null
      c.destroy()
    }
    this.complete()
  }

  private complete(): void {
    if (this.done) return
    const c = this.conn
    const u = this.upstream
    this.conn = null
    if (c !== null) {
      if (c.parser.shouldKeepAlive && this.bodyEnded && !this.upstreamPaused) c.pool.release(c, Date.now())
      else c.destroy()
    }
    this.finish(u, this.status, null)
  }

  onUpstreamEnd(c: UpstreamConnection): void {
    if (this.resp === Resp.Body && this.respFraming === Framing.UntilClose) {
      this.conn = null
      c.destroy()
      this.resp = Resp.Done
      this.finish(this.upstream, this.status, null)
      return
    }
    this.onUpstreamError(c, 'UND_ERR_SOCKET', null)
  }

  onUpstreamError(c: UpstreamConnection, code: string, _err: Error | null): void {
    if (this.done || c !== this.conn) return
    this.conn = null
    c.destroy()
    this.attemptFailed(code)
  }

  private protocolError(c: UpstreamConnection, err: unknown): void {
    this.conn = null
    c.destroy()
    // A malformed answer is the instance's failure; counted like a reset connection.
    this.attemptFailed(err instanceof ParseError ? 'UND_ERR_SOCKET' : 'ECONNRESET')
  }

  /** The instance's answer did not come in time (the sweep calls this). */
  timedOut(): void {
    const c = this.conn
    if (c === null || this.done) return
    this.conn = null
    c.destroy()
    this.attemptFailed(this.resp === Resp.Head ? 'UND_ERR_HEADERS_TIMEOUT' : 'UND_ERR_BODY_TIMEOUT')
  }

  /** The client went away: stop the instance's work too (long answers, event streams). */
  abort(): void {
    if (this.done) return
    const c = this.conn
    this.conn = null
    c?.destroy()
    this.finish(this.upstream, 499, null)
  }

  private attemptFailed(code: string): void {
    const u = this.upstream!
    const now = Date.now()
    this.deadline = 0
    if (INSTANCE_FAILURES.has(code)) this.host.recordFailure(u, code, this.target, now)
    if (!this.answered && this.isRetryable(code)) {
      if (this.tried === null) this.tried = []
      this.tried.push(u)
      const next = this.target.pool.pick(now, this.host.maxInflightPerInstance, this.tried)
      if (next !== null) {
        this.host.logAttemptFailure(this.target, u, code, false, this.attempts)
        this.target.stats.retries++
        if (!this.retrying) {
          this.retrying = true
          this.host.retryStarted()
        }
        u.inflight--
        this.dispatch(next)
        return
      }
    }
    this.host.logAttemptFailure(this.target, u, code, true, this.attempts)
    if (this.answered) {
      // Part of the answer is out: the only honest signal left is to cut the connection.
      this.client.destroy()
      this.finish(u, this.status, null)
      return
    }
    const where = `${this.target.service} instance ${u.key}`
    const tries = this.attempts > 1 ? ` after ${this.attempts} attempts` : ''
    this.upstream = null
    u.inflight--
    if (TIMEOUTS.has(code)) this.answerError(504, 'CLB_UPSTREAM_TIMEOUT', `${where} did not answer in time${tries}`)
    else this.answerError(502, 'CLB_UPSTREAM_FAILED', `${where} failed (${code})${tries}`)
  }

  /**
   * As in the classic data plane: safe when no body byte was sent (a body we started sending cannot be replayed)
   * and the request either is idempotent or provably never reached the instance. Bounded by the attempt count and
   * the retry budget.
   */
  private isRetryable(code: string): boolean {
    if (!INSTANCE_FAILURES.has(code) || this.attempts > this.host.retries || this.host.isClosing) return false
    if (this.bodySent) return false
    if (!CONNECT_FAILURES.has(code) && !this.idempotent && (this.hasBody || code === 'UND_ERR_HEADERS_TIMEOUT'))
      return false
    return this.retrying || this.host.mayRetry()
  }

  answerError(status: number, code: string, message: string, retryAfterS?: number): void {
    // A request body not read to its end would be parsed as the next request: such connections close.
    const close = !this.bodyEnded || !this.client.keepAlive
    this.client.writeAnswer(
      errorAnswer(status, code, message, {
        accept: this.client.facts.accept,
        isHead: this.isHead,
        close,
        ...(retryAfterS === undefined ? {} : { retryAfterS }),
      }),
      close,
    )
    this.status = status
    this.finish(this.upstream, status, code)
  }

  /** After a 101: the head goes to the client, then the two connections are spliced until either closes. */
  private tunnel(c: UpstreamConnection, buf: Buffer, headStart: number, headEnd: number, chunk: Buffer, rest: number) {
    const rewritten = rewriteResponseHead(buf, headStart, headEnd, c.parser, { connection: null, isUpgrade: true })
    this.client.write(typeof rewritten === 'number' ? buf.subarray(rewritten, headEnd) : rewritten)
    if (rest < chunk.length) this.client.write(chunk.subarray(rest))
    this.conn = null
    this.resp = Resp.Done
    this.deadline = 0
    const up = c.detach()
    const u = this.upstream!
    this.upstream = null
    this.finish(null, 101, null)
    this.client.splice(up, () => {
      u.inflight--
    })
  }

  private finish(u: Upstream | null, status: number, code: string | null): void {
    if (this.done) return
    this.done = true
    this.deadline = 0
    if (u !== null) u.inflight--
    this.upstream = null
    if (this.retrying) {
      this.retrying = false
      this.host.retryEnded()
    }
    this.host.finished(this.target, status, code)
    this.client.exchangeDone(this)
  }
}
