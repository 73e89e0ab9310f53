import { createSocket, type Socket } from 'node:dgram'
import { DnsError } from '../errors.js'
import { decodeResponse, encodeQuery, messageId, type DnsMessage, type QueryType } from './message.js'
import { PendingQueries } from './pending.js'

/**
 * One UDP socket per server, reused for every query; responses are matched by id and source port. Queries carry
 * EDNS0 with a 4096-byte buffer so Consul does not cap answers at 3 records.
 */
export class UdpTransport {
  readonly label: string
  private readonly host: string
  private readonly port: number
  private socket: Socket | null = null
  private readonly pending: PendingQueries
  private readonly ednsPayload: number

  constructor(host: string, port: number, label: string, ednsPayload = 4096) {
    this.host = host
    this.port = port
    this.label = label
    this.ednsPayload = ednsPayload
    this.pending = new PendingQueries(`udp://${label}`)
  }

  query(name: string, type: QueryType, timeoutMs: number): Promise<DnsMessage> {
    const sock = this.open()
    const { id, answer } = this.pending.add(name, timeoutMs)
    sock.send(encodeQuery(id, name, type, this.ednsPayload), this.port, this.host, (err) => {
      if (err) this.pending.settle(id, new DnsError('CLB_DNS_UNREACHABLE', `cannot send DNS query to udp://${this.label}: ${err.message}`, { cause: err }))
    })
    return answer
  }

  private open(): Socket {
    if (this.socket) return this.socket
    const sock = createSocket(this.host.includes(':') ? 'udp6' : 'udp4')
    sock.on('message', (msg, rinfo) => {
      // Only the configured server may answer (a stray packet on our port is not a DNS answer).
      if (rinfo.port !== this.port) return
      const id = messageId(msg)
      if (!this.pending.has(id)) return // late answer to a query that already timed out
      try {
        this.pending.settle(id, null, decodeResponse(msg, `udp://${this.label}`))
      } catch (err) {
        this.pending.settle(id, err as Error)
      }
    })
    sock.on('error', (err) => {
      this.pending.failAll(() => new DnsError('CLB_DNS_UNREACHABLE', `udp://${this.label}: ${err.message}`, { cause: err }))
      this.close()
    })
    sock.unref()
    this.socket = sock
    return sock
  }

  close(): void {
    const s = this.socket
    this.socket = null
    if (s) { try { s.close() } catch { /* already closed by an error: nothing left to release */ } }
    this.pending.failAll(() => new DnsError('CLB_DNS_UNREACHABLE', `udp://${this.label}: transport closed`))
  }
}
