import type { BalancerPolicy } from '../config/serve.js'
import type { Upstream } from './upstream.js'

/** One instance as a member of a service pool: the shared upstream plus per-service selection state. */
export interface Member {
  readonly upstream: Upstream
  readonly weight: number
  readonly priority: number
  /** Smooth weighted round-robin state (nginx's algorithm); carried over when the pool is rebuilt. */
  currentWeight: number
}

/**
 * A selection policy picks one member among those `ok(m)` accepts, or null. Each is a small function over the
 * members of one tier (like Caddy's selectionpolicies.go). Members are never copied to choose.
 */
export type Select = (members: readonly Member[], ok: (m: Member) => boolean) => Member | null

/**
 * Smooth weighted round-robin (nginx's ngx_http_upstream_get_peer): with equal weights it is plain rotation; with
 * SRV weights each member gets its share, spread out rather than in bursts. Members that appear or vanish do not
 * reset the others' state.
 */
export const roundRobin: Select = (members, ok) => {
  let best: Member | null = null
  let total = 0
  for (let i = 0; i < members.length; i++) {
    const m = members[i]!
    if (!ok(m)) continue
    m.currentWeight += m.weight
    total += m.weight
    if (best === null || m.currentWeight > best.currentWeight) best = m
  }
  if (best !== null) best.currentWeight -= total
  return best
}

/** Fewest requests and tunnels per unit of weight; ties rotate so equal members share the load. */
export function leastConnections(): Select {
  let offset = 0
  return (members, ok) => {
    const n = members.length
    if (n === 0) return null
    offset = (offset + 1) % n
    let best: Member | null = null
    let bestLoad = Infinity
    for (let k = 0; k < n; k++) {
      const m = members[(offset + k) % n]!
      if (!ok(m)) continue
      const load = m.upstream.load / m.weight
      if (load < bestLoad) {
        best = m
        bestLoad = load
      }
    }
    return best
  }
}

/** Power of two choices: two random eligible members, the less loaded (per weight) wins. */
export const powerOfTwo: Select = (members, ok) => {
  const n = members.length
  if (n === 0) return null
  // Two random starting points, each advanced to the next eligible member; no array of candidates is built.
  const a = firstOk(members, ok, (Math.random() * n) | 0)
  if (a === null) return null
  // The second choice starts anywhere but at the first one, so two eligible members are really compared.
  const ia = members.indexOf(a)
  const b = n > 1 ? firstOk(members, ok, (ia + 1 + ((Math.random() * (n - 1)) | 0)) % n) : null
  if (b === null || b === a) return a
  return b.upstream.load / b.weight < a.upstream.load / a.weight ? b : a
}

function firstOk(members: readonly Member[], ok: (m: Member) => boolean, start: number): Member | null {
  const n = members.length
  for (let k = 0; k < n; k++) {
    const m = members[(start + k) % n]!
    if (ok(m)) return m
  }
  return null
}

export function selectorFor(policy: BalancerPolicy): Select {
  switch (policy) {
    case 'round-robin':
      return roundRobin
    case 'least-connections':
      return leastConnections()
    case 'p2c':
      return powerOfTwo
  }
}
