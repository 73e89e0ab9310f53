import { type Answer, type DecodedPacket, decode, encode, type Packet } from 'dns-packet'
import { DnsError } from '../errors.js'

// dns-packet does the wire encoding and decoding (a response decodes in a few µs: dns2's decoder, used before, took
// 90–230 µs, which a refresh per TTL of every service in use multiplies). Everything else (sockets, timeouts,
// failover, connection reuse) is ours.

export type QueryType = 'A' | 'AAAA' | 'SRV'

export const TYPE_A = 1
export const TYPE_CNAME = 5
export const TYPE_AAAA = 28
export const TYPE_SRV = 33

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

/** dns-packet names record types; the resolver compares numbers. Types it does not use map to 0. */
const TYPE_NUMBER: Record<string, number> = { A: TYPE_A, AAAA: TYPE_AAAA, SRV: TYPE_SRV, CNAME: TYPE_CNAME }

/**
 * Encodes a query. `ednsPayload` > 0 adds an OPT record advertising that UDP buffer size: Consul answers queries
 * without EDNS with at most 3 records (`udp_answer_limit`) and, unless `enable_truncate` is on, without the TC bit.
 */
export function encodeQuery(id: number, name: string, type: QueryType, ednsPayload: number): Buffer {
  // Flags 0: no RD, since Consul is authoritative for its domain and recursion is never wanted here.
  const query: Packet = { type: 'query', id, flags: 0, questions: [{ type, name, class: 'IN' }] }
  if (ednsPayload > 0)
    query.additionals = [
      {
        type: 'OPT',
        name: '.',
        udpPayloadSize: ednsPayload,
        extendedRcode: 0,
        ednsVersion: 0,
        flags: 0,
        flag_do: false,
        options: [],
      },
    ]
  return encode(query)
}

/** Decodes a response; any damage (short read, record that does not parse, not a response) is CLB_DNS_MALFORMED. */
export function decodeResponse(buf: Buffer, server: string): DnsMessage {
  if (buf.length < 12)
    throw new DnsError('CLB_DNS_MALFORMED', `malformed DNS response from ${server}: ${buf.length} bytes`)
  if ((buf[2]! & 0x80) === 0) throw new DnsError('CLB_DNS_MALFORMED', `DNS message from ${server} is not a response`)
  let p: DecodedPacket
  try {
    p = decode(buf)
  } catch (err) {
    // A UDP answer cut short with TC set (not by Consul, which drops whole records) says: ask again over TCP.
    if ((buf[2]! & 0x02) !== 0)
      return {
        id: buf.readUInt16BE(0),
        rcode: buf[3]! & 15,
        truncated: true,
        answers: [],
        additionals: [],
        size: buf.length,
      }
    throw new DnsError('CLB_DNS_MALFORMED', `malformed DNS response from ${server}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  const answers: DnsRecord[] = []
  for (const r of p.answers ?? []) answers.push(toRecord(r))
  const additionals: DnsRecord[] = []
  for (const r of p.additionals ?? []) if (r.type !== 'OPT') additionals.push(toRecord(r))
  return {
    id: p.id ?? 0,
    rcode: (p.flags ?? 0) & 15,
    truncated: p.flag_tc === true,
    answers,
    additionals,
    size: buf.length,
  }
}

function toRecord(r: Answer): DnsRecord {
  const type = TYPE_NUMBER[r.type] ?? 0
  const rec: DnsRecord = { name: lower(r.name), type, ttl: (('ttl' in r ? r.ttl : 0) ?? 0) >>> 0 }
  if (r.type === 'A' || r.type === 'AAAA') rec.address = r.data
  else if (r.type === 'SRV') {
    rec.priority = r.data.priority ?? 0
    rec.weight = r.data.weight ?? 0
    rec.port = r.data.port
    rec.target = lower(r.data.target)
  } else if (r.type === 'CNAME') rec.target = lower(r.data)
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
