import { connect, type Socket } from 'node:net'
import { DnsError } from '../errors.js'
import { type DnsMessage, decodeResponse, encodeQuery, type QueryType } from './message.js'
import { PendingQueries } from './pending.js'

/**
 * One TCP connection per server, reused for every query and pipelined (RFC 7766): answers are matched by id, so
 * queries for several services share the connection. TCP answers are never capped at 3 records, which is why it is
 * the default transport. Consul closes idle DNS connections after a few seconds; the next query reconnects.
 */
export class TcpTransport {
  readonly label: string
  private readonly host: string
  private readonly port: number
  private socket: Socket | null = null
  private connecting: Promise<Socket> | null = null
  private readonly pending: PendingQueries
  private buffered: Buffer = Buffer.alloc(0)
  private connectingSocket: Socket | null = null
  private closed = false

  constructor(host: string, port: number, label: string) {
    this.host = host
    this.port = port
    this.label = label
    this.pending = new PendingQueries(`tcp://${label}`)
  }

  async query(name: string, type: QueryType, timeoutMs: number): Promise<DnsMessage> {
    if (this.closed) throw new DnsError('CLB_DNS_UNREACHABLE', `tcp://${this.label}: transport closed`)
    const deadline = Date.now() + timeoutMs
    try {
      return await this.once(name, type, timeoutMs)
    } catch (err) {
      // A reused connection may have been closed by the server between queries (idle timeout); one retry on a fresh
      // connection, within the same deadline, tells a closed connection from a dead server.
      const left = deadline - Date.now()
      if (
        (err as { code?: string }).code === 'CLB_DNS_UNREACHABLE' &&
        (err as { wasReused?: boolean }).wasReused &&
        left > 0
      ) {
        return await this.once(name, type, left)
      }
      throw err
    }
  }

  private async once(name: string, type: QueryType, timeoutMs: number): Promise<DnsMessage> {
    const wasReused = this.socket !== null
    const { id, answer } = this.pending.add(name, timeoutMs)
    const query = encodeQuery(id, name, type, 0)
    const frame = Buffer.allocUnsafe(query.length + 2)
    frame.writeUInt16BE(query.length, 0)
    query.copy(frame, 2)
    this.open(timeoutMs).then(
      (sock) => {
        if (this.pending.has(id)) sock.write(frame)
      },
      (err: Error) => this.pending.settle(id, err),
    )
    try {
      return await answer
    } catch (err) {
      ;(err as { wasReused?: boolean }).wasReused = wasReused
      throw err
    }
  }

  private open(timeoutMs: number): Promise<Socket> {
    if (this.socket) return Promise.resolve(this.socket)
    if (this.connecting) return this.connecting
    this.connecting = new Promise<Socket>((resolve, reject) => {
      const sock = connect({ host: this.host, port: this.port, noDelay: true })
      sock.unref()
      this.connectingSocket = sock
      // A server that drops SYNs must not leave a connect pending for the OS's minutes-long timeout.
      sock.setTimeout(timeoutMs, () =>
        sock.destroy(Object.assign(new Error(`connect timed out after ${timeoutMs} ms`), { code: 'ETIMEDOUT' })),
      )
      const onConnectError = (err: Error) => {
        this.connecting = null
        this.connectingSocket = null
        sock.destroy()
        reject(new DnsError('CLB_DNS_UNREACHABLE', `tcp://${this.label}: ${err.message}`, { cause: err }))
      }
      sock.once('error', onConnectError)
      sock.once('connect', () => {
        sock.off('error', onConnectError)
        sock.setTimeout(0)
        this.connecting = null
        this.connectingSocket = null
        if (this.closed) {
          sock.destroy()
          reject(new DnsError('CLB_DNS_UNREACHABLE', `tcp://${this.label}: transport closed`))
          return
        }
        this.socket = sock
        this.buffered = Buffer.alloc(0)
        sock.on('data', (chunk: Buffer) => this.onData(chunk))
        sock.on('error', () => {
          /* 'close' follows and fails what is in flight */
        })
        sock.on('close', () => this.onClose(sock))
        resolve(sock)
      })
    })
    return this.connecting
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
    while (this.buffered.length >= 2) {
      const len = this.buffered.readUInt16BE(0)
      if (this.buffered.length < len + 2) return
      const msg = this.buffered.subarray(2, len + 2)
      this.buffered = this.buffered.subarray(len + 2)
      const id = msg.length >= 2 ? msg.readUInt16BE(0) : -1
      if (!this.pending.has(id)) continue
      try {
        this.pending.settle(id, null, decodeResponse(msg, `tcp://${this.label}`))
      } catch (err) {
        this.pending.settle(id, err as Error)
      }
    }
  }

  private onClose(sock: Socket): void {
    if (this.socket === sock) this.socket = null
    this.pending.failAll(
      () => new DnsError('CLB_DNS_UNREACHABLE', `tcp://${this.label}: connection closed before the answer`),
    )
  }

  close(): void {
    this.closed = true
    const s = this.socket
    this.socket = null
    s?.destroy()
    this.connectingSocket?.destroy()
    this.connectingSocket = null
    this.pending.failAll(() => new DnsError('CLB_DNS_UNREACHABLE', `tcp://${this.label}: transport closed`))
  }
}
