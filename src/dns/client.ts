import { ConsulLbError, DnsError } from '../errors.js'
import {
  type DnsMessage,
  type QueryType,
  RCODE_NOERROR,
  RCODE_NXDOMAIN,
  RCODE_REFUSED,
  RCODE_SERVFAIL,
} from './message.js'
import { TcpTransport } from './tcp.js'
import { UdpTransport } from './udp.js'

export interface DnsServerAddress {
  host: string
  port: number
  label: string
}

export interface DnsClientOptions {
  servers: readonly DnsServerAddress[]
  transport: 'tcp' | 'udp'
  timeoutMs: number
  /**
   * Consul's default `udp_answer_limit`: a UDP answer without the TC bit holding exactly this many records may have
   * been cut; it is asked again over TCP. 0 disables the check.
   */
  udpAnswerLimit?: number
  /** How long a server that failed is skipped in favour of the next one. */
  serverCooldownMs?: number
}

export interface DnsResult {
  message: DnsMessage
  /** `nxdomain` and `empty` are real answers (Consul: unknown service, or every instance critical). */
  kind: 'ok' | 'nxdomain' | 'empty'
  transport: 'udp' | 'tcp'
  server: string
  /** A UDP answer looked cut (TC bit or exactly udpAnswerLimit records) and TCP returned more. */
  capped: boolean
}

interface ServerSlot {
  addr: DnsServerAddress
  udp: UdpTransport
  tcp: TcpTransport
  downUntil: number
}

/**
 * Queries Consul DNS servers in order with a timeout each, failing over to the next on timeout, unreachable server,
 * SERVFAIL or REFUSED. A server that failed is skipped for a cool-down so every query does not pay its timeout.
 * Knows nothing of caching (that is resolver/).
 */
export class DnsClient {
  private readonly slots: ServerSlot[]
  private readonly opts: Required<Omit<DnsClientOptions, 'servers'>>
  /** Counts by outcome, read by metrics. */
  onQuery: ((outcome: string, transport: string) => void) | null = null

  constructor(opts: DnsClientOptions) {
    if (opts.servers.length === 0) throw new ConsulLbError('CLB_CONFIG_INVALID', 'dns: at least one server is needed')
    this.opts = {
      transport: opts.transport,
      timeoutMs: opts.timeoutMs,
      udpAnswerLimit: opts.udpAnswerLimit ?? 3,
      serverCooldownMs: opts.serverCooldownMs ?? 5000,
    }
    this.slots = opts.servers.map((addr) => ({
      addr,
      udp: new UdpTransport(addr.host, addr.port, addr.label),
      tcp: new TcpTransport(addr.host, addr.port, addr.label),
      downUntil: 0,
    }))
  }

  async query(name: string, type: QueryType): Promise<DnsResult> {
    const now = Date.now()
    // Healthy servers first, in configured order; servers in cool-down last (still tried: they may be back).
    const order = this.slots.filter((s) => s.downUntil <= now).concat(this.slots.filter((s) => s.downUntil > now))
    let lastErr: Error | null = null
    for (const slot of order) {
      try {
        const result = await this.queryServer(slot, name, type)
        slot.downUntil = 0
        this.onQuery?.(result.kind, result.transport)
        return result
      } catch (err) {
        lastErr = err as Error
        slot.downUntil = Date.now() + this.opts.serverCooldownMs
        this.onQuery?.((err as { code?: string }).code ?? 'error', this.opts.transport)
      }
    }
    throw lastErr ?? new DnsError('CLB_DNS_UNREACHABLE', 'no DNS server configured')
  }

  private async queryServer(slot: ServerSlot, name: string, type: QueryType): Promise<DnsResult> {
    const t = this.opts.timeoutMs
    if (this.opts.transport === 'tcp')
      return classify(await slot.tcp.query(name, type, t), 'tcp', slot.addr.label, false)
    const udp = await slot.udp.query(name, type, t)
    const limit = this.opts.udpAnswerLimit
    const looksCut = udp.truncated || (limit > 0 && udp.answers.length === limit) || udp.size >= 4000
    if (!looksCut) return classify(udp, 'udp', slot.addr.label, false)
    const tcp = await slot.tcp.query(name, type, t)
    return classify(tcp, 'tcp', slot.addr.label, udp.truncated || tcp.answers.length > udp.answers.length)
  }

  close(): void {
    for (const s of this.slots) {
      s.udp.close()
      s.tcp.close()
    }
  }
}

function classify(message: DnsMessage, transport: 'udp' | 'tcp', server: string, capped: boolean): DnsResult {
  switch (message.rcode) {
    case RCODE_NOERROR:
      return { message, kind: message.answers.length === 0 ? 'empty' : 'ok', transport, server, capped }
    case RCODE_NXDOMAIN:
      return { message, kind: 'nxdomain', transport, server, capped }
    case RCODE_SERVFAIL:
      throw new DnsError('CLB_DNS_SERVFAIL', `${transport}://${server} answered SERVFAIL`)
    case RCODE_REFUSED:
      throw new DnsError('CLB_DNS_REFUSED', `${transport}://${server} refused the query`)
    default:
      throw new DnsError('CLB_DNS_SERVFAIL', `${transport}://${server} answered rcode ${message.rcode}`)
  }
}
