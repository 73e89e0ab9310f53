/**
 * The floor of the Node pattern consul-lb uses, as a reference contender: node:http in front, one undici Pool per
 * backend, `dispatch()` with a handler object writing straight into the response (the fastest plain-Node pattern
 * measured for issue 5). Round robin over a static list; no discovery, retries, metrics or limits. What consul-lb
 * costs above this is the price of its features and of its own code.
 *
 *   node --import tsx bench/minimal-proxy.ts --listen 127.0.0.1:8080 --upstreams 127.0.0.2:81,127.0.0.3:82
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { parseArgs } from 'node:util'
import { type Dispatcher, Pool } from 'undici'

const { values } = parseArgs({ options: { listen: { type: 'string' }, upstreams: { type: 'string' } } })
const [host, port] = values.listen!.split(':')
const pools = values
  .upstreams!.split(',')
  .map((hp) => new Pool(`http://${hp}`, { connections: 256, keepAliveTimeout: 4000 }))
let next = 0

class Relay implements Dispatcher.DispatchHandler {
  private readonly res: ServerResponse
  private resume: (() => void) | null = null
  constructor(res: ServerResponse) {
    this.res = res
  }
  onConnect(): void {}
  onHeaders(statusCode: number, raw: Buffer[], resume: () => void): boolean {
    this.resume = resume
    const out: string[] = []
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toString('latin1')
      // The hop-by-hop headers nginx sends on a keep-alive response.
      if (name.length === 10 && name.toLowerCase() === 'connection') continue
      if (name.length === 10 && name.toLowerCase() === 'keep-alive') continue
      out.push(name, raw[i + 1]!.toString('latin1'))
    }
    this.res.writeHead(statusCode, out)
    return true
  }
  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true
    // Backpressure: undici pauses until the client socket drains (without this a 64 KiB answer stalls).
    this.res.once('drain', this.resume!)
    return false
  }
  onComplete(): void {
    this.res.end()
  }
  onError(): void {
    if (this.res.headersSent) this.res.destroy()
    else this.res.writeHead(502).end()
  }
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const pool = pools[next]!
  next = (next + 1) % pools.length
  const raw = req.rawHeaders
  const headers: string[] = []
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    if (name.length === 10 && name.toLowerCase() === 'connection') continue
    headers.push(name, raw[i + 1]!)
  }
  headers.push('x-forwarded-for', req.socket.remoteAddress ?? '')
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined
  pool.dispatch(
    { path: req.url!, method: req.method as Dispatcher.HttpMethod, headers, body: hasBody ? req : null },
    new Relay(res),
  )
}

const server = createServer(handle)
server.listen(Number(port), host)
const stop = (): void => {
  server.close()
  server.closeAllConnections()
  void Promise.all(pools.map((p) => p.close())).then(() => process.exit(0))
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
