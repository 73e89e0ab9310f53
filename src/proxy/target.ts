import { ServicePool } from '../balancer/pool.js'
import type { Select } from '../balancer/policies.js'
import type { UpstreamRegistry } from '../balancer/upstream.js'
import type { ServiceEntry, ServiceResolver, ServiceKey } from '../resolver/resolver.js'
import type { ServiceMetrics } from './metrics.js'

/**
 * Where matched requests go: a resolver entry (the service's current instances) and the balancer pool built over
 * them. Made once per configured route, or once per Host name in the Host-routing cache.
 */
export class ServiceTarget {
  readonly service: string
  readonly entry: ServiceEntry
  readonly pool: ServicePool
  readonly metrics: ServiceMetrics
  private readonly resolver: ServiceResolver
  private poolVersion = -1

  constructor(key: ServiceKey, resolver: ServiceResolver, registry: UpstreamRegistry, select: Select, metrics: ServiceMetrics) {
    this.service = key.service
    this.resolver = resolver
    this.entry = resolver.acquire(key)
    this.pool = new ServicePool(registry, select)
    this.metrics = metrics
    this.entry.onChange(() => this.sync())
    this.sync()
  }

  /** Rebuilds the pool when the entry's instances changed (the resolver calls this on change). */
  sync(): void {
    if (this.poolVersion === this.entry.version) return
    this.poolVersion = this.entry.version
    this.pool.update(this.entry.instances, Date.now())
  }

  close(): void {
    this.pool.close(Date.now())
    this.resolver.release(this.entry)
  }
}
