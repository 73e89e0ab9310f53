import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { ClientRequestError, type ConsulLbError } from '../errors.js'
import { answerBytes, errorAnswer } from './answers.js'

/** What a request whose body is arriving on a connection must hear when that connection fails (bad framing, timeout). */
export interface BodyReader {
  clientFailed(e: ConsulLbError): void
}

/**
 * Pipelined requests allowed to wait behind the one in flight on a connection; a connection that queues more is
 * cut (Node parses ahead whatever arrives, so without a bound one connection could queue requests without end).
 */
const MAX_WAITING = 32

/**
 * One client connection: the request whose body it is reading, whether the proxy gave up on it, and the turn of its
 * pipelined requests. Like nginx, the proxy forwards one request of a connection at a time: Node hands every
 * pipelined request over as soon as it is parsed, and running them at once would let one connection take every
 * instance slot (and let an Upgrade behind a pending request write its 101 before that request's answer).
 */
export class ClientConnection {
  readonly socket: Socket
  /** The request whose body this connection is carrying (the parser reads one body at a time). */
  bodyReader: BodyReader | null = null
  closing = false
  private busy = false
  private waiting: (() => void)[] | null = null

  constructor(socket: Socket) {
    this.socket = socket
  }

  /** Takes the connection's turn for a request; false when another request of it is in flight (then `wait`). */
  tryStart(): boolean {
    if (this.busy) return false
    this.busy = true
    return true
  }

  /** Runs `start` (holding the turn) once the requests before it are done. */
  wait(start: () => void): void {
    if (this.waiting === null) this.waiting = []
    if (this.waiting.length >= MAX_WAITING) {
      this.socket.destroy()
      return
    }
    this.waiting.push(start)
  }

  /** The request holding the turn is done: the next one waiting starts. */
  done(): void {
    const next = this.waiting?.shift()
    if (next === undefined) this.busy = false
    else next()
  }

  /** The connection closed: requests still waiting for their turn are dropped (nobody would read their answers). */
  closed(): void {
    this.waiting = null
    this.busy = true
  }
}

/**
 * How long a connection the proxy gives up on keeps being read (and what arrives discarded) after its last answer,
 * before it is destroyed: closing a socket with unread input makes the kernel send RST, and a client that is still
 * sending may then lose the answer (nginx's lingering_close, lingering_timeout 5 s). Short: the point of giving up is
 * to release the descriptor.
 */
const LINGER_MS = 1000

/**
 * The client connections of one listener: tracked for shutdown, told when the request reading a body must fail, and
 * closed gently (answer, FIN, a short linger, then destroyed) whenever the proxy gives up on one: parse errors,
 * oversized headers, timeouts, refused upgrades. A connection given up on holds its descriptor for at most
 * LINGER_MS after its answer is written, whatever the client keeps sending.
 */
export class ClientConnections {
  private readonly map = new Map<Socket, ClientConnection>()

  /** A new connection from the listener's 'connection' event. */
  add(s: Socket): void {
    const c = new ClientConnection(s)
    this.map.set(s, c)
    s.once('close', () => {
      this.map.delete(s)
      c.closed()
    })
  }

  get(s: Socket): ClientConnection | undefined {
    return this.map.get(s)
  }

  get size(): number {
    return this.map.size
  }

  /**
   * Node's parser gave up on a connection (malformed request, headers over the limit, headers or request timeout).
   * A request of this connection whose body was arriving fails with the matching answer; responses already under way
   * are finished first (a bad request pipelined behind a good one must not replace its answer); then the error answer
   * and a gentle close.
   */
  clientError(err: NodeJS.ErrnoException, socket: Duplex): ConsulLbError | null {
    const conn = this.map.get(socket as Socket)
    if (conn?.closing || socket.destroyed || !socket.writable) {
      if (conn === undefined || !conn.closing) socket.destroy()
      return null
    }
    const e = clientErrorOf(err)
    if (e === null) {
      socket.destroy()
      return null
    }
    if (conn !== undefined) conn.closing = true
    // Stop feeding Node's parser (it would report the same error for every chunk that follows).
    socket.removeAllListeners('data')
    socket.pause()
    const reader = conn?.bodyReader
    if (reader) {
      // The error is in the body of the request being forwarded: that exchange answers it and closes.
      reader.clientFailed(e)
      return e
    }
    whenResponsesDone(socket, () => this.closeGently(socket, answerBytes(errorAnswer(e, { close: true }))))
    return e
  }

  /**
   * Writes `bytes` (an answer) if given, ends the connection, then reads and discards what the client still sends for
   * LINGER_MS (or until it closes its side) before destroying the socket.
   */
  closeGently(socket: Duplex, bytes?: string | Buffer): void {
    const conn = this.map.get(socket as Socket)
    if (conn !== undefined) conn.closing = true
    if (socket.destroyed) return
    socket.removeAllListeners('data')
    socket.on('data', discard)
    socket.once('end', () => socket.destroy())
    if (bytes !== undefined && socket.writable) socket.write(bytes)
    if (socket.writable) socket.end()
    const timer = setTimeout(() => socket.destroy(), LINGER_MS)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
    socket.resume()
  }

  /**
   * A response that ends its connection (`Connection: close`, e.g. an error answer whose request body was not read):
   * Node would destroy the socket as soon as the answer is written, with the client's body possibly still arriving
   * (RST, and the client may lose the answer). Close it gently instead.
   */
  lingerAfter(res: ServerResponse): void {
    const socket = res.socket as (Socket & { destroySoon?: () => void }) | null
    if (socket === null || socket.destroyed) return
    // This answer is the connection's last: a parse error Node reports next (it goes on parsing the body we refused)
    // must not write a second one.
    const conn = this.map.get(socket)
    if (conn !== undefined) conn.closing = true
    // Node's server calls socket.destroySoon() once the last response is written (_http_server resOnFinish).
    socket.destroySoon = () => this.closeGently(socket)
  }

  destroyAll(): void {
    for (const s of this.map.keys()) s.destroy()
  }

  closeIdle(): void {
    for (const [s, c] of this.map) if (c.closing) s.destroy()
  }
}

/** Errors Node reports through 'clientError' as the answer they call for; null for a socket error (no answer). */
function clientErrorOf(err: NodeJS.ErrnoException): ClientRequestError | null {
  const code = err.code ?? ''
  if (code === 'HPE_HEADER_OVERFLOW')
    return new ClientRequestError('CLB_HEADERS_TOO_LARGE', 'request header block over the limit (maxHeaderBytes)')
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT')
    return new ClientRequestError('CLB_CLIENT_TIMEOUT', 'the request did not arrive in time')
  if (code.startsWith('HPE_')) return new ClientRequestError('CLB_BAD_REQUEST', `malformed request (${code})`)
  return null
}

/**
 * Calls `then` once no response of this connection is in flight. Node keeps the response being written as
 * `socket._httpMessage` (and assigns the next pipelined one when it finishes); the field is undocumented but has
 * been Node's own way to know this since 0.x (its default clientError handling reads it too).
 */
function whenResponsesDone(socket: Duplex, then: () => void): void {
  const pending = (socket as { _httpMessage?: ServerResponse | null })._httpMessage
  if (!pending || pending.writableFinished || pending.destroyed) {
    then()
    return
  }
  let called = false
  const next = (): void => {
    if (called) return
    called = true
    // 'finish' runs after Node moved the next pipelined response onto the socket.
    setImmediate(() => whenResponsesDone(socket, then))
  }
  pending.once('finish', next)
  pending.once('close', next)
}

function discard(): void {
  /* lingering: what a client sends after the proxy gave up on it is read and dropped */
}
