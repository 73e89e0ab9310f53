import { createRequire } from 'node:module'
import { DnsError } from '../errors.js'

// dns2 is CommonJS; its Packet class does the wire encoding and decoding. Everything else (sockets, timeouts,
// failover, connection reuse) is ours, because dns2's clients open a socket per query and its TCP client has no
// timeout.
const require = createRequire(import.meta.url)
const Packet = require('dns2').Packet as PacketStatic

interface PacketStatic {
  new (): PacketInstance
  parse(buf: Buffer): PacketInstance
  TYPE: Record<string, number>
  CLASS: Record<string, number>
  Resource: { EDNS(rdata: unknown[], opts?: { udpPayloadSize?: number }): unknown }
}
interface PacketInstance {
  header: {
    id: number
    qr: number
    tc: number
    rd: number
    rcode: number
    ancount: number
    arcount: number
    nscount: number
    qdcount: number
  }
  questions: { name: string; type: number; class: number }[]
  answers: RawRecord[]
  authorities: RawRecord[]
  additionals: RawRecord[]
  toBuffer(): Buffer
}
interface RawRecord {
  name: string
  type: number
  ttl: number
  address?: string
  priority?: number
  weight?: number
  port?: number
  target?: string
  domain?: string
}

export type QueryType = 'A' | 'AAAA' | 'SRV'

export const TYPE_A = 1
export const TYPE_CNAME = 5
export const TYPE_AAAA = 28
export const TYPE_SRV = 33
const TYPE_OPT = 41

export const RCODE_NOERROR = 0
export const RCODE_SERVFAIL = 2
export const RCODE_NXDOMAIN = 3
export const RCODE_REFUSED = 5

export interface DnsRecord {
  name: string
  type: number
  ttl: number
  /** A / AAAA */
  address?: string
  /** SRV */
  priority?: number
  weight?: number
  port?: number
  target?: string
}

export interface DnsMessage {
  id: number
  rcode: number
  truncated: boolean
  answers: DnsRecord[]
  additionals: DnsRecord[]
  /** Size of the message on the wire; used to spot answers trimmed to fit a buffer. */
  size: number
}

const QTYPE: Record<QueryType, number> = { A: TYPE_A, AAAA: TYPE_AAAA, SRV: TYPE_SRV }

/**
 * Encodes a query. `ednsPayload` > 0 adds an OPT record advertising that UDP buffer size: Consul answers queries
 * without EDNS with at most 3 records (`udp_answer_limit`) and, unless `enable_truncate` is on, without the TC bit.
 */
export function encodeQuery(id: number, name: string, type: QueryType, ednsPayload: number): Buffer {
  const p = new Packet()
  p.header.id = id
  p.header.rd = 0 // Consul is authoritative for its domain; recursion is never wanted here
  p.questions.push({ name, type: QTYPE[type], class: 1 })
  if (ednsPayload > 0) p.additionals.push(Packet.Resource.EDNS([], { udpPayloadSize: ednsPayload }) as RawRecord)
  return p.toBuffer()
}

/** Decodes a response; any damage (short read, record that does not parse, not a response) is CLB_DNS_MALFORMED. */
export function decodeResponse(buf: Buffer, server: string): DnsMessage {
  if (buf.length < 12)
    throw new DnsError('CLB_DNS_MALFORMED', `malformed DNS response from ${server}: ${buf.length} bytes`)
  let p: PacketInstance
  try {
    p = Packet.parse(buf)
  } catch (err) {
    throw new DnsError('CLB_DNS_MALFORMED', `malformed DNS response from ${server}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  if (!p.header.qr) throw new DnsError('CLB_DNS_MALFORMED', `DNS message from ${server} is not a response`)
  // dns2 skips records it cannot parse; a count that does not match the header means the message was damaged.
  if (p.answers.length !== p.header.ancount || p.additionals.length !== p.header.arcount) {
    if (!p.header.tc)
      throw new DnsError(
        'CLB_DNS_MALFORMED',
        `malformed DNS response from ${server}: header promises ${p.header.ancount} answers, ${p.answers.length} parsed`,
      )
  }
  const answers: DnsRecord[] = []
  for (const r of p.answers) if (r) answers.push(toRecord(r))
  const additionals: DnsRecord[] = []
  for (const r of p.additionals) if (r && r.type !== TYPE_OPT) additionals.push(toRecord(r))
  return {
    id: p.header.id,
    rcode: p.header.rcode,
    truncated: p.header.tc === 1,
    answers,
    additionals,
    size: buf.length,
  }
}

function toRecord(r: RawRecord): DnsRecord {
  const rec: DnsRecord = { name: lower(r.name), type: r.type, ttl: r.ttl >>> 0 }
  if (r.type === TYPE_A || r.type === TYPE_AAAA) rec.address = r.address!
  else if (r.type === TYPE_SRV) {
    rec.priority = r.priority!
    rec.weight = r.weight!
    rec.port = r.port!
    rec.target = lower(r.target!)
  } else if (r.type === TYPE_CNAME) rec.target = lower(r.domain ?? '')
  return rec
}

function lower(name: string): string {
  const n = name.toLowerCase()
  return n.endsWith('.') ? n.slice(0, -1) : n
}

/** Reads the id of a message without decoding it (to match responses to queries). */
export function messageId(buf: Buffer): number {
  return buf.length >= 2 ? buf.readUInt16BE(0) : -1
}
