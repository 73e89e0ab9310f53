import type { ClientRequest, IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import httpProxy from 'http-proxy'
import type { Upstream } from '../balancer/upstream.js'
import type { Logger } from '../log.js'

/** Outcome of one upgrade: `ok` once the upstream answered, else the failure code (counted against the instance). */
export type UpgradeDone = (ok: boolean, code: string | null) => void

interface Pending {
  socket: Duplex
  onDone: UpgradeDone
  timer: NodeJS.Timeout | null
  upstream: Socket | null
  settled: boolean
}

/**
 * `Upgrade:` requests. WebSocket goes through http-proxy, which splices the two sockets after the 101; any other
 * upgrade (h2c, custom protocols) is relayed raw: the request is written to the instance and the two connections
 * are piped, whatever it answers. Only upgrades: the plain HTTP path uses undici (http-proxy measured 45 % slower).
 *
 * Every socket of an upgrade, client and upstream side, is tracked so close() can end them all, and each side's
 * close ends the other (a proxy that stops must not keep upstream WebSockets, and the process, alive).
 */
export class UpgradeProxy {
  private readonly proxy: httpProxy
  private readonly log: Logger
  private readonly connectTimeoutMs: number
  private readonly sockets = new Set<Duplex>()
  private readonly pending = new WeakMap<IncomingMessage, Pending>()

  constructor(log: Logger, connectTimeoutMs: number) {
    this.log = log
    this.connectTimeoutMs = connectTimeoutMs
    this.proxy = httpProxy.createProxyServer({ ws: true, xfwd: true })
    // http-proxy gives no connect timeout for upgrades: arm one per upstream request, cleared by its 101.
    this.proxy.on('proxyReqWs', (proxyReq: ClientRequest, req: IncomingMessage) => {
      const p = this.pending.get(req)
      if (!p) return
      p.timer = setTimeout(
        () =>
          proxyReq.destroy(
            Object.assign(new Error('upgrade: instance did not answer in time'), { code: 'UND_ERR_CONNECT_TIMEOUT' }),
          ),
        this.connectTimeoutMs,
      )
      p.timer.unref()
      proxyReq.once('upgrade', (_res: IncomingMessage, upstream: Socket) => this.opened(p, upstream))
      proxyReq.once('response', () => this.settle(p, true, null)) // the instance refused the upgrade with a plain answer
    })
  }

  /** Forwards a WebSocket upgrade (`GET` + `Upgrade: websocket`) or relays any other upgrade raw. */
  forward(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    u: Upstream,
    path: string,
    rawHead: string[],
    onDone: UpgradeDone,
  ): void {
    if (socket.destroyed) {
      onDone(true, null)
      return
    }
    const p: Pending = { socket, onDone, timer: null, upstream: null, settled: false }
    this.sockets.add(socket)
    u.inflight++
    socket.once('close', () => {
      u.inflight--
      this.sockets.delete(socket)
      p.upstream?.destroy()
      this.settle(p, true, null)
    })
    const isWebSocket = req.method === 'GET' && /^websocket$/i.test(String(req.headers.upgrade ?? ''))
    if (!isWebSocket) {
      this.relay(req, p, head, u, path, rawHead)
      return
    }
    this.pending.set(req, p)
    req.url = path
    this.proxy.ws(req, socket, head, { target: u.origin }, (err: Error) => this.failed(p, err))
  }

  private relay(req: IncomingMessage, p: Pending, head: Buffer, u: Upstream, path: string, rawHead: string[]): void {
    const up = connect({ host: u.address, port: u.port })
    p.upstream = up
    this.sockets.add(up)
    p.timer = setTimeout(
      () => up.destroy(Object.assign(new Error('upgrade: connect timed out'), { code: 'UND_ERR_CONNECT_TIMEOUT' })),
      this.connectTimeoutMs,
    )
    p.timer.unref()
    up.once('error', (err) => this.failed(p, err))
    up.once('close', () => {
      this.sockets.delete(up)
      p.socket.destroy()
    })
    up.once('connect', () => {
      let text = `${req.method} ${path} HTTP/${req.httpVersion}\r\n`
      for (let i = 0; i < rawHead.length; i += 2) text += `${rawHead[i]}: ${rawHead[i + 1]}\r\n`
      up.write(`${text}\r\n`)
      if (head.length > 0) up.write(head)
      p.socket.pipe(up)
      up.pipe(p.socket)
      this.settle(p, true, null)
    })
  }

  private opened(p: Pending, upstream: Socket): void {
    p.upstream = upstream
    this.sockets.add(upstream)
    upstream.once('close', () => {
      this.sockets.delete(upstream)
      p.socket.destroy()
    })
    if (p.socket.destroyed) upstream.destroy()
    this.settle(p, true, null)
  }

  private failed(p: Pending, err: Error): void {
    const code = (err as { code?: string }).code ?? 'ERR'
    this.log.warn({ err: err.message, code }, 'upgrade failed')
    const s = p.socket
    if (!p.settled && !s.destroyed && s.writable) {
      s.end(
        'HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\nconnection: close\r\nx-consul-lb-error: CLB_UPSTREAM_FAILED\r\n\r\nupgrade to the instance failed\n',
      )
    } else {
      s.destroy()
    }
    this.settle(p, false, code)
  }

  private settle(p: Pending, ok: boolean, code: string | null): void {
    if (p.timer) {
      clearTimeout(p.timer)
      p.timer = null
    }
    if (p.settled) return
    p.settled = true
    p.onDone(ok, code)
  }

  get open(): number {
    return this.sockets.size
  }

  close(): void {
    for (const s of this.sockets) s.destroy()
    this.sockets.clear()
    this.proxy.close()
  }
}
