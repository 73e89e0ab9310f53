/**
 * A reference contender: the ceiling of a Node process relaying HTTP with net.Socket, no HTTP parsing at all. Each
 * client connection gets its own upstream connection (round robin over a static list) and bytes are written
 * through as they are read, with backpressure both ways. It cannot balance per request, retry or rewrite a header:
 * it shows what the kernel, libuv and net.Socket cost, so the pass-through data plane's own cost is the rest.
 *
 *   node --import tsx bench/tcp-relay.ts --listen 127.0.0.1:8080 --upstreams 127.0.0.2:81,127.0.0.3:82
 */
import { connect, createServer, type Socket } from 'node:net'
import { parseArgs } from 'node:util'

const { values } = parseArgs({ options: { listen: { type: 'string' }, upstreams: { type: 'string' } } })
const [host, port] = values.listen!.split(':')
const upstreams = values.upstreams!.split(',').map((hp) => {
  const [h, p] = hp.split(':')
  return { host: h!, port: Number(p) }
})
let next = 0

function relay(from: Socket, to: Socket): void {
  from.on('data', (b: Buffer) => {
    if (!to.write(b)) from.pause()
  })
  to.on('drain', () => from.resume())
  from.on('end', () => to.end())
  from.on('error', () => to.destroy())
  from.on('close', () => to.destroy())
}

createServer({ noDelay: true }, (client) => {
  const u = upstreams[next++ % upstreams.length]!
  const up = connect({ host: u.host, port: u.port, noDelay: true })
  relay(client, up)
  relay(up, client)
}).listen(Number(port), host)
