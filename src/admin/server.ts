import { createServer, type Server } from 'node:http'
import type { Registry } from 'prom-client'
import type { Logger } from '../log.js'

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
}

export interface AdminServer {
  readonly port: number
  close(): Promise<void>
}

/** The admin listener: /healthz, /status, /metrics. Loopback by default; it reads state and never mutates it. */
export async function startAdmin(opts: AdminOptions): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n')
      return
    }
    if (path === '/healthz') {
      const ok = opts.isHealthy?.() ?? true
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'shutting down\n')
      return
    }
    if (path === '/status') {
      const body: Record<string, unknown> = {}
      for (const [k, fn] of Object.entries(opts.status)) {
        try {
          body[k] = fn()
        } catch (err) {
          body[k] = { error: (err as Error).message }
        }
      }
      const send = (): void => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`)
      }
      if (!opts.statusAsync) {
        send()
        return
      }
      opts.statusAsync().then(
        (extra) => {
          Object.assign(body, extra)
          send()
        },
        (err: Error) => {
          body.error = err.message
          send()
        },
      )
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
    res.writeHead(404, { 'content-type': 'text/plain' }).end('admin endpoints: /healthz /status /metrics\n')
  })
  server.keepAliveTimeout = 5000
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
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
