import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { WebSocketServer } from 'ws'

/**
 * Real HTTP backends for tests: each answers with its id (body and `x-backend` header), echoes what it received
 * (method, path, headers) under /echo, streams a body back under /upload, and echoes WebSocket messages.
 */
export interface Backend {
  id: string
  host: string
  port: number
  hits: number
  /** `METHOD /path` of every request seen, health checks included. */
  seen: string[]
  server: Server
  /** Last request seen (for header assertions). */
  last: { method: string; url: string; headers: IncomingMessage['headers'] } | null
  close(): Promise<void>
  /** Stops accepting and cuts every open connection now (a crashed instance). */
  kill(): Promise<void>
}

export async function startBackend(
  id: string,
  host = '127.0.0.1',
  port = 0,
  t?: { teardown(fn: () => unknown): void },
): Promise<Backend> {
  const sockets = new Set<Socket>()
  const b: Backend = {
    id,
    host,
    port: 0,
    hits: 0,
    last: null,
    seen: [],
    server: createServer((req, res) => {
      b.hits++
      if (b.seen.length < 10_000) b.seen.push(`${req.method} ${req.url}`)
      b.last = { method: req.method!, url: req.url!, headers: req.headers }
      if (req.url?.startsWith('/echo')) {
        const chunks: Buffer[] = []
        req.on('data', (c: Buffer) => chunks.push(c))
        req.on('end', () => {
          const body = JSON.stringify({
            id,
            method: req.method,
            url: req.url,
            headers: req.headers,
            bodyBytes: Buffer.concat(chunks).length,
          })
          res.writeHead(200, { 'content-type': 'application/json', 'x-backend': id }).end(body)
        })
        return
      }
      if (req.url?.startsWith('/slow')) {
        const ms = Number(new URL(req.url, 'http://x').searchParams.get('ms') ?? '1000')
        setTimeout(() => res.writeHead(200, { 'x-backend': id }).end(id), ms)
        return
      }
      if (req.url?.startsWith('/big')) {
        const n = Number(new URL(req.url, 'http://x').searchParams.get('bytes') ?? '65536')
        res
          .writeHead(200, { 'content-type': 'application/octet-stream', 'x-backend': id, 'content-length': n })
          .end(Buffer.alloc(n, 97))
        return
      }
      req.resume()
      req.on('end', () =>
        res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': id, connection: 'keep-alive' }).end(id),
      )
    }),
    close: async () => {
      wss.close()
      const closed = new Promise<void>((r) => b.server.close(() => r()))
      b.server.closeAllConnections()
      // Upgraded (WebSocket) sockets are no longer the HTTP server's: end them too, or close() never returns.
      for (const s of sockets) s.destroy()
      await closed
    },
    kill: async () => {
      wss.close()
      b.server.close()
      for (const s of sockets) s.destroy()
      b.server.closeAllConnections()
    },
  }
  const wss = new WebSocketServer({ server: b.server })
  wss.on('connection', (ws) => ws.on('message', (data) => ws.send(`${id}:${String(data)}`)))
  b.server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve, reject) => {
    b.server.once('error', reject)
    b.server.listen(port, host, () => resolve())
  })
  b.port = (b.server.address() as AddressInfo).port
  t?.teardown(() => b.close())
  return b
}
