import type { Instance } from '../resolver/instances.js'
import type { Member, Select } from './policies.js'
import type { Upstream, UpstreamRegistry } from './upstream.js'

/**
 * The members of one service, grouped into SRV priority tiers (lowest first): traffic goes to the first tier with an
 * eligible member, so a higher-priority value is a failover tier. Rebuilt when the DNS answer changes; members that
 * stay keep their round-robin state.
 */
export class ServicePool {
  private tiers: Member[][] = []
  private byKey = new Map<string, Member>()
  private readonly select: Select
  private readonly registry: UpstreamRegistry
  /** Picks made while every member was ejected (all of them were tried anyway: better than a certain 503). */
  panics = 0

  constructor(registry: UpstreamRegistry, select: Select) {
    this.registry = registry
    this.select = select
  }

  get size(): number {
    return this.byKey.size
  }

  update(instances: readonly Instance[], now: number): void {
    const next = new Map<string, Member>()
    for (const inst of instances) {
      const old = this.byKey.get(inst.key)
      if (old && old.weight === inst.weight && old.priority === inst.priority) {
        next.set(inst.key, old)
      } else {
        const upstream = old ? old.upstream : this.registry.acquire(inst)
        next.set(inst.key, {
          upstream,
          weight: inst.weight,
          priority: inst.priority,
          currentWeight: old?.currentWeight ?? 0,
        })
      }
    }
    for (const [key, m] of this.byKey) if (!next.has(key)) this.registry.release(m.upstream, now)
    const tiers = new Map<number, Member[]>()
    for (const m of next.values()) {
      let t = tiers.get(m.priority)
      if (!t) {
        t = []
        tiers.set(m.priority, t)
      }
      t.push(m)
    }
    this.tiers = [...tiers.entries()].sort((a, b) => a[0] - b[0]).map(([, ms]) => ms)
    this.byKey = next
  }

  // Selection predicates are made once per pool and read the pick's arguments from these fields, so a pick creates
  // no closure (the request path is hot).
  private now = 0
  private tried: readonly Upstream[] | null = null
  private readonly isEligible = (m: Member): boolean => m.upstream.isAvailable(this.now) && !this.wasTried(m.upstream)
  private readonly isUntried = (m: Member): boolean => m.upstream.hasCapacity() && !this.wasTried(m.upstream)

  private wasTried(u: Upstream): boolean {
    const t = this.tried
    if (t === null) return false
    for (let i = 0; i < t.length; i++) if (t[i] === u) return true
    return false
  }

  /**
   * Picks an upstream, skipping those in `tried` (earlier attempts of this request) and unavailable ones (ejected, or
   * at their connection cap), from the first priority tier that has one. If every untried member with capacity is
   * ejected, one of them is used anyway ("panic mode", like Envoy's panic threshold): Consul still lists them, and a
   * try beats a certain 503. A full instance is never picked.
   */
  pick(now: number, tried: readonly Upstream[] | null): Upstream | null {
    this.now = now
    this.tried = tried
    try {
      for (let i = 0; i < this.tiers.length; i++) {
        const m = this.select(this.tiers[i]!, this.isEligible)
        if (m !== null) return m.upstream
      }
      for (let i = 0; i < this.tiers.length; i++) {
        const m = this.select(this.tiers[i]!, this.isUntried)
        if (m !== null) {
          this.panics++
          return m.upstream
        }
      }
      return null
    } finally {
      this.tried = null
    }
  }

  members(): Member[] {
    return [...this.byKey.values()]
  }

  close(now: number): void {
    for (const m of this.byKey.values()) this.registry.release(m.upstream, now)
    this.byKey.clear()
    this.tiers = []
  }
}
