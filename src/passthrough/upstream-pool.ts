import { connect, type Socket } from 'node:net'
import { HttpParser } from './llhttp.js'
import { ReadBuffer } from './read-buffer.js'

/** What uses an upstream connection while it carries one exchange. */
export interface ConnectionUser {
  onUpstreamConnected(c: UpstreamConnection): void
  onUpstreamData(c: UpstreamConnection, chunk: Buffer): void
  /** The instance closed its side (EOF): the end of an until-close body, or a failure before the answer ended. */
  onUpstreamEnd(c: UpstreamConnection): void
  onUpstreamError(c: UpstreamConnection, code: string, err: Error | null): void
  onUpstreamDrain(c: UpstreamConnection): void
}

export interface ConnectionPoolOptions {
  connectTimeoutMs: number
  /** Idle keep-alive time; an idle connection older than this is closed by the sweep. */
  keepAliveMs: number
}

/**
 * One raw keep-alive TCP connection to an instance, and the llhttp parser for the answers on it. Its socket events
 * go to the exchange using it (`user`), or, while it waits in the pool, end it: an idle connection that receives
 * bytes or an EOF is of no further use.
 */
export class UpstreamConnection {
  readonly socket: Socket
  readonly parser = new HttpParser('response')
  readonly pool: ConnectionPool
  user: ConnectionUser | null
  connected = false
  /** The connection has carried at least one answer (a failure on it may be a stale keep-alive, not the instance). */
  reused = false
  idleSince = 0
  private connectTimer: NodeJS.Timeout | null = null
  private closed = false
  /** After a 101 (detached): where the instance's bytes go, as they are. */
  private sink: ((bytes: Buffer) => void) | null = null

  constructor(pool: ConnectionPool, user: ConnectionUser, address: string, port: number, connectTimeoutMs: number) {
    this.pool = pool
    this.user = user
    const s = connect({ host: address, port, noDelay: true, onread: new ReadBuffer(this.onBytes).onread })
    this.socket = s
    this.connectTimer = setTimeout(this.onConnectTimeout, connectTimeoutMs)
    s.on('connect', this.onConnect)
    s.on('end', this.onEnd)
    s.on('error', this.onError)
    s.on('close', this.onClose)
    s.on('drain', this.onDrain)
  }

  private readonly onConnectTimeout = (): void => {
    this.connectTimer = null
    this.fail('UND_ERR_CONNECT_TIMEOUT', new Error('connect timed out'))
  }

  private readonly onConnect = (): void => {
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer)
      this.connectTimer = null
    }
    this.connected = true
    this.user?.onUpstreamConnected(this)
  }

  /** One read: a view of the read buffer, valid until this returns (see read-buffer.ts). */
  private readonly onBytes = (chunk: Buffer): void => {
    if (this.user !== null) this.user.onUpstreamData(this, chunk)
    else if (this.sink !== null) this.sink(chunk)
    else this.destroy() // bytes nobody asked for: the connection is out of step
  }

  private readonly onEnd = (): void => {
    if (this.user !== null) this.user.onUpstreamEnd(this)
    else this.destroy()
  }

  private readonly onError = (err: NodeJS.ErrnoException): void => {
    this.fail(err.code ?? 'ECONNRESET', err)
  }

  private readonly onClose = (): void => {
    this.fail('UND_ERR_SOCKET', null)
  }

  private readonly onDrain = (): void => {
    this.user?.onUpstreamDrain(this)
  }

  /** The connection failed or closed: tell its user once, then it is gone. */
  private fail(code: string, err: Error | null): void {
    const user = this.user
    this.user = null
    this.destroy()
    user?.onUpstreamError(this, code, err)
  }

  /**
   * Takes the socket out of HTTP use (after a 101 it carries another protocol): what it reads goes to `sink`, no
   * listener of ours stays on it, and the pool no longer counts it.
   */
  detach(sink: (bytes: Buffer) => void): Socket {
    const s = this.socket
    this.sink = sink
    s.off('connect', this.onConnect)
    s.off('end', this.onEnd)
    s.off('error', this.onError)
    s.off('close', this.onClose)
    s.off('drain', this.onDrain)
    this.user = null
    this.closed = true
    this.pool.forget(this)
    this.parser.free()
    return s
  }

  write(b: Uint8Array): boolean {
    return this.socket.write(b)
  }

  destroy(): void {
    if (this.closed) return
    this.closed = true
    if (this.connectTimer !== null) {
      clearTimeout(this.connectTimer)
      this.connectTimer = null
    }
    this.socket.destroy()
    this.pool.forget(this)
    this.parser.free()
  }

  get isClosed(): boolean {
    return this.closed
  }
}

/**
 * The keep-alive connections to one instance: idle ones on a stack (the most recently used first, so a burst's
 * extra connections age out), new ones opened when none is idle. The balancer's per-instance cap on requests in
 * flight bounds how many are open; the sweep closes those idle longer than keepAliveMs.
 */
export class ConnectionPool {
  readonly address: string
  readonly port: number
  private readonly opts: ConnectionPoolOptions
  private readonly idle: UpstreamConnection[] = []
  private openCount = 0
  private closed = false

  constructor(address: string, port: number, opts: ConnectionPoolOptions) {
    this.address = address
    this.port = port
    this.opts = opts
  }

  /** An idle connection (ready: `connected`), or a new one that calls `user.onUpstreamConnected` when it is. */
  acquire(user: ConnectionUser): UpstreamConnection {
    const idle = this.idle
    while (idle.length > 0) {
      const c = idle.pop()!
      if (c.isClosed) continue
      c.user = user
      return c
    }
    this.openCount++
    return new UpstreamConnection(this, user, this.address, this.port, this.opts.connectTimeoutMs)
  }

  /** A new connection that never joins the pool (an upgrade's). */
  open(user: ConnectionUser): UpstreamConnection {
    this.openCount++
    return new UpstreamConnection(this, user, this.address, this.port, this.opts.connectTimeoutMs)
  }

  /** Back to the pool after a complete exchange on a connection both sides keep alive. */
  release(c: UpstreamConnection, now: number): void {
    c.user = null
    c.reused = true
    if (this.closed || c.isClosed) {
      c.destroy()
      return
    }
    c.idleSince = now
    c.parser.next()
    this.idle.push(c)
  }

  /** Called by a connection that closed. */
  forget(c: UpstreamConnection): void {
    this.openCount--
    const i = this.idle.indexOf(c)
    if (i !== -1) this.idle.splice(i, 1)
  }

  /** Closes connections idle for longer than keepAliveMs (the oldest are at the bottom of the stack). */
  sweep(now: number): void {
    const idle = this.idle
    while (idle.length > 0 && now - idle[0]!.idleSince > this.opts.keepAliveMs) idle[0]!.destroy()
  }

  /** Connections open now (idle and busy). */
  get openConnections(): number {
    return this.openCount
  }
  get idleCount(): number {
    return this.idle.length
  }

  close(): void {
    this.closed = true
    for (const c of [...this.idle]) c.destroy()
  }
}
