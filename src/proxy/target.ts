import type { Select } from '../balancer/policies.js'
import { ServicePool } from '../balancer/pool.js'
import type { UpstreamRegistry } from '../balancer/upstream.js'
import type { ServiceEntry, ServiceKey, ServiceResolver } from '../resolver/resolver.js'
import type { ProxyMetrics, ServiceStats } from './metrics.js'

/**
 * Where matched requests go: a resolver entry (the service's current instances) and the balancer pool built over
 * them. Made once per configured route, or once per Host name in the Host-routing cache.
 */
export class ServiceTarget {
  readonly service: string
  readonly entry: ServiceEntry
  readonly pool: ServicePool
  /** Counters of this service; a Host-routed name counts under `_unresolved` until Consul lists an instance. */
  stats: ServiceStats
  private readonly metrics: ProxyMetrics
  private named: boolean
  private readonly resolver: ServiceResolver
  private poolVersion = -1
  private closed = false
  private readonly unsubscribe: () => void

  constructor(
    key: ServiceKey,
    resolver: ServiceResolver,
    registry: UpstreamRegistry,
    select: Select,
    metrics: ProxyMetrics,
    configured: boolean,
  ) {
    this.service = key.service
    this.resolver = resolver
    this.entry = resolver.acquire(key)
    this.pool = new ServicePool(registry, select)
    this.metrics = metrics
    this.named = configured
    this.stats = configured ? metrics.service(key.service) : metrics.unresolved
    this.unsubscribe = this.entry.onChange(() => this.sync())
    this.sync()
  }

  /** Rebuilds the pool when the entry's instances changed (the resolver calls this on change). */
  sync(): void {
    if (this.closed || this.poolVersion === this.entry.version) return
    this.poolVersion = this.entry.version
    this.pool.update(this.entry.instances, Date.now())
    if (!this.named && this.entry.instances.length > 0) {
      this.named = true
      this.stats = this.metrics.service(this.service)
    }
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    // The entry may outlive this target (a configured route shares it): stop listening before letting go.
    this.unsubscribe()
    this.pool.close(Date.now())
    this.resolver.release(this.entry)
  }
}
