import type { Socket } from 'node:net'
import { BodyTooLargeError, ClientRequestError, type ConsulLbError } from '../errors.js'
import { answerBytes, errorAnswer } from '../proxy/answers.js'
import type { Exchange } from './exchange.js'
import { RequestFacts } from './head.js'
import { Framing, HttpParser, ParseError } from './llhttp.js'
import { adopt, ReadBuffer, writeLent } from './read-buffer.js'
import type { UpstreamConnection } from './upstream-pool.js'

/** The client-side limits (validated config values). */
export interface ClientLimits {
  maxHeaderBytes: number
  maxBodyBytes: number
  /** Bodies of known length up to this size are read whole before an instance is chosen. */
  requestBufferBytes: number
  /** A client that reads none of its answer for this long is cut off (nginx send_timeout). */
  clientSendTimeoutMs: number
  clientHeadersTimeoutMs: number
  clientRequestTimeoutMs: number
  clientKeepAliveMs: number
}

/** What a client connection asks of the data plane that accepted it. */
export interface ClientHost {
  readonly limits: ClientLimits
  /**
   * A request head was read: `head[headStart, headEnd)`, parsed by `parser`, its headers classified in `facts`.
   * Returns the exchange that takes it, or null when the request was answered at once (no route, body too large).
   */
  request(client: ClientConnection, head: Buffer, headStart: number, headEnd: number, framing: Framing): Exchange | null
  /** The connection is gone. */
  closed(client: ClientConnection): void
  /** A request this connection could not read was answered (malformed, head too large, too slow). */
  refused(e: ClientRequestError): void
}

/**
 * How long a connection the data plane gives up on keeps being read (and what arrives discarded) after its last
 * answer: closing a socket with unread input makes the kernel send RST, and the client may then lose the answer
 * (nginx's lingering_close). As proxy/connection.ts does for the classic data plane.
 */
const LINGER_MS = 1000

enum Read {
  /** Reading a request head. */
  Head = 0,
  /** Forwarding the request body. */
  Body = 1,
  /** The request is read; the answer is not out yet. Bytes that arrive now wait (pipelining). */
  Answer = 2,
  /** After an upgrade, or once the connection is closing: nothing more is parsed. */
  Done = 3,
}

const CRLF = Buffer.from('\r\n', 'latin1')

/** Pipelined requests that may wait behind the one in progress (the classic data plane's limit). */
const MAX_QUEUED = 32

/** How many `\r\n\r\n` are in `b`, counting no further than `max`. */
function countHeadEnds(b: Buffer, max: number): number {
  let n = 0
  for (let i = b.indexOf(HEAD_END); i !== -1 && n < max; i = b.indexOf(HEAD_END, i + 4)) n++
  return n
}
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1')

/** Bytes of a head parsed per step: the rest of a large read (a body) is not copied into the parser. */
const HEAD_WINDOW = 4096

/**
 * One client connection: its bytes are read as they come, each request head parsed once by llhttp, the body
 * forwarded with the framing llhttp decided (a Content-Length counted down, chunked bytes passed through the parser
 * to find their end), requests taken one at a time (pipelined ones wait, reading pauses), answers written as the
 * exchange relays them. Timeouts are deadlines the data plane's sweep checks: no timer per request.
 */
export class ClientConnection {
  readonly socket: Socket
  private readonly host: ClientHost
  readonly parser = new HttpParser('request')
  readonly facts = new RequestFacts()
  readonly remoteAddress: string
  private state = Read.Head
  private headParts: Buffer[] | null = null
  private bodyLeft = 0
  private bodyFraming = Framing.None
  private bodySeen = 0
  private pending: Buffer | null = null
  private exchange: Exchange | null = null
  /** Whether the connection stays open after the current answer (llhttp's verdict on the request, and ours). */
  private persist = true
  isHttp10 = false
  private readingPaused = false
  private driving = false
  private lingering = false
  private corked: Socket | null = null
  private ended = false
  private closed = false
  /** Sweep deadline (ms since epoch) and what it is for. */
  deadline = 0
  private deadlineIsIdle = true
  private requestStartedAt = 0
  requests = 0
  /** Spliced to an instance after a 101: no HTTP left to wait for when the data plane closes. */
  tunnel = false
  /** After a 101: the instance's socket, which the client's bytes now go to as they are. */
  private tunnelTo: Socket | null = null

  /** `accepted`: as the listener accepted it; its handle moves to a socket that reads into a ReadBuffer. */
  constructor(accepted: Socket, host: ClientHost, now: number) {
    const { socket, adopted } = adopt(accepted, new ReadBuffer(this.onBytes), true)
    this.socket = socket
    this.host = host
    this.remoteAddress = socket.remoteAddress ?? ''
    socket.setNoDelay(true)
    if (!adopted) socket.on('data', this.onBytes)
    socket.on('end', this.onEnd)
    socket.on('error', this.onError)
    socket.on('close', this.onClose)
    socket.on('drain', this.onDrain)
    // The first request of a connection has the headers timeout (408 if nothing came); later ones the keep-alive.
    this.deadline = now + host.limits.clientHeadersTimeoutMs
    this.deadlineIsIdle = false
  }

  get keepAlive(): boolean {
    return this.persist
  }

  /** The exchange in progress, if any. */
  get current(): Exchange | null {
    return this.exchange
  }

  get isIdle(): boolean {
    return this.state === Read.Head && this.headParts === null && this.exchange === null
  }

  /** One read: a view of the read buffer, valid until this returns (see read-buffer.ts). */
  private readonly onBytes = (chunk: Buffer): void => {
    if (this.tunnelTo !== null) {
      if (!writeLent(this.tunnelTo, chunk)) this.socket.pause()
    } else this.drive(chunk, 0)
  }

  /**
   * Parses and forwards what one read brought. Writes to an instance made meanwhile are corked until the read is
   * done, so a request head and the body bytes that came with it leave in one write.
   */
  private drive(chunk: Buffer, from: number): void {
    this.driving = true
    try {
      this.driveRead(chunk, from)
    } finally {
      this.driving = false
      this.exchange?.keepHeld()
      if (this.corked !== null) this.uncorkUpstream()
    }
  }

  /**
   * Writes to an instance's socket (corked while a read is being parsed). False: reading should pause until the
   * instance's socket drains.
   */
  writeUpstream(s: Socket, b: Uint8Array): boolean {
    // Only a request whose body is being read can have more bytes for `s` in this read (a GET goes at once).
    if (this.driving && this.state === Read.Body && this.corked !== s) {
      if (this.corked !== null) this.uncorkUpstream()
      s.cork()
      this.corked = s
    }
    // Corked, the bytes leave once the read is handled, and their backlog is judged then.
    return writeLent(s, b) || this.corked === s
  }

  /** The corked bytes leave in one write; reading pauses if some still wait past the high-water mark. */
  private uncorkUpstream(): void {
    const s = this.corked!
    this.corked = null
    s.uncork()
    // needDrain: 'drain' follows, and resumes reading (Exchange.onUpstreamDrain).
    if (s.writableNeedDrain && s.writableLength > 0) this.pauseReading()
  }

  private driveRead(chunk: Buffer, from: number): void {
    let at = from
    const len = chunk.length
    while (at < len) {
      switch (this.state) {
        case Read.Head:
          at = this.readHead(chunk, at)
          break
        case Read.Body:
          at = this.readBody(chunk, at)
          break
        case Read.Answer:
          // The next request (pipelined) waits for this answer; so does the rest of the socket. More than
          // MAX_QUEUED requests waiting cuts the connection, as on the classic plane (counted by head ends in the
          // waiting bytes: a body of blank lines may count too; such a client is cut like a greedy one).
          // A copy: the read buffer is reused once this read is handled.
          this.pending =
            this.pending === null ? Buffer.from(chunk.subarray(at)) : Buffer.concat([this.pending, chunk.subarray(at)])
          if (countHeadEnds(this.pending, MAX_QUEUED + 1) > MAX_QUEUED) {
            this.exchange?.abort()
            this.destroy()
            return
          }
          this.pauseReading()
          return
        default:
          return
      }
    }
  }

  private readHead(chunk: Buffer, at: number): number {
    const p = this.parser
    if (p.headBytes === 0 && this.headParts === null) {
      this.requestStartedAt = Date.now()
      this.deadline = this.requestStartedAt + this.host.limits.clientHeadersTimeoutMs
      this.deadlineIsIdle = false
    }
    const limit = this.host.limits.maxHeaderBytes
    let pos = at
    const len = chunk.length
    try {
      while (!p.headComplete && pos < len) {
        const room = limit - p.headBytes
        if (room <= 0) {
          this.reject(
            new ClientRequestError('CLB_HEADERS_TOO_LARGE', 'request header block over the limit (maxHeaderBytes)'),
          )
          return len
        }
        const end = Math.min(len, pos + HEAD_WINDOW, pos + room)
        const n = p.execute(chunk, pos, end, p.headBytes)
        p.headBytes += n
        pos += n
      }
      if (!p.headComplete) {
        if (this.headParts === null) this.headParts = []
        this.headParts.push(Buffer.from(chunk.subarray(at))) // a copy: the read buffer is reused
        return len
      }
      let head = chunk
      let headStart = at
      let headEnd = pos
      if (this.headParts !== null) {
        this.headParts.push(chunk.subarray(at, pos))
        head = Buffer.concat(this.headParts)
        this.headParts = null
        headStart = 0
        headEnd = head.length
      }
      const framing = p.framing()
      this.startRequest(head, headStart, headEnd, framing)
      return pos
    } catch (err) {
      if (err instanceof ParseError)
        this.reject(new ClientRequestError('CLB_BAD_REQUEST', `malformed request (${err.code})`))
      else throw err
      return len
    }
  }

  private startRequest(head: Buffer, headStart: number, headEnd: number, framing: Framing): void {
    const p = this.parser
    this.requests++
    this.isHttp10 = p.httpMinor === 0
    this.persist = p.shouldKeepAlive
    this.facts.read(head, headStart, p)
    this.bodyFraming = framing
    this.bodySeen = 0
    this.bodyLeft = framing === Framing.Length ? p.contentLength : 0
    const limits = this.host.limits
    this.deadline = limits.clientRequestTimeoutMs > 0 ? this.requestStartedAt + limits.clientRequestTimeoutMs : 0
    this.state = framing === Framing.None || p.upgrade ? Read.Answer : Read.Body
    this.exchange = this.host.request(this, head, headStart, headEnd, framing)
    if (this.exchange === null) {
      // Answered at once. A body not read leaves the connection closing (writeAnswer saw to it); else next request.
      if (this.persist && !this.ended && this.state === Read.Answer && !p.upgrade) {
        this.state = Read.Head
        this.parser.next()
      } else {
        this.closeGently()
      }
      return
    }
    if (framing === Framing.Length && this.bodyLeft === 0) this.endOfBody()
    if (this.state === Read.Answer) this.exchange.onBodyEnd()
    this.exchange.begin(Date.now())
  }

  private readBody(chunk: Buffer, at: number): number {
    const ex = this.exchange
    const len = chunk.length
    if (this.bodyFraming === Framing.Length) {
      const take = Math.min(this.bodyLeft, len - at)
      this.bodyLeft -= take
      ex?.onBody(at === 0 && take === len ? chunk : chunk.subarray(at, at + take))
      if (this.bodyLeft === 0) {
        this.parser.skipLengthBody()
        this.endOfBody()
      }
      return at + take
    }
    // Chunked: llhttp finds the end (chunk sizes, extensions, trailers); the bytes go on as they came, but for the
    // trailer section (see HttpParser.executeChunked).
    const p = this.parser
    let n: number
    try {
      n = p.executeChunked(chunk, at)
    } catch (err) {
      if (!(err instanceof ParseError)) throw err
      // The head may have gone out already: the instance saw a request whose body broke off.
      this.bodyFailed(new ClientRequestError('CLB_BAD_REQUEST', `malformed request body (${err.code})`))
      return len
    }
    this.bodySeen += n
    const max = this.host.limits.maxBodyBytes
    if (max > 0 && this.bodySeen > max) {
      this.bodyFailed(new BodyTooLargeError(max))
      return len
    }
    const keep = p.relayBytes
    if (keep > 0) ex?.onBody(at === 0 && keep === len ? chunk : chunk.subarray(at, at + keep))
    if (p.relayCrlf) ex?.onBody(CRLF)
    if (p.messageComplete) this.endOfBody()
    return at + n
  }

  /** A chunked body broke its framing or went over the limit: answer it if nothing was answered yet, and close. */
  private bodyFailed(e: ConsulLbError): void {
    this.state = Read.Done
    const ex = this.exchange
    if (ex !== null) ex.clientFailed(e)
    else this.closeGently()
  }

  private endOfBody(): void {
    if (this.state === Read.Body) this.state = Read.Answer
    this.deadline = 0
    this.exchange?.onBodyEnd()
  }

  /** Called by the exchange once its answer is out (or failed): the next request, or the end of the connection. */
  exchangeDone(ex: Exchange, now: number): void {
    if (this.exchange !== ex) return
    this.exchange = null
    if (this.tunnel) return
    if (this.state === Read.Done || !this.persist || this.ended || this.state === Read.Body) {
      this.closeGently()
      return
    }
    this.state = Read.Head
    // After an upgrade the instance declined, llhttp waits in its upgraded state: start it afresh.
    if (this.parser.upgrade) this.parser.reset()
    else this.parser.next()
    this.deadline = now + this.host.limits.clientKeepAliveMs
    this.deadlineIsIdle = true
    const pending = this.pending
    this.pending = null
    this.resumeReading()
    if (pending !== null) this.drive(pending, 0)
  }

  /** The connection ends after the current answer. */
  closeAfterAnswer(): void {
    this.persist = false
  }

  /** Bytes for the client; they may be a view of an instance's read buffer (lent until written). */
  /** False: bytes wait in the socket's queue past its high-water mark ('drain' follows, see writeLent). */
  write(b: Uint8Array): boolean {
    return writeLent(this.socket, b)
  }

  /** An answer of our own; `close`: the connection ends after it. */
  writeAnswer(text: string, close: boolean): void {
    if (close) this.persist = false
    if (!this.socket.destroyed) this.socket.write(text)
  }

  /**
   * Ends the connection after what was written, then reads and discards what the client still sends for LINGER_MS
   * (or until it closes its side) before destroying the socket.
   */
  private closeGently(): void {
    this.state = Read.Done
    this.deadline = 0
    const s = this.socket
    if (s.destroyed || this.lingering) return
    this.lingering = true
    this.pending = null
    this.resumeReading()
    if (s.writable) s.end()
    const timer = setTimeout(() => s.destroy(), LINGER_MS)
    timer.unref()
    s.once('close', () => clearTimeout(timer))
  }

  pauseReading(): void {
    if (!this.readingPaused) {
      this.readingPaused = true
      this.socket.pause()
    }
  }

  /** Resumes reading, unless pipelined bytes wait for the answer in progress (they stay the only ones read ahead). */
  resumeReading(): void {
    if (this.readingPaused && this.pending === null) {
      this.readingPaused = false
      this.socket.resume()
    }
  }

  /** Answers a request this connection cannot read (malformed, head too large, too slow) and closes. */
  private reject(e: ClientRequestError): void {
    this.headParts = null
    this.host.refused(e)
    if (this.exchange !== null) {
      // The request being forwarded is broken off: the instance saw part of it; both connections end.
      this.exchange.abort()
      this.destroy()
      return
    }
    if (!this.socket.destroyed && this.socket.writable) this.socket.write(answerBytes(errorAnswer(e, { close: true })))
    this.closeGently()
  }

  /** The sweep found the deadline passed. */
  expire(): void {
    if (this.exchange !== null) {
      // The request (body) did not arrive within clientRequestTimeoutMs: 408 unless an answer is under way.
      this.state = Read.Done
      this.exchange.clientFailed(new ClientRequestError('CLB_CLIENT_TIMEOUT', 'the request did not arrive in time'))
      return
    }
    if (this.deadlineIsIdle) this.destroy()
    else this.reject(new ClientRequestError('CLB_CLIENT_TIMEOUT', 'the request did not arrive in time'))
  }

  /**
   * After a 101: the client's bytes go to the instance's connection `c` and back, untouched, with backpressure both
   * ways and half-closes passed on, until either side closes. `onClose` runs once when the tunnel is gone.
   */
  splice(c: UpstreamConnection, onClose: () => void): void {
    this.state = Read.Done
    this.tunnel = true
    this.deadline = 0
    const s = this.socket
    s.off('drain', this.onDrain)
    const up = c.detach((b) => {
      if (!writeLent(s, b)) up.pause()
    })
    const pending = this.pending
    this.pending = null
    if (pending !== null) up.write(pending)
    this.tunnelTo = up
    let open = true
    const end = (): void => {
      if (!open) return
      open = false
      s.destroy()
      up.destroy()
      onClose()
    }
    up.on('error', end)
    up.on('close', end)
    s.on('close', end)
    s.on('drain', () => up.resume())
    up.on('drain', () => s.resume())
    up.on('end', () => s.end())
    this.readingPaused = false
    s.resume()
    up.resume()
  }

  private readonly onEnd = (): void => {
    if (this.tunnelTo !== null) {
      this.tunnelTo.end()
      return
    }
    this.ended = true
    // Half-closed by the client: an answer in progress still goes out; otherwise we are done.
    if (this.exchange === null || this.state === Read.Body || this.state === Read.Head) {
      this.exchange?.abort()
      this.socket.end()
    }
  }

  private readonly onError = (): void => {
    this.destroy()
  }

  private readonly onDrain = (): void => {
    this.exchange?.onClientDrain()
  }

  private readonly onClose = (): void => {
    if (this.closed) return
    this.closed = true
    this.state = Read.Done
    this.exchange?.abort()
    this.exchange = null
    this.parser.free()
    this.host.closed(this)
  }

  destroy(): void {
    this.socket.destroy()
  }
}
