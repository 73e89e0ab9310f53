import { LRUCache } from 'lru-cache'
import type { ServiceTarget } from './target.js'

export interface HostTargetsOptions {
  /** Names not known to have an instance, kept at most (clients choose Host names: this is their share). */
  probationMax: number
  /** A known target unused this long, with no request on its instances, is closed (the resolver's idleServiceMs). */
  idleMs: number
}

/**
 * The targets of Host-routed names, bounded without evicting what is in use. A per-request LRU over every name made
 * the cost jump once the services in use outnumbered it (each request evicted a target, its pool and its DNS answer,
 * and built them again); here the cost of a request does not depend on how many services there are:
 *
 * - names Consul answered with at least one instance are `known`: kept while used, whatever their number, because
 *   that number is bounded by what operators registered in Consul, not by what clients send;
 * - other names (unknown services, tags or datacenters: what a client can invent) wait on `probation`, an LRU of
 *   `probationMax`; one is promoted as soon as its name resolves to an instance (not on its next request: with
 *   thousands of services in use, that next request came after hundreds of other new names had pushed it out of
 *   probation, so every request to them started cold);
 * - a known target unused for `idleMs` (the resolver stopped refreshing it) and with no request on its instances
 *   is closed by a sweep, like nginx's resolver forgetting names.
 */
export class HostTargets {
  private readonly known = new Map<string, ServiceTarget>()
  private readonly probation: LRUCache<string, ServiceTarget>
  /** Unsubscribes the instance watch of each target on probation (promotion or eviction ends it). */
  private readonly watching = new Map<ServiceTarget, () => void>()
  private readonly idleMs: number
  private readonly timer: NodeJS.Timeout

  constructor(opts: HostTargetsOptions) {
    this.idleMs = opts.idleMs
    this.probation = new LRUCache<string, ServiceTarget>({
      max: opts.probationMax,
      // A promoted target leaves probation without being closed (see get()).
      dispose: (t, _k, reason) => {
        this.unwatch(t)
        if (reason !== 'delete') t.close()
      },
    })
    this.timer = setInterval(() => this.sweep(Date.now()), Math.max(1000, Math.min(60_000, opts.idleMs / 2)))
    this.timer.unref()
  }

  /** The target of `key`, if one is held (a name on probation that now has instances is promoted). */
  get(key: string): ServiceTarget | undefined {
    const k = this.known.get(key)
    if (k !== undefined) return k
    const t = this.probation.get(key)
    if (t !== undefined && t.entry.instances.length > 0) this.promote(key, t)
    return t
  }

  /** A new target for `key`: on probation until its name resolves to an instance, promoted at that moment. */
  add(key: string, t: ServiceTarget): void {
    this.probation.set(key, t)
    if (t.entry.instances.length > 0) {
      this.promote(key, t)
      return
    }
    this.watching.set(
      t,
      t.entry.onChange((e) => {
        if (e.instances.length > 0 && this.probation.peek(key) === t) this.promote(key, t)
      }),
    )
  }

  private promote(key: string, t: ServiceTarget): void {
    this.probation.delete(key) // dispose (reason 'delete') ends the watch and keeps the target open
    this.known.set(key, t)
  }

  private unwatch(t: ServiceTarget): void {
    const off = this.watching.get(t)
    if (off === undefined) return
    this.watching.delete(t)
    off()
  }

  /** Closes known targets idle for longer than idleMs whose instances carry no request. */
  sweep(now: number): void {
    for (const [key, t] of this.known) {
      if (now - t.entry.lastAccess <= this.idleMs) continue
      if (t.pool.members().some((m) => m.upstream.inflight > 0)) continue
      this.known.delete(key)
      t.close()
    }
  }

  values(): ServiceTarget[] {
    return [...this.known.values(), ...this.probation.values()]
  }

  get size(): number {
    return this.known.size + this.probation.size
  }

  close(): void {
    clearInterval(this.timer)
    for (const t of this.known.values()) t.close()
    for (const t of this.probation.values()) t.close()
    this.known.clear()
    this.probation.clear()
    for (const off of this.watching.values()) off()
    this.watching.clear()
  }
}
