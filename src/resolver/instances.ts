import { isIP } from 'node:net'
import { type DnsMessage, TYPE_A, TYPE_AAAA, TYPE_SRV } from '../dns/message.js'

/** One address:port Consul listed for a service, with its SRV priority (failover tier) and weight. */
export interface Instance {
  /** `address:port` (`[v6]:port`): the identity the balancer keys state by. */
  readonly key: string
  readonly address: string
  readonly port: number
  readonly priority: number
  readonly weight: number
}

export function instanceKey(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}

/**
 * Consul writes an SRV target either as the node name (`node1.node.dc1.consul`, address in an additional A/AAAA
 * record) or, when the service has its own address, as `<hex>.addr.<dc>.<domain>` with the address hex-encoded in the
 * name (8 hex digits for IPv4, 32 for IPv6). Returns null when the name is not of the second form.
 */
export function addressFromAddrName(target: string): string | null {
  const dot = target.indexOf('.')
  if (dot === -1 || !target.startsWith('addr.', dot + 1)) return null
  const hex = target.slice(0, dot)
  if (/^[0-9a-f]{8}$/.test(hex)) {
    return [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.')
  }
  if (/^[0-9a-f]{32}$/.test(hex)) {
    const groups: string[] = []
    for (let i = 0; i < 32; i += 4) groups.push(hex.slice(i, i + 4).replace(/^0+(?=.)/, ''))
    return groups.join(':')
  }
  return null
}

export interface SrvParse {
  instances: Instance[]
  /** Targets whose address was neither in the additional section nor encoded in the name. */
  unresolvedTargets: { target: string; port: number; priority: number; weight: number }[]
  minTtlS: number
}

/** Turns an SRV answer into instances, using additional records and `.addr.` names for target addresses. */
export function instancesFromSrv(msg: DnsMessage): SrvParse {
  const extra = new Map<string, string>()
  for (const r of msg.additionals) {
    if ((r.type === TYPE_A || r.type === TYPE_AAAA) && r.address && !extra.has(r.name)) extra.set(r.name, r.address)
  }
  const instances: Instance[] = []
  const unresolvedTargets: SrvParse['unresolvedTargets'] = []
  const seen = new Set<string>()
  let minTtlS = Infinity
  for (const r of msg.answers) {
    if (r.type !== TYPE_SRV || r.port === undefined || r.target === undefined) continue
    minTtlS = Math.min(minTtlS, r.ttl)
    const address = extra.get(r.target) ?? addressFromAddrName(r.target) ?? (isIP(r.target) ? r.target : null)
    // Weight 0 in RFC 2782 means "very small chance": keep such instances reachable with the smallest weight.
    const weight = Math.max(1, r.weight ?? 1)
    if (address === null) {
      unresolvedTargets.push({ target: r.target, port: r.port, priority: r.priority ?? 0, weight })
      continue
    }
    const key = instanceKey(address, r.port)
    if (seen.has(key)) continue
    seen.add(key)
    instances.push({ key, address, port: r.port, priority: r.priority ?? 0, weight })
  }
  return { instances, unresolvedTargets, minTtlS: minTtlS === Infinity ? 0 : minTtlS }
}

/** Turns A/AAAA answers into instances on a fixed port. */
export function instancesFromAddresses(msgs: DnsMessage[], port: number): { instances: Instance[]; minTtlS: number } {
  const instances: Instance[] = []
  const seen = new Set<string>()
  let minTtlS = Infinity
  for (const msg of msgs) {
    for (const r of msg.answers) {
      if ((r.type !== TYPE_A && r.type !== TYPE_AAAA) || !r.address) continue
      minTtlS = Math.min(minTtlS, r.ttl)
      const key = instanceKey(r.address, port)
      if (seen.has(key)) continue
      seen.add(key)
      instances.push({ key, address: r.address, port, priority: 0, weight: 1 })
    }
  }
  return { instances, minTtlS: minTtlS === Infinity ? 0 : minTtlS }
}

/** Same instances (keys, priorities, weights) in any order: no need to rebuild the balancer's pool. */
export function sameInstances(a: readonly Instance[], b: readonly Instance[]): boolean {
  if (a.length !== b.length) return false
  const m = new Map<string, Instance>()
  for (const i of a) m.set(i.key, i)
  for (const i of b) {
    const o = m.get(i.key)
    if (!o || o.priority !== i.priority || o.weight !== i.weight) return false
  }
  return true
}
