import type { Counter } from 'prom-client'
import type { Upstream } from '../balancer/upstream.js'
import { type ConsulLbError, UpstreamError } from '../errors.js'
import type { Logger } from '../log.js'
import { answerBytes, errorAnswer } from '../proxy/answers.js'
import { isRetryable, type RetryBudget, TIMEOUTS } from '../proxy/retry.js'
import type { ServiceTarget } from '../proxy/target.js'
import type { ClientConnection } from './client-connection.js'
import { rewriteResponseHead } from './head.js'
import { Framing, ParseError } from './llhttp.js'
import { lend } from './read-buffer.js'
import type { ConnectionPool, ConnectionUser, UpstreamConnection } from './upstream-pool.js'

/** What every exchange of one pass-through data plane shares: small owners and settings, never the proxy itself. */
export interface PassthroughContext {
  readonly budget: RetryBudget
  /** 1 + --retries. */
  readonly maxAttempts: number
  readonly retryAfterS: number
  /** consul_lb_errors_total{code}. */
  readonly errors: Counter<'code'>
  readonly log: Logger
  readonly upstreamHeadersTimeoutMs: number
  readonly upstreamBodyTimeoutMs: number
  /** A client that reads none of its answer for this long is cut off (nginx send_timeout). */
  readonly clientSendTimeoutMs: number
  /** Largest answer head accepted from an instance (a longer one fails the attempt). */
  readonly maxResponseHeadBytes: number
  /** The keep-alive connections of an instance. */
  poolFor(u: Upstream): ConnectionPool
}

/** What the exchange knows of its request. */
export interface RequestInfo {
  method: string
  isHead: boolean
  hasBody: boolean
  /** The protocols an upgrade asked for (lower case); null for a plain request. */
  upgrade: readonly string[] | null
  json: boolean
  /** `Expect: 100-continue` with a body: this listener sends the 100 once it has decided to forward. */
  expectContinue: boolean
  /** Read the (small, known-length) body whole before choosing an instance. */
  bufferBody: boolean
}

const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n', 'latin1')
const CRLF = Buffer.from('\r\n', 'latin1')

/** Bytes of an answer head parsed per step. */
const HEAD_WINDOW = 4096
/** Request body bytes held while no connection is ready, before reading from the client pauses. */
const HOLD_LIMIT = 64 * 1024

enum Resp {
  Head = 0,
  Body = 1,
  Done = 2,
}

/**
 * One request on its way through the pass-through data plane, from the moment it is routed to its last byte: pick an
 * instance, write the rewritten head and the body bytes as the client sends them, parse the answer's head for its
 * framing, rewrite its hop-by-hop lines in place, and relay the rest as it arrives, with backpressure both ways. An
 * attempt that failed before any byte of an answer is retried on another instance under the classic data plane's
 * rules (proxy/retry.ts) and budget. An upgrade goes on a connection of its own and becomes a tunnel only after a 101
 * naming a protocol the client asked for (as proxy/tunnel.ts does on node:http).
 *
 * It owns what the request holds and gives each back in one place: the instance slot of the attempt in flight
 * (`endAttempt`, the only caller of `Upstream.end()` here; a tunnel gives its slot back when it closes), and its
 * request slot, retry slot and counters (`finish`, reached exactly once however the request ends).
 */
export class Exchange implements ConnectionUser {
  private readonly ctx: PassthroughContext
  private readonly client: ClientConnection
  readonly target: ServiceTarget
  private readonly head: Buffer
  private readonly req: RequestInfo
  private held: Buffer[] | null = null
  private heldBytes = 0
  /** The last this many chunks of `held` are views of the client's read buffer, copied if still held after it. */
  private heldBorrowed = 0
  private bodyEnded: boolean
  private bodySent = false
  private sent = false
  private upstream: Upstream | null = null
  private lastUpstream: Upstream | null = null
  private conn: UpstreamConnection | null = null
  private tried: Upstream[] | null = null
  private holdsRetry = false
  private attempts = 0
  private resp = Resp.Head
  private respFraming = Framing.None
  private respLeft = 0
  private respHeadParts: Buffer[] | null = null
  private respHeadBytes = 0
  /** Bytes of the answer have gone to the client: no retry, and a failure can only cut the connection. */
  private answered = false
  private upstreamPaused = false
  private status = 0
  private startedAt = 0
  /** Sweep deadline (ms since epoch) for the instance's answer, 0 when none runs. */
  deadline = 0
  private done = false
  private waitingForBody = false
  /** The deadline is the client's (it reads nothing of its answer), not the instance's. */
  private clientStalled = false

  constructor(
    ctx: PassthroughContext,
    client: ClientConnection,
    target: ServiceTarget,
    head: Buffer,
    req: RequestInfo,
  ) {
    this.ctx = ctx
    this.client = client
    this.target = target
    this.head = head
    this.req = req
    this.bodyEnded = !req.hasBody
    ctx.budget.requestStarted()
  }

  /**
   * Sends the first attempt once the service can take it: at once when the cached answer lists instances (the usual
   * case), else after the wait `target.ready()` calls for. The client connection holds this exchange before it
   * begins, so an answer given at once finds it.
   */
  begin(now: number): void {
    const ready = this.target.ready(now)
    if (ready === true) this.start(now)
    else if (ready === false) this.proceed(false)
    else void ready.then(this.proceed)
  }

  private readonly proceed = (ready: boolean): void => {
    if (this.done) return
    if (ready) this.start(Date.now())
    else this.fail(this.target.unavailable())
  }

  /** The service has instances: read a small body whole if there is one, then send the first attempt. */
  private start(now: number): void {
    // Decided: route, limits and readiness are known, so the client may send its body now (RFC 9110 §10.1.1).
    if (this.req.expectContinue) this.client.write(CONTINUE)
    if (this.req.bufferBody && !this.bodyEnded) {
      // onBodyEnd goes on; the client connection's request timeout bounds the wait.
      this.waitingForBody = true
      return
    }
    this.dispatchFirst(now)
  }

  private dispatchFirst(now: number): void {
    const u = this.target.pool.pick(now, null)
    if (u === null) this.fail(this.target.unavailable(true))
    else this.dispatch(u, now)
  }

  private dispatch(u: Upstream, now: number): void {
    this.upstream = u
    this.lastUpstream = u
    this.attempts++
    u.begin(now)
    this.startedAt = now
    this.sent = false
    const pool = this.ctx.poolFor(u)
    // An upgrade's connection is never reused: after a 101 it carries another protocol.
    const c = this.req.upgrade === null ? pool.acquire(this) : pool.open(this)
    this.conn = c
    if (c.connected) this.send(c, now)
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

  onUpstreamConnected(c: UpstreamConnection): void {
    if (c === this.conn) this.send(c, Date.now())
  }

  /** Head, then whatever body bytes arrived meanwhile: corked, so a small request leaves in one write. */
  private send(c: UpstreamConnection, now: number): void {
    this.sent = true
    c.parser.skipBody = this.req.isHead
    this.deadline = now + this.ctx.upstreamHeadersTimeoutMs
    const held = this.held
    if (held === null) {
      this.client.writeUpstream(c.socket, this.head)
      return
    }
    this.held = null
    this.heldBorrowed = 0
    this.bodySent = true
    const s = c.socket
    s.cork()
    s.write(this.head)
    let ok = true
    for (let i = 0; i < held.length; i++) ok = s.write(held[i]!)
    s.uncork()
    // The last chunks may be views of the client's read buffer (sent in the read that ended the body).
    lend(s)
    if (this.heldBytes >= HOLD_LIMIT) this.client.resumeReading()
    this.heldBytes = 0
    // Uncorked, the bytes went out at once as far as the kernel took them: pause only for what still waits.
    if (!ok && s.writableLength > 0) this.client.pauseReading()
  }

  /** Request body bytes from the client, exactly those of this request. */
  onBody(chunk: Buffer): void {
    if (this.done) return
    const c = this.conn
    if (c !== null && this.sent) {
      this.bodySent = true
      if (!this.client.writeUpstream(c.socket, chunk)) this.client.pauseReading()
      return
    }
    if (this.held === null) this.held = []
    this.held.push(chunk)
    this.heldBorrowed++
    this.heldBytes += chunk.length
    if (this.heldBytes >= HOLD_LIMIT && !this.req.bufferBody) this.client.pauseReading()
  }

  /**
   * The client's read is handled and its buffer will be reused: body bytes from it still held (no connection was
   * ready, or the body is read whole first and continues in a later read) are copied. A small body that arrived with
   * its head went out before this, uncopied.
   */
  keepHeld(): void {
    const h = this.held
    if (h !== null) for (let i = h.length - this.heldBorrowed; i < h.length; i++) h[i] = Buffer.from(h[i]!)
    this.heldBorrowed = 0
  }

  onBodyEnd(): void {
    this.bodyEnded = true
    if (this.waitingForBody) {
      this.waitingForBody = false
      this.dispatchFirst(Date.now())
    }
  }

  onUpstreamDrain(): void {
    this.client.resumeReading()
  }

  /** The client's socket drained: the instance may send again. */
  onClientDrain(): void {
    if (this.upstreamPaused && this.conn !== null) {
      this.upstreamPaused = false
      this.clientStalled = false
      this.deadline = Date.now() + this.ctx.upstreamBodyTimeoutMs
      this.conn.socket.resume()
    }
  }

  /**
   * Backpressure: the client reads slower than the instance sends, so the instance's socket pauses until the client's
   * drains; and the client has clientSendTimeoutMs to read something (the sweep checks the deadline).
   */
  private toClient(b: Uint8Array): void {
    if (!this.client.write(b) && this.conn !== null && !this.upstreamPaused) {
      this.upstreamPaused = true
      this.conn.socket.pause()
      this.clientStalled = true
      this.deadline = Date.now() + this.ctx.clientSendTimeoutMs
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
            this.responseEnd(c, at === len, Date.now())
            return
          }
        } else if (this.respFraming === Framing.Chunked) {
          const p = c.parser
          const n = p.executeChunked(chunk, at)
          const keep = p.relayBytes
          if (keep > 0) this.toClient(at === 0 && keep === len ? chunk : chunk.subarray(at, at + keep))
          if (p.relayCrlf) this.toClient(CRLF)
          at += n
          if (c.parser.messageComplete) {
            this.responseEnd(c, at === len, Date.now())
            return
          }
        } else {
          this.toClient(at === 0 ? chunk : chunk.subarray(at))
          at = len
        }
      }
      if (!this.clientStalled) this.deadline = Date.now() + this.ctx.upstreamBodyTimeoutMs
    } catch (err) {
      this.protocolError(c, err)
    }
  }

  /** Parses (part of) the answer's head; at its end rewrites it and sends it with the body bytes that came along. */
  private readHead(c: UpstreamConnection, chunk: Buffer, at: number): number {
    const p = c.parser
    const len = chunk.length
    // The head is parsed in windows: the rest of a large read (the body) is never copied into the parser.
    let n = 0
    while (!p.headComplete && at + n < len) {
      const room = this.ctx.maxResponseHeadBytes - this.respHeadBytes - n
      if (room <= 0) throw new ParseError('HPE_HEADER_OVERFLOW', 'answer head too large')
      n += p.execute(chunk, at + n, Math.min(len, at + n + HEAD_WINDOW, at + n + room), this.respHeadBytes + n)
    }
    if (!p.headComplete) {
      if (this.respHeadParts === null) this.respHeadParts = []
      this.respHeadParts.push(Buffer.from(chunk.subarray(at, at + n))) // a copy: the read buffer is reused
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
    // No Expect is ever forwarded, so a 100 Continue is unsolicited: a broken instance (as undici judges it).
    if (status === 100) throw new ParseError('HPE_UNEXPECTED_100', 'an unsolicited 100 Continue')
    if (status < 200 && status !== 101) {
      // Interim answers: 103 Early Hints is relayed (a proxy forwards 1xx, RFC 9110 §15.2; never to HTTP/1.0), others
      // (102) are not. The final answer follows on the same connection.
      if (status === 103 && !this.client.isHttp10 && !this.answered) {
        const r = rewriteResponseHead(buf, headStart, headEnd, p, { status, close: false, keepAlive10: false })
        this.toClient(typeof r === 'number' ? buf.subarray(r, headEnd) : r)
      }
      p.next()
      p.skipBody = this.req.isHead
      return at + n
    }
    const u = this.upstream!
    const now = Date.now()
    u.recordSuccess(now - this.startedAt, now)
    this.target.stats.observe((now - this.startedAt) / 1000)
    this.status = status
    if (this.req.upgrade !== null) {
      if (status === 101) {
        this.tunnel(c, buf, headStart, headEnd, chunk, at + n)
        return len
      }
      // Not a 101: relayed as a plain answer, and the client connection closes after it (it may hold bytes meant
      // for a tunnel); the instance's connection is not reused either.
      this.client.closeAfterAnswer()
    } else if (status === 101) {
      throw new ParseError('HPE_UNEXPECTED_101', 'a 101 answer to a request that asked no upgrade')
    }
    this.answered = true
    this.respFraming = framing
    if (framing === Framing.Length) this.respLeft = p.contentLength
    // The client connection ends after this answer when its request said so, when the answer ends with the
    // instance's connection, or when the request body is still arriving (its end cannot be waited for).
    if (framing === Framing.UntilClose || !this.bodyEnded) this.client.closeAfterAnswer()
    const close = !this.client.keepAlive
    const rewritten = rewriteResponseHead(buf, headStart, headEnd, p, {
      status,
      close,
      keepAlive10: !close && this.client.isHttp10,
    })
    this.resp = framing === Framing.None ? Resp.Done : Resp.Body
    if (typeof rewritten !== 'number' || buf !== chunk) {
      this.toClient(typeof rewritten === 'number' ? buf.subarray(rewritten, headEnd) : rewritten)
      if (this.resp === Resp.Done) this.responseEnd(c, at + n === len, now)
      return at + n
    }
    // In place: the head and the body bytes that follow it in this read leave in one write (a chunked body's
    // trailer section excepted, see chunked.ts).
    let bodyEnd = headEnd
    let sendEnd = headEnd
    if (framing === Framing.Length) {
      const take = Math.min(this.respLeft, len - headEnd)
      bodyEnd += take
      sendEnd = bodyEnd
      this.respLeft -= take
    } else if (framing === Framing.Chunked) {
      bodyEnd += p.executeChunked(chunk, headEnd)
      sendEnd = headEnd + p.relayBytes
    } else if (framing === Framing.UntilClose) {
      bodyEnd = len
      sendEnd = len
    }
    this.toClient(buf.subarray(rewritten, sendEnd))
    if (framing === Framing.Chunked && p.relayCrlf) this.toClient(CRLF)
    if (framing === Framing.None || (framing === Framing.Length && this.respLeft === 0)) {
      if (framing === Framing.Length) p.skipLengthBody()
      this.responseEnd(c, bodyEnd === len, now)
    } else if (framing === Framing.Chunked && p.messageComplete) {
      this.responseEnd(c, bodyEnd === len, now)
    }
    return bodyEnd
  }

  /**
   * The whole answer is out. `clean`: nothing followed it in the read (bytes after a complete answer mean the
   * instance is out of step: that connection is not reused). The caller returns at once: finishing may start the
   * client's next request, which may take this very connection from the pool.
   */
  private responseEnd(c: UpstreamConnection, clean: boolean, now: number): void {
    this.resp = Resp.Done
    this.deadline = 0
    this.conn = null
    // An answer that came before the whole request body (an early 413, a redirect) leaves a connection that cannot
    // be reused; the client connection closes after the answer (decided with the head).
    if (clean && this.bodyEnded && this.req.upgrade === null && c.parser.keepAlive && !this.upstreamPaused)
      c.pool.release(c, now)
    else c.destroy()
    this.finish(this.status, null, now)
  }

  onUpstreamEnd(c: UpstreamConnection): void {
    if (this.resp === Resp.Body && this.respFraming === Framing.UntilClose && c === this.conn) {
      this.conn = null
      c.destroy()
      this.resp = Resp.Done
      this.finish(this.status, null)
      return
    }
    this.onUpstreamError(c, 'UND_ERR_SOCKET', null)
  }

  onUpstreamError(c: UpstreamConnection, code: string, err: Error | null): void {
    if (this.done || c !== this.conn) return
    this.conn = null
    c.destroy()
    this.attemptFailed(code, err)
  }

  private protocolError(c: UpstreamConnection, err: unknown): void {
    if (c === this.conn) this.conn = null
    c.destroy()
    if (this.done) return
    // A malformed answer is the instance's failure; counted like a broken connection.
    if (!(err instanceof ParseError)) throw err
    this.attemptFailed('UND_ERR_SOCKET', err)
  }

  /** The instance's answer did not come in time, or the client read none of it in time (the sweep calls this). */
  timedOut(): void {
    const c = this.conn
    if (c === null || this.done) return
    if (this.clientStalled) {
      // The client reads nothing: it is cut off and the instance slot comes back (the answer cannot be finished).
      this.conn = null
      c.destroy()
      this.client.destroy()
      this.finish(this.status, 'CLB_CLIENT_TIMEOUT')
      return
    }
    this.conn = null
    c.destroy()
    this.attemptFailed(this.resp === Resp.Head ? 'UND_ERR_HEADERS_TIMEOUT' : 'UND_ERR_BODY_TIMEOUT', null)
  }

  /**
   * The request's body broke off (bad chunk framing, over maxBodyBytes): the instance's connection goes (it holds a
   * partial request), and the client hears why unless part of an answer is already out.
   */
  clientFailed(e: ConsulLbError): void {
    if (this.done) return
    const c = this.conn
    this.conn = null
    c?.destroy()
    this.endAttempt()
    this.bodyEnded = false
    if (this.answered) {
      this.client.destroy()
      this.finish(this.status, null)
      return
    }
    this.fail(e)
  }

  /** The client went away (or broke its request off): stop the instance's work too. */
  abort(): void {
    if (this.done) return
    const c = this.conn
    this.conn = null
    c?.destroy()
    this.finish(499, null)
  }

  private attemptFailed(code: string, err: Error | null): void {
    const u = this.endAttempt()
    if (u === null) return
    const now = Date.now()
    this.deadline = 0
    this.target.attemptFailed(u, code, now, this.ctx.log)
    if (!this.answered && this.mayRetry(code)) {
      if (this.tried === null) this.tried = []
      const ctx = this.ctx
      const next = this.target.retryAfter(u, code, this.tried, this.attempts, now, this.holdsRetry, ctx.budget, ctx.log)
      if (next !== null) {
        this.holdsRetry = true
        this.resp = Resp.Head
        this.respHeadParts = null
        this.respHeadBytes = 0
        this.dispatch(next, now)
        return
      }
    }
    const where = `${this.target.service} instance ${u.key}`
    this.ctx.log.warn(
      { service: this.target.service, instance: u.key, code, attempts: this.attempts, method: this.req.method },
      `upstream request failed: ${err?.message ?? code}`,
    )
    if (this.answered) {
      // Part of the answer is out: the only honest signal left is to cut the connection.
      this.client.destroy()
      this.finish(this.status, null)
      return
    }
    const tries = this.attempts > 1 ? ` after ${this.attempts} attempts` : ''
    this.fail(
      TIMEOUTS.has(code)
        ? new UpstreamError('CLB_UPSTREAM_TIMEOUT', `${where} did not answer in time${tries}`)
        : new UpstreamError('CLB_UPSTREAM_FAILED', `${where} failed (${code})${tries}`),
    )
  }

  private mayRetry(code: string): boolean {
    // An upgrade is never retried (as on the classic data plane): its connection is its own.
    if (this.req.upgrade !== null) return false
    return isRetryable({
      code,
      method: this.req.method,
      hasBody: this.req.hasBody,
      bodyStarted: this.bodySent,
      attempts: this.attempts,
      maxAttempts: this.ctx.maxAttempts,
    })
  }

  /** Answers with the error (the client connection closes if the request body was not read to its end). */
  fail(e: ConsulLbError): void {
    if (this.done) return
    const close = !this.bodyEnded || this.req.upgrade !== null || !this.client.keepAlive
    const a = errorAnswer(e, { json: this.req.json, retryAfterS: this.ctx.retryAfterS, close })
    this.client.writeAnswer(answerBytes(a, this.req.isHead), close)
    this.target.stats.recordError(e, Date.now())
    this.finish(e.statusCode, e.code)
  }

  /** After a 101 naming a protocol the client asked for: the head goes to the client, then the sockets are spliced. */
  private tunnel(c: UpstreamConnection, buf: Buffer, headStart: number, headEnd: number, chunk: Buffer, rest: number) {
    const got = upgradeOf(buf, headStart, c)
    const asked = this.req.upgrade!
    if (!got.split(',').some((p) => asked.includes(p.trim().toLowerCase()))) {
      this.conn = null
      c.destroy()
      this.endAttempt()
      this.fail(
        new UpstreamError(
          'CLB_UPSTREAM_FAILED',
          `${this.target.service} instance ${this.lastUpstream!.key} switched to "${got}", which the client did not ask for (RFC 9110 §7.8)`,
        ),
      )
      return
    }
    const r = rewriteResponseHead(buf, headStart, headEnd, c.parser, { status: 101, close: false, keepAlive10: false })
    this.client.write(typeof r === 'number' ? buf.subarray(r, headEnd) : r)
    if (rest < chunk.length) this.client.write(chunk.subarray(rest))
    this.conn = null
    this.resp = Resp.Done
    this.deadline = 0
    this.answered = true
    const u = this.upstream!
    this.upstream = null
    // The slot leaves the request count for the tunnel count (open tunnels do not use up the instance's cap).
    u.promoteToTunnel()
    // Spliced before the exchange ends, so the client connection knows it is a tunnel now (not a next request).
    this.client.splice(c, () => u.endTunnel())
    this.finish(101, null)
  }

  /** The only place the exchange ends: its instance slot, retry slot, request slot and counters, given back once. */
  private finish(status: number, code: string | null, now = Date.now()): void {
    if (this.done) return
    this.done = true
    this.deadline = 0
    this.endAttempt()
    if (this.holdsRetry) {
      this.holdsRetry = false
      this.ctx.budget.retryEnded()
    }
    this.target.stats.count(status, now)
    if (code !== null) this.ctx.errors.labels(code).inc()
    this.ctx.budget.requestEnded()
    this.client.exchangeDone(this, now)
  }
}

/** The Upgrade value(s) of a 101 answer, lower case ("" when none). */
function upgradeOf(buf: Buffer, headStart: number, c: UpstreamConnection): string {
  const p = c.parser
  const s = p.spans
  let out = ''
  for (let i = 2; i < p.spanCount; i += 4) {
    if (s[i + 1] !== 7 || buf.toString('latin1', headStart + s[i]!, headStart + s[i]! + 7).toLowerCase() !== 'upgrade')
      continue
    const v = buf.toString('latin1', headStart + s[i + 2]!, headStart + s[i + 2]! + s[i + 3]!)
    out = out === '' ? v : `${out}, ${v}`
  }
  return out.toLowerCase()
}
