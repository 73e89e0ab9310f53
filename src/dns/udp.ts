import { createSocket, type Socket } from 'node:dgram'
import { DnsError } from '../errors.js'
import { type DnsMessage, decodeResponse, encodeQuery, messageId, type QueryType } from './message.js'
import { PendingQueries } from './pending.js'

/**
 * One UDP socket per server, connected to it (the kernel then drops datagrams from any other address, and an ICMP
 * "port unreachable" fails the queries at once instead of after the timeout), reused for every query; answers are
 * matched by random id. Queries carry EDNS0 with a 4096-byte buffer so Consul does not cap answers at 3 records.
 */
export class UdpTransport {
  readonly label: string
  private readonly host: string
  private readonly port: number
  private socket: Promise<Socket> | null = null
  private current: Socket | null = null
  private readonly pending: PendingQueries
  private readonly ednsPayload: number
  private closed = false

  constructor(host: string, port: number, label: string, ednsPayload = 4096) {
    this.host = host
    this.port = port
    this.label = label
    this.ednsPayload = ednsPayload
    this.pending = new PendingQueries(`udp://${label}`)
  }

  query(name: string, type: QueryType, timeoutMs: number): Promise<DnsMessage> {
    if (this.closed) return Promise.reject(new DnsError('CLB_DNS_UNREACHABLE', `udp://${this.label}: transport closed`))
    const { id, answer } = this.pending.add(name, timeoutMs)
    const packet = encodeQuery(id, name, type, this.ednsPayload)
    this.open().then(
      (sock) =>
        sock.send(packet, (err) => {
          if (err)
            this.pending.settle(
              id,
              new DnsError('CLB_DNS_UNREACHABLE', `cannot send DNS query to udp://${this.label}: ${err.message}`, {
                cause: err,
              }),
            )
        }),
      (err: Error) =>
        this.pending.settle(
          id,
          new DnsError('CLB_DNS_UNREACHABLE', `udp://${this.label}: ${err.message}`, { cause: err }),
        ),
    )
    return answer
  }

  private open(): Promise<Socket> {
    if (this.socket) return this.socket
    const sock = createSocket(this.host.includes(':') ? 'udp6' : 'udp4')
    this.current = sock
    sock.on('message', (msg) => {
      const id = messageId(msg)
      if (!this.pending.has(id)) return // late answer to a query that already timed out
      try {
        this.pending.settle(id, null, decodeResponse(msg, `udp://${this.label}`))
      } catch (err) {
        this.pending.settle(id, err as Error)
      }
    })
    sock.unref()
    this.socket = new Promise<Socket>((resolve, reject) => {
      sock.once('error', reject)
      sock.connect(this.port, this.host, () => {
        sock.off('error', reject)
        sock.on('error', (err) => {
          // ECONNREFUSED (ICMP port unreachable) and friends: fail what is in flight, reopen on the next query.
          this.pending.failAll(
            () => new DnsError('CLB_DNS_UNREACHABLE', `udp://${this.label}: ${err.message}`, { cause: err }),
          )
          this.reset(sock)
        })
        resolve(sock)
      })
    })
    this.socket.catch(() => this.reset(sock))
    return this.socket
  }

  private reset(sock: Socket): void {
    if (this.current !== sock) return
    this.current = null
    this.socket = null
    try {
      sock.close()
    } catch {
      /* already closed: nothing left to release */
    }
  }

  close(): void {
    this.closed = true
    if (this.current) this.reset(this.current)
    this.pending.failAll(() => new DnsError('CLB_DNS_UNREACHABLE', `udp://${this.label}: transport closed`))
  }
}
