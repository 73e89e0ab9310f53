import type { Select } from '../balancer/policies.js'
import { ServicePool } from '../balancer/pool.js'
import type { Upstream, UpstreamRegistry } from '../balancer/upstream.js'
import { NoHealthyInstanceError } from '../errors.js'
import type { Logger } from '../log.js'
import type { ServiceEntry, ServiceKey, ServiceResolver } from '../resolver/resolver.js'
import type { ProxyMetrics, ServiceStats } from './metrics.js'
import { INSTANCE_FAILURES, type RetryBudget } from './retry.js'

/**
 * Says why a service has no instance, from what it learned elsewhere (Consul's HTTP API: every check critical, in
 * maintenance, unknown name …). Synchronous and cheap: asked while a 503 is being written; null when it knows nothing.
 */
export interface NoInstanceExplainer {
  explain(key: ServiceKey): string | null
}

export interface TargetOptions {
  /** How long a request may wait for a name's first answer, or for the refresh of an answer woken from idleness. */
  coldWaitMs: number
  /** No instance: 503 at once ('fail') or wait up to emptyPoolWaitMs for one ('wait'). */
  emptyPool: 'fail' | 'wait'
  emptyPoolWaitMs: number
  explainer: NoInstanceExplainer | null
}

/**
 * Where matched requests go: a resolver entry (the service's current instances) and the balancer pool built over
 * them. Made once per configured route, or once per Host name in the Host-routing cache.
 */
export class ServiceTarget {
  readonly key: ServiceKey
  readonly service: string
  readonly entry: ServiceEntry
  readonly pool: ServicePool
  /** Counters of this service; a Host-routed name counts under `_unresolved` until Consul lists an instance. */
  stats: ServiceStats
  private readonly metrics: ProxyMetrics
  private named: boolean
  private readonly resolver: ServiceResolver
  private readonly opts: TargetOptions
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
    opts: TargetOptions,
  ) {
    this.key = key
    this.service = key.service
    this.resolver = resolver
    this.opts = opts
    this.entry = resolver.acquire(key)
    this.pool = new ServicePool(registry, select)
    this.metrics = metrics
    this.named = configured
    this.stats = configured ? metrics.service(key.service) : metrics.unresolved
    this.unsubscribe = this.entry.onChange(() => this.sync())
    this.sync()
  }

  /**
   * Whether the service can take a request: `true` at once when the cached answer lists instances (the hot path, no
   * promise). Otherwise a promise of the wait this state calls for — a cold name waits for its first answer, an
   * answer woken from idleness for its refresh, an empty one (emptyPool=wait) for an instance — settling true when
   * there is an instance to try, false when the answer is a 503 (`unavailable()` says why); `false` at once for an
   * empty answer in fail mode.
   */
  ready(now: number): boolean | Promise<boolean> {
    const e = this.entry
    this.resolver.touch(e, now)
    if (e.revalidating) return this.resolver.waitFor(e, this.opts.coldWaitMs, 'revalidated').then(this.afterWait)
    if (e.instances.length > 0) {
      this.metrics.countCacheHit(e.source === 'stale')
      return true
    }
    this.metrics.countCacheMiss()
    if (!e.hasAnswer) return this.resolver.waitFor(e, this.opts.coldWaitMs, 'answer').then(this.afterWait)
    return this.afterWait()
  }

  /** After a cold or revalidation wait, or with an empty answer: an instance, or (wait mode) wait for one. */
  private readonly afterWait = (): boolean | Promise<boolean> => {
    if (this.entry.instances.length > 0) return true
    if (this.opts.emptyPool !== 'wait' || this.opts.emptyPoolWaitMs === 0 || this.closed) return false
    return this.resolver
      .waitFor(this.entry, this.opts.emptyPoolWaitMs, 'instances')
      .then(() => this.entry.instances.length > 0)
  }

  /**
   * The one place a "no instance" 503 is made: what Consul DNS answered (or that every instance is at its cap), and
   * the explainer's sentence when it has one.
   */
  unavailable(allFull = false): NoHealthyInstanceError {
    const e = this.entry
    const why = allFull
      ? 'every instance is at its connection cap'
      : e.lastError && e.instances.length === 0
        ? `Consul DNS failed: ${e.lastError.code}`
        : e.hasAnswer
          ? 'Consul lists no passing instance'
          : 'no answer from Consul DNS yet'
    return new NoHealthyInstanceError(
      this.service,
      why,
      allFull ? null : (this.opts.explainer?.explain(this.key) ?? null),
    )
  }

  /**
   * An attempt on `u` failed with `code` (either data plane, requests and upgrades alike). A failure that is the
   * instance's (refused, reset, timed out) counts towards its ejection; an ejection is counted under the service and
   * logged once.
   */
  attemptFailed(u: Upstream, code: string, now: number, log: Logger): void {
    if (!INSTANCE_FAILURES.has(code) || !u.recordFailure(code, now)) return
    this.stats.ejections++
    log.warn(
      { service: this.service, instance: u.key, code, ejectForMs: u.ejectedUntil - now, reason: u.ejectReason },
      'instance ejected',
    )
  }

  /**
   * The instance for a retry after `failed` failed with a retryable `code`, or null: every instance tried, or the
   * retry budget refuses (a request takes one retry from it, then holds it for its later ones: `holdsRetry`). `tried`
   * gains `failed`. A retry is counted under the service and logged.
   */
  retryAfter(
    failed: Upstream,
    code: string,
    tried: Upstream[],
    attempt: number,
    now: number,
    holdsRetry: boolean,
    budget: RetryBudget,
    log: Logger,
  ): Upstream | null {
    tried.push(failed)
    const next = this.pool.pick(now, tried)
    if (next === null || !(holdsRetry || budget.tryRetry())) return null
    if (log.isLevelEnabled('info'))
      log.info(
        { service: this.service, instance: failed.key, code, attempt },
        'attempt failed; retrying on another instance',
      )
    this.stats.retries++
    return next
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
