import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { isIP } from 'node:net'
import { Counter, Gauge, type Registry } from 'prom-client'
import type { Logger } from '../log.js'
import { StatusFeed } from './feed.js'
import { statusPage } from './page.js'
import { pageView } from './page-view.js'

export interface AdminOptions {
  host: string
  port: number
  log: Logger
  /** Prometheus registry to expose on /metrics (one per component instance, never prom-client's global). */
  registry?: Registry
  /** Each entry becomes a key of the /status JSON; providers read state, they never change it. */
  status: Record<string, () => unknown>
  /** Asked on every /status request (cluster mode asks the workers); its keys are merged into the answer. */
  statusAsync?: () => Promise<Record<string, unknown>>
  /** /healthz answers 200 while this returns true (503 while shutting down). */
  isHealthy?: () => boolean
  /** Replaces /metrics output (cluster mode aggregates the workers' registries). */
  metricsText?: () => Promise<string>
  /** The status page's event streams (GET /events); defaults in LIVE_DEFAULTS. */
  live?: Partial<LiveOptions>
}

export interface LiveOptions {
  /** How often open status pages get a new snapshot. */
  intervalMs: number
  /** Status pages (event streams) served at once; more get 503 and retry later. */
  maxStreams: number
  /** Unsent bytes at which a page that stopped reading is disconnected. */
  maxBufferedBytes: number
}

export const LIVE_DEFAULTS: LiveOptions = { intervalMs: 1000, maxStreams: 64, maxBufferedBytes: 1 << 20 }

/**
 * Connections the admin listener holds at once: room for a thousand viewers to be told "no" (503) properly, plus
 * scrapers and health checks. Past it Node closes new connections at once, so no flood of them can cost the proxy,
 * which shares the process, its file descriptors.
 */
const ADMIN_MAX_CONNECTIONS = 2048

/**
 * The answer to a request whose Host names no local address while the listener is on loopback: what a web page gets
 * after DNS rebinding (its own name now resolving to 127.0.0.1) when it tries to read /status or /events from the
 * operator's browser. The browser sends the page's name as Host, which no one reaching the listener directly does.
 */
export const FOREIGN_HOST_CODE = 'CLB_ADMIN_FOREIGN_HOST'

export interface AdminServer {
  readonly port: number
  /** The status page's event streams: snapshots computed, streams open, viewers refused. */
  readonly feed: StatusFeed
  close(): Promise<void>
}

/**
 * The admin listener: the status page (/) and its event stream (/events), /healthz, /status, /metrics. Loopback by
 * default; it reads state and never mutates it (GET and HEAD only).
 */
export async function startAdmin(opts: AdminOptions): Promise<AdminServer> {
  const live = { ...LIVE_DEFAULTS, ...opts.live }
  const feed = new StatusFeed({ ...live, collect: () => collectStatus(opts).then(pageView), log: opts.log })
  if (opts.registry) registerFeedMetrics(opts.registry, feed)
  const loopback = isLoopback(opts.host)
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (loopback && !isLocalHost(req)) {
      res
        .writeHead(403, {
          'content-type': 'text/plain; charset=utf-8',
          'x-content-type-options': 'nosniff',
          'x-consul-lb-error': FOREIGN_HOST_CODE,
        })
        .end(
          `${FOREIGN_HOST_CODE}: this admin listener is on loopback and answers only to an IP address or localhost ` +
            `as Host, not ${JSON.stringify(req.headers.host)}; to reach it by name from elsewhere, give --admin a ` +
            'non-loopback address\n',
        )
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n')
      return
    }
    if (path === '/') {
      const page = statusPage()
      res.writeHead(200, page.headers).end(req.method === 'HEAD' ? undefined : page.body)
      return
    }
    if (path === '/events') {
      feed.serve(req, res)
      return
    }
    if (path === '/healthz') {
      const ok = opts.isHealthy?.() ?? true
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'shutting down\n')
      return
    }
    if (path === '/status') {
      void collectStatus(opts).then((body) => sendJson(res, body))
      return
    }
    if (path === '/metrics') {
      const text = opts.metricsText ? opts.metricsText() : opts.registry ? opts.registry.metrics() : Promise.resolve('')
      text.then(
        (t) => res.writeHead(200, { 'content-type': opts.registry?.contentType ?? 'text/plain; version=0.0.4' }).end(t),
        (err: Error) => {
          opts.log.error({ err }, 'metrics collection failed')
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`)
        },
      )
      return
    }
    res
      .writeHead(404, { 'content-type': 'text/plain' })
      .end('admin endpoints: / (status page) /events /healthz /status /metrics\n')
  })
  server.keepAliveTimeout = 5000
  server.maxConnections = ADMIN_MAX_CONNECTIONS
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as { port: number }).port
  opts.log.info({ admin: `${opts.host}:${port}` }, 'admin listener ready')
  return {
    port,
    feed,
    close: () =>
      new Promise<void>((resolve) => {
        feed.close()
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/**
 * The /status view: every provider's answer under its key, plus what `statusAsync` adds (cluster mode: the workers'
 * views and their sum). A provider that throws shows its error in place of its view; the others still answer.
 */
async function collectStatus(opts: AdminOptions): Promise<Record<string, unknown>> {
  const body: Record<string, unknown> = { at: Date.now() }
  for (const [k, fn] of Object.entries(opts.status)) {
    try {
      body[k] = fn()
    } catch (err) {
      body[k] = { error: (err as Error).message }
    }
  }
  if (opts.statusAsync) {
    try {
      Object.assign(body, await opts.statusAsync())
    } catch (err) {
      body.error = (err as Error).message
    }
  }
  return body
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))
}

/**
 * Whether a request names this machine: no Host at all (not a browser), an IP address (typed by a person; a rebinding
 * page can only send its own DNS name), or localhost.
 */
function isLocalHost(req: IncomingMessage): boolean {
  const host = req.headers.host
  if (host === undefined) return true
  const close = host.startsWith('[') ? host.indexOf(']') : -1
  const name = (close > 0 ? host.slice(1, close) : host.replace(/:\d*$/, '')).toLowerCase()
  return isIP(name) !== 0 || name === 'localhost' || name.endsWith('.localhost')
}

function sendJson(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`)
}

function registerFeedMetrics(registry: Registry, feed: StatusFeed): void {
  new Gauge({
    name: 'consul_lb_admin_event_streams',
    help: 'Status pages connected to /events now',
    registers: [registry],
    collect() {
      this.set(feed.openStreams)
    },
  })
  // Counters read from the feed at scrape time (it keeps plain numbers), like the proxy's request counters.
  const counters: [string, string, () => number][] = [
    [
      'consul_lb_admin_snapshots_total',
      'Status snapshots computed for /events (one per interval, shared by every open page)',
      () => feed.snapshots,
    ],
    [
      'consul_lb_admin_streams_refused_total',
      'Status pages turned away (503) because the stream cap was reached',
      () => feed.refused,
    ],
    [
      'consul_lb_admin_streams_dropped_total',
      'Status pages disconnected because they stopped reading',
      () => feed.dropped,
    ],
  ]
  for (const [name, help, read] of counters)
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset()
        this.inc(read())
      },
    })
}
