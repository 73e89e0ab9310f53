import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { ResolverMetrics } from '../resolver/resolver.js'

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const

/** Per-service metric children, bound once per service so the request path does no label hashing. */
export interface ServiceMetrics {
  byClass: Counter.Internal[]
  latency: Histogram.Internal<string>
  retries: Counter.Internal
  ejections: Counter.Internal
}

/**
 * The proxy's Prometheus metrics on a registry of its own (never prom-client's global one: two proxies in one process
 * must not share counters). Service labels only come from configured routes or names Consul resolved, so a client
 * cannot create label values at will.
 */
export class ProxyMetrics {
  readonly registry: Registry
  readonly requests: Counter<'service' | 'code'>
  readonly upstreamLatency: Histogram<'service'>
  readonly dnsQueries: Counter<'result' | 'transport'>
  readonly dnsRefreshes: Counter<'result'>
  readonly cacheServes: Counter<'result'>
  readonly ejections: Counter<'service'>
  readonly retries: Counter<'service'>
  readonly inflight: Gauge
  /** Bound children: the request path increments these without a label lookup. */
  readonly cacheHit: Counter.Internal
  readonly cacheStale: Counter.Internal
  readonly cacheMiss: Counter.Internal
  readonly proxyErrors: Counter<'code'>
  private readonly perService = new Map<string, ServiceMetrics>()

  /** `inflight` is read when /metrics is scraped: the request path keeps a plain number, not a gauge. */
  constructor(registry = new Registry(), inflight: () => number = () => 0) {
    this.registry = registry
    this.requests = new Counter({ name: 'consul_lb_requests_total', help: 'Requests answered, by service and status class', labelNames: ['service', 'code'], registers: [registry] })
    this.upstreamLatency = new Histogram({ name: 'consul_lb_upstream_response_seconds', help: 'Time from dispatch to upstream response headers', labelNames: ['service'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry] })
    this.dnsQueries = new Counter({ name: 'consul_lb_dns_queries_total', help: 'DNS queries to Consul by result (ok, nxdomain, empty, or an error code) and transport', labelNames: ['result', 'transport'], registers: [registry] })
    this.dnsRefreshes = new Counter({ name: 'consul_lb_dns_refreshes_total', help: 'Cache refreshes of a service by result', labelNames: ['result'], registers: [registry] })
    this.cacheServes = new Counter({ name: 'consul_lb_cache_requests_total', help: 'Requests by the state of the cached answer they used (hit, stale, miss)', labelNames: ['result'], registers: [registry] })
    this.ejections = new Counter({ name: 'consul_lb_ejections_total', help: 'Instances ejected by passive health checks', labelNames: ['service'], registers: [registry] })
    this.retries = new Counter({ name: 'consul_lb_retries_total', help: 'Requests retried on another instance', labelNames: ['service'], registers: [registry] })
    this.inflight = new Gauge({ name: 'consul_lb_requests_in_flight', help: 'Requests being proxied now', registers: [registry], collect() { this.set(inflight()) } })
    this.cacheHit = this.cacheServes.labels('hit')
    this.cacheStale = this.cacheServes.labels('stale')
    this.cacheMiss = this.cacheServes.labels('miss')
    this.proxyErrors = new Counter({ name: 'consul_lb_errors_total', help: 'Error answers by code (CLB_*)', labelNames: ['code'], registers: [registry] })
  }

  service(name: string): ServiceMetrics {
    let m = this.perService.get(name)
    if (!m) {
      m = {
        byClass: STATUS_CLASSES.map((c) => this.requests.labels(name, c)),
        latency: this.upstreamLatency.labels(name),
        retries: this.retries.labels(name),
        ejections: this.ejections.labels(name),
      }
      this.perService.set(name, m)
    }
    return m
  }

  resolverMetrics(): ResolverMetrics {
    const refreshes = this.dnsRefreshes
    return { refresh: (result) => refreshes.labels(result).inc() }
  }
}
