import { Counter, Gauge, Registry } from 'prom-client'
import { SecondRing } from '../balancer/recent.js'
import type { ConsulLbError } from '../errors.js'
import type { ResolverMetrics } from '../resolver/resolver.js'

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const
/** Upper bounds (seconds) of the upstream latency histogram. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** Services with their own label values; beyond this (Host routing to many names) they share `_other`. */
const MAX_SERVICES = 500
/** The status page's per-service chart: 60 steps of 5 s, the last 5 minutes. */
export const HISTORY_STEP_S = 5
export const HISTORY_STEPS = 60

/** The error answers the proxy made for a service under one code: how many, and the last (its body's text). */
export interface ErrorAnswers {
  count: number
  last: ConsulLbError
  at: number
}

/**
 * One service's request counters, as plain numbers: the request path adds to them (no label lookup, no allocation)
 * and /metrics reads them when scraped. prom-client's labelled `inc`/`observe` cost about 0.5 µs per call.
 */
export class ServiceStats {
  /** The `service` label these counters carry: the service's name, or `_unrouted`, `_unresolved`, `_other`. */
  readonly label: string
  readonly byClass = [0, 0, 0, 0, 0]
  retries = 0
  ejections = 0
  /** Non-cumulative counts per bucket; the last slot is +Inf. */
  readonly latency = new Float64Array(LATENCY_BUCKETS.length + 1)
  latencySum = 0
  latencyCount = 0

  observe(seconds: number): void {
    let i = 0
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++
    this.latency[i]!++
    this.latencySum += seconds
    this.latencyCount++
  }

  /** Answers and 5xx answers per second, for the chart; counting is an increment (see SecondRing). */
  private readonly perSecond = new SecondRing(2, HISTORY_STEP_S * HISTORY_STEPS + 1)
  /** By code; bounded by the set of codes the proxy answers with, whatever clients send. */
  private readonly errorAnswers = new Map<string, ErrorAnswers>()

  constructor(label: string) {
    this.label = label
  }

  count(status: number, now = Date.now()): void {
    const cls = status >= 100 && status < 600 ? ((status / 100) | 0) - 1 : 4
    this.byClass[cls]!++
    this.perSecond.add(0, now)
    if (cls === 4) this.perSecond.add(1, now)
  }

  /** An answer the proxy made itself (502, 503, 504, 413 …): kept so the status page can say why, in the same words. */
  recordError(e: ConsulLbError, now: number): void {
    const seen = this.errorAnswers.get(e.code)
    if (seen === undefined) this.errorAnswers.set(e.code, { count: 1, last: e, at: now })
    else {
      seen.count++
      seen.last = e
      seen.at = now
    }
  }

  /** Answers and 5xx answers per step of the last minutes, oldest first (read by the status view). */
  history(now: number): { stepS: number; requests: number[]; errors: number[] } {
    return {
      stepS: HISTORY_STEP_S,
      requests: this.perSecond.steps(0, HISTORY_STEP_S, HISTORY_STEPS, now),
      errors: this.perSecond.steps(1, HISTORY_STEP_S, HISTORY_STEPS, now),
    }
  }

  errors(): ReadonlyMap<string, ErrorAnswers> {
    return this.errorAnswers
  }
}

const CACHE_STATES = ['hit', 'stale', 'miss'] as const

/**
 * The proxy's Prometheus metrics on a registry of its own (never prom-client's global one: two proxies in one process
 * must not share counters). Service label values come from configured routes or from names Consul resolved to at
 * least one instance (a Host-routed name that never resolved counts under `_unresolved`), and are capped, so
 * clients cannot create label values at will.
 */
export class ProxyMetrics {
  readonly registry: Registry
  readonly dnsQueries: Counter<'result' | 'transport'>
  readonly dnsRefreshes: Counter<'result'>
  readonly proxyErrors: Counter<'code'>
  /** Requests answered before a service was known (404, 403). */
  readonly unrouted: ServiceStats = new ServiceStats('_unrouted')
  readonly unresolved: ServiceStats = new ServiceStats('_unresolved')
  private readonly other: ServiceStats = new ServiceStats('_other')
  private readonly perService = new Map<string, ServiceStats>()
  /**
   * Requests by the state of the cached answer they used (hit, stale, miss): plain numbers the request path
   * increments (a prom-client child's inc() hashes its labels each time), read when /metrics is scraped.
   */
  private readonly cacheServes = [0, 0, 0]

  /** `inflight` is read when /metrics is scraped: the request path keeps a plain number, not a gauge. */
  constructor(registry = new Registry(), inflight: () => number = () => 0) {
    this.registry = registry
    const stats = (): [string, ServiceStats][] => this.allStats()
    new Counter({
      name: 'consul_lb_requests_total',
      help: 'Requests answered, by service and status class',
      labelNames: ['service', 'code'],
      registers: [registry],
      collect() {
        this.reset()
        for (const [svc, st] of stats())
          for (let i = 0; i < 5; i++) if (st.byClass[i]! > 0) this.labels(svc, STATUS_CLASSES[i]!).inc(st.byClass[i]!)
      },
    })
    new Counter({
      name: 'consul_lb_retries_total',
      help: 'Requests retried on another instance',
      labelNames: ['service'],
      registers: [registry],
      collect() {
        this.reset()
        for (const [svc, st] of stats()) if (st.retries > 0) this.labels(svc).inc(st.retries)
      },
    })
    new Counter({
      name: 'consul_lb_ejections_total',
      help: 'Instances ejected by passive health checks',
      labelNames: ['service'],
      registers: [registry],
      collect() {
        this.reset()
        for (const [svc, st] of stats()) if (st.ejections > 0) this.labels(svc).inc(st.ejections)
      },
    })
    registry.registerMetric(new LatencyHistogram(stats) as never)
    this.dnsQueries = new Counter({
      name: 'consul_lb_dns_queries_total',
      help: 'DNS queries to Consul by result (ok, nxdomain, empty, or an error code) and transport',
      labelNames: ['result', 'transport'],
      registers: [registry],
    })
    this.dnsRefreshes = new Counter({
      name: 'consul_lb_dns_refreshes_total',
      help: 'Cache refreshes of a service by result',
      labelNames: ['result'],
      registers: [registry],
    })
    const serves = this.cacheServes
    new Counter({
      name: 'consul_lb_cache_requests_total',
      help: 'Requests by the state of the cached answer they used (hit, stale, miss)',
      labelNames: ['result'],
      registers: [registry],
      collect() {
        this.reset()
        for (let i = 0; i < 3; i++) this.labels(CACHE_STATES[i]!).inc(serves[i]!)
      },
    })
    new Gauge({
      name: 'consul_lb_requests_in_flight',
      help: 'Requests being proxied now',
      registers: [registry],
      collect() {
        this.set(inflight())
      },
    })
    this.proxyErrors = new Counter({
      name: 'consul_lb_errors_total',
      help: 'Error answers by code (CLB_*)',
      labelNames: ['code'],
      registers: [registry],
    })
  }

  /** A request found instances in a fresh cached answer (`stale`: one kept past its TTL while refreshes fail). */
  countCacheHit(stale: boolean): void {
    this.cacheServes[stale ? 1 : 0]!++
  }

  /** A request found no instance in the cache (a cold name, or an empty answer). */
  countCacheMiss(): void {
    this.cacheServes[2]!++
  }

  /** The stats of a service known to exist (configured, or resolved to instances). */
  service(name: string): ServiceStats {
    let m = this.perService.get(name)
    if (m === undefined) {
      if (this.perService.size >= MAX_SERVICES) return this.other
      m = new ServiceStats(name)
      this.perService.set(name, m)
    }
    return m
  }

  private allStats(): [string, ServiceStats][] {
    return [
      ...this.perService.entries(),
      ['_unrouted', this.unrouted],
      ['_unresolved', this.unresolved],
      ['_other', this.other],
    ]
  }

  resolverMetrics(): ResolverMetrics {
    const refreshes = this.dnsRefreshes
    return { refresh: (result) => refreshes.labels(result).inc() }
  }
}

/** A Prometheus histogram read from ServiceStats at scrape time (prom-client's registry accepts any such object). */
class LatencyHistogram {
  readonly name = 'consul_lb_upstream_response_seconds'
  readonly help = 'Time from dispatch to upstream response headers, by service'
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly stats: () => [string, ServiceStats][]

  constructor(stats: () => [string, ServiceStats][]) {
    this.stats = stats
  }

  get(): {
    name: string
    help: string
    type: string
    aggregator: string
    values: { labels: Record<string, string | number>; value: number; metricName: string }[]
  } {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = []
    for (const [service, st] of this.stats()) {
      if (st.latencyCount === 0) continue
      let cumulative = 0
      for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
        cumulative += st.latency[i]!
        values.push({
          labels: { service, le: LATENCY_BUCKETS[i]! },
          value: cumulative,
          metricName: `${this.name}_bucket`,
        })
      }
      values.push({ labels: { service, le: '+Inf' }, value: st.latencyCount, metricName: `${this.name}_bucket` })
      values.push({ labels: { service }, value: st.latencySum, metricName: `${this.name}_sum` })
      values.push({ labels: { service }, value: st.latencyCount, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  reset(): void {
    /* cumulative since start, like every Prometheus counter */
  }
}
