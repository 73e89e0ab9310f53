import { type ClientRequest, request as httpRequest, type IncomingMessage, STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Counter } from 'prom-client'
import type { Upstream } from '../balancer/upstream.js'
import { type ConsulLbError, UpstreamError } from '../errors.js'
import type { Logger } from '../log.js'
import { answerBytes, errorAnswer, responseHead } from './answers.js'
import type { ClientConnections } from './connection.js'
import { forwardResponseHeaders, withClose } from './headers.js'
import type { ServiceTarget } from './target.js'

/** What every tunnel of one proxy shares. */
export interface TunnelContext {
  readonly connectTimeoutMs: number
  readonly headersTimeoutMs: number
  /** A client that reads none of a relayed answer this long is cut off. */
  readonly sendTimeoutMs: number
  readonly retryAfterS: number
  readonly connections: ClientConnections
  /** Tunnels not yet finished (the proxy ends them all on close). */
  readonly open: Set<Tunnel>
  readonly errors: Counter<'code'>
  readonly log: Logger
}

/**
 * One `Upgrade:` request (WebSocket, h2c, any protocol), from routing to its last byte. The request goes to the
 * instance with `Connection: upgrade` on a connection of its own; the two sockets become a byte tunnel only after the
 * instance answers 101 and names a protocol the client asked for. Any other answer (a 200 from an HTTP/1.1 server
 * ignoring h2c, a 400/426 refusing a WebSocket) is relayed as a plain answer and the client connection is closed:
 * nothing the client sent after the request head (`head`, or later bytes) reaches the instance unless it switched
 * protocols, so no second request can ride along unrouted.
 *
 * It owns the instance slot of the upgrade and gives it back in one place (`finish`, the only caller of
 * `Upstream.end()`/`endTunnel()` for upgrades), however it ends: refused, relayed, tunnelled and closed by either side,
 * timed out, or cut by shutdown. While pending it counts against the instance's cap like a request; once switched it
 * counts as a tunnel.
 */
export class Tunnel {
  private readonly req: IncomingMessage
  private readonly client: Duplex
  private readonly head: Buffer
  readonly target: ServiceTarget
  private readonly path: string
  private readonly headers: string[]
  /** The protocols asked for (lower case); null: forwarded as a plain request (HTTP/1.0 must ignore Upgrade). */
  private readonly protocols: readonly string[] | null
  private readonly ctx: TunnelContext
  private upstream: Upstream | null = null
  private upReq: ClientRequest | null = null
  private upSocket: Duplex | null = null
  private timer: NodeJS.Timeout | null = null
  private tunnelled = false
  private done = false
  /** When the upstream request was sent: the instance's latency is measured to its answer (a 101 or not). */
  private startedAt = 0

  constructor(
    req: IncomingMessage,
    client: Duplex,
    head: Buffer,
    target: ServiceTarget,
    path: string,
    headers: string[],
    protocols: readonly string[] | null,
    ctx: TunnelContext,
  ) {
    this.req = req
    this.client = client
    this.head = head
    this.target = target
    this.path = path
    this.headers = headers
    this.protocols = protocols
    this.ctx = ctx
    ctx.open.add(this)
    client.once('close', this.onClientClose)
  }

  /** After `target.ready()` settled. */
  readonly proceed = (ready: boolean): void => {
    if (this.done) return
    if (this.client.destroyed) this.finish(499, null, true)
    else if (ready) this.start()
    else this.fail(this.target.unavailable())
  }

  start(): void {
    if (this.done) return
    const now = Date.now()
    const u = this.target.pool.pick(now, null)
    if (u === null) {
      this.fail(this.target.unavailable(true))
      return
    }
    this.upstream = u
    this.startedAt = now
    u.begin(now)
    const r = httpRequest({
      host: u.address,
      port: u.port,
      method: this.req.method,
      path: this.path,
      headers: this.headers,
      agent: false,
      setHost: false,
    })
    this.upReq = r
    this.arm('UND_ERR_CONNECT_TIMEOUT', this.ctx.connectTimeoutMs)
    r.once('socket', (s: Socket) => {
      if (s.connecting) s.once('connect', () => this.arm('UND_ERR_HEADERS_TIMEOUT', this.ctx.headersTimeoutMs))
      else this.arm('UND_ERR_HEADERS_TIMEOUT', this.ctx.headersTimeoutMs)
    })
    r.on('upgrade', this.onUpgrade)
    r.on('response', this.onResponse)
    r.on('error', this.onUpstreamError)
    r.end()
  }

  /** Refuses the upgrade with an answer of the proxy's own, then closes the client connection gently. */
  fail(e: ConsulLbError): void {
    if (this.done) return
    const a = errorAnswer(e, { retryAfterS: this.ctx.retryAfterS, close: true })
    this.ctx.connections.closeGently(this.client, answerBytes(a, this.req.method === 'HEAD'))
    this.target.stats.recordError(e, Date.now())
    this.finish(e.statusCode, e.code)
  }

  private arm(code: string, ms: number): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.timer = null
      this.upReq?.destroy(Object.assign(new Error(`upgrade: instance did not answer within ${ms} ms`), { code }))
    }, ms)
    this.timer.unref()
  }

  private readonly onUpgrade = (res: IncomingMessage, socket: Duplex, upHead: Buffer): void => {
    this.disarm()
    this.upSocket = socket
    socket.on('error', noop)
    if (this.done || this.client.destroyed) {
      socket.destroy()
      this.finish(499, null, true)
      return
    }
    const got = String(res.headers.upgrade ?? '').toLowerCase()
    const asked = this.protocols
    if (asked === null || !got.split(',').some((p) => asked.includes(p.trim()))) {
      socket.destroy()
      this.fail(
        new UpstreamError(
          'CLB_UPSTREAM_FAILED',
          `${this.where()} switched to "${got}", which the client did not ask for (RFC 9110 §7.8)`,
        ),
      )
      return
    }
    this.answered()
    this.upstream?.promoteToTunnel()
    this.tunnelled = true
    const client = this.client
    client.write(responseHead(101, 'Switching Protocols', forwardResponseHeaders(res.rawHeaders, 101)))
    if (upHead.length > 0) client.write(upHead)
    if (this.head.length > 0) socket.write(this.head)
    socket.once('close', this.onUpstreamClose)
    socket.pipe(client)
    client.pipe(socket)
    this.count(101, null)
  }

  /** Not a 101: relay the answer as it is, then close the client connection (it may hold bytes meant for a tunnel). */
  private readonly onResponse = (res: IncomingMessage): void => {
    this.disarm()
    if (this.done) {
      res.destroy()
      return
    }
    const status = res.statusCode ?? 502
    if (status < 200) {
      // A 101 without an Upgrade field switches to nothing (RFC 9110 §7.8): not an answer to relay.
      res.destroy()
      this.fail(new UpstreamError('CLB_UPSTREAM_FAILED', `${this.where()} answered ${status} without Upgrade`))
      return
    }
    this.answered()
    const headers = forwardResponseHeaders(res.rawHeaders, status)
    withClose(headers)
    const client = this.client
    client.write(responseHead(status, res.statusMessage || STATUS_CODES[status] || '', headers))
    res.on('data', (chunk: Buffer) => {
      if (client.write(chunk)) return
      res.pause()
      const stalled = setTimeout(() => this.finish(status, 'CLB_CLIENT_TIMEOUT', true), this.ctx.sendTimeoutMs)
      stalled.unref()
      client.once('drain', () => {
        clearTimeout(stalled)
        res.resume()
      })
    })
    res.once('end', () => {
      this.ctx.connections.closeGently(client)
      this.finish(status, null)
    })
    res.once('error', () => this.finish(status, null, true))
  }

  private readonly onUpstreamError = (err: Error): void => {
    this.disarm()
    if (this.done) return
    const code = (err as { code?: string }).code ?? 'ERR'
    const u = this.upstream
    if (u !== null) this.target.attemptFailed(u, code, Date.now(), this.ctx.log)
    this.ctx.log.warn({ service: this.target.service, instance: u?.key, code }, `upgrade failed: ${err.message}`)
    if (this.tunnelled) {
      this.finish(101, null, true)
      return
    }
    this.fail(
      code === 'UND_ERR_HEADERS_TIMEOUT'
        ? new UpstreamError('CLB_UPSTREAM_TIMEOUT', `${this.where()} did not answer the upgrade in time`)
        : new UpstreamError('CLB_UPSTREAM_FAILED', `${this.where()} failed (${code})`),
    )
  }

  private readonly onUpstreamClose = (): void => {
    this.finish(101, null, true)
  }

  private readonly onClientClose = (): void => {
    this.finish(this.tunnelled ? 101 : 499, null, true)
  }

  private where(): string {
    return `${this.target.service} instance ${this.upstream?.key ?? '?'}`
  }

  private disarm(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
  }

  /** Shutdown: the tunnel ends now, whatever its state. */
  cut(): void {
    this.finish(this.tunnelled ? 101 : 503, null, true)
  }

  /** The instance answered (a 101 or a plain response): it counts as a success, with its latency. */
  private answered(): void {
    const now = Date.now()
    this.upstream?.recordSuccess(now - this.startedAt, now)
  }

  private counted = false
  private count(status: number, code: string | null): void {
    if (this.counted) return
    this.counted = true
    this.target.stats.count(status)
    if (code !== null) this.ctx.errors.labels(code).inc()
  }

  /**
   * The only place a tunnel ends: its instance slot, its entry among the open tunnels, its counters, and both
   * connections. `cut`: destroy the client connection now (a tunnel whose one side closed has nothing left to carry;
   * a client gone); otherwise it is closing gently already, its answer being written.
   */
  private finish(status: number, code: string | null, cut = false): void {
    if (this.done) return
    this.done = true
    this.disarm()
    this.ctx.open.delete(this)
    const u = this.upstream
    if (u !== null) {
      this.upstream = null
      if (this.tunnelled) u.endTunnel()
      else u.end()
    }
    this.count(status, code)
    this.upReq?.destroy()
    this.upSocket?.destroy()
    if (cut) this.client.destroy()
  }
}

function noop(): void {
  /* errors of an upstream socket end the tunnel through its 'close' */
}
