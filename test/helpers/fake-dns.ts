import { createRequire } from 'node:module'
import type { Socket } from 'node:net'
import { freePort } from './ports.js'

/**
 * A fake DNS server (dns2's server) for what a real Consul agent cannot be made to do on demand: answer differently
 * over UDP and TCP, stay silent, send SERVFAIL or malformed bytes, set the TC bit. Tests that use it say why.
 */
const require = createRequire(import.meta.url)
// eslint-disable-next-line @typescript-eslint/no-require-imports
const dns2 = require('dns2')
const { Packet } = dns2

export interface FakeQuery {
  name: string
  type: number
  proto: 'udp' | 'tcp'
}
export interface FakeAnswer {
  rcode?: number
  tc?: boolean
  srv?: { port: number; target: string; address?: string; priority?: number; weight?: number; ttl?: number }[]
  a?: string[]
  ttl?: number
}
/** Return an answer, raw bytes (the id is patched in), or 'silence' for no reply. */
export type FakeHandler = (q: FakeQuery) => FakeAnswer | Buffer | 'silence'

export interface FakeDns {
  port: number
  label: string
  queries: FakeQuery[]
  tcpConnections: number
  handler: FakeHandler
  close(): Promise<void>
}

export async function startFakeDns(t: { teardown(fn: () => unknown): void }, handler: FakeHandler): Promise<FakeDns> {
  const port = await freePort()
  const sockets = new Set<Socket>()
  const fake: FakeDns = {
    port,
    label: `127.0.0.1:${port}`,
    queries: [],
    tcpConnections: 0,
    handler,
    close: async () => {
      for (const s of sockets) s.destroy()
      await server.close()
    },
  }
  const server = dns2.createServer({
    udp: true,
    tcp: true,
    handle: (
      request: { header: { id: number }; questions: { name: string; type: number }[] },
      send: (r: unknown) => void,
      client: object,
    ) => {
      const q = request.questions[0]!
      const proto = 'size' in client ? 'udp' : 'tcp'
      const query = { name: q.name.toLowerCase(), type: q.type, proto } as FakeQuery
      fake.queries.push(query)
      const out = fake.handler(query)
      if (out === 'silence') return
      if (Buffer.isBuffer(out)) {
        const b = Buffer.from(out)
        if (b.length >= 2) b.writeUInt16BE(request.header.id, 0)
        send(b)
        return
      }
      const res = Packet.createResponseFromRequest(request)
      res.header.aa = 1
      res.header.rcode = out.rcode ?? 0
      if (out.tc) res.header.tc = 1
      for (const s of out.srv ?? []) {
        res.answers.push({
          name: q.name,
          type: Packet.TYPE.SRV,
          class: 1,
          ttl: s.ttl ?? out.ttl ?? 0,
          priority: s.priority ?? 1,
          weight: s.weight ?? 1,
          port: s.port,
          target: s.target,
        })
        if (s.address)
          res.additionals.push({ name: s.target, type: Packet.TYPE.A, class: 1, ttl: 0, address: s.address })
      }
      for (const a of out.a ?? [])
        res.answers.push({ name: q.name, type: Packet.TYPE.A, class: 1, ttl: out.ttl ?? 0, address: a })
      send(res)
    },
  })
  server.servers.tcp.on('connection', (s: Socket) => {
    fake.tcpConnections++
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
  })
  await server.listen({ udp: { port, address: '127.0.0.1' }, tcp: { port, address: '127.0.0.1' } })
  t.teardown(() => fake.close())
  return fake
}

/** SRV records for n instances 127.0.0.(i+1):port, with `.addr.` targets like Consul's. */
export function srvInstances(n: number, port = 9000): NonNullable<FakeAnswer['srv']> {
  return Array.from({ length: n }, (_, i) => {
    const hex = Buffer.from([127, 0, 0, i + 1]).toString('hex')
    return { port: port + i, target: `${hex}.addr.dc1.consul` }
  })
}
