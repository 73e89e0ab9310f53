import type { InstanceStatus, ProxyStatus, RouteStatus, ServiceStatus } from '../proxy/status.js'

/**
 * How much of the proxy the status page draws in detail. Every open page receives the view each second, and the
 * services in it grow with what clients ask for (Host routing: up to 256 invented names on probation) and with the
 * configuration (thousands of routes): without a bound, one frame of 5 000 services is megabytes a second per page,
 * and a page of thousands of cards is no use to a person. /status keeps everything.
 */
export const PAGE_LIMITS = {
  /** Services drawn as cards (instances, chart, error answers): those that need attention first. */
  cards: 40,
  /** Services listed one line each past the cards; the rest are only counted. */
  lines: 200,
  /** Routes listed; the rest are only counted. */
  routes: 100,
  /** Host names Consul does not know, listed by name (they share one set of counters). */
  unknownNames: 20,
} as const

/** A service listed on one line: where it stands, not its history. */
export interface ServiceLine {
  key: string
  dnsState: string
  instances: number
  ejected: number
  rps: number
  errors: number
}

/** Host-routed names Consul never listed an instance for: what a client can invent, shown once, not as cards. */
export interface UnknownHostNames {
  count: number
  names: string[]
  countedAs: string
  responses: ServiceStatus['responses']
  errorAnswers: ServiceStatus['errorAnswers']
}

export type PageService = Omit<ServiceStatus, 'instances'> & { instances: Omit<InstanceStatus, 'latency'>[] }

export interface PageProxyView extends Omit<ProxyStatus, 'services' | 'routing' | 'routes' | 'latencyBoundsMs'> {
  routing: RouteStatus[]
  routesOmitted: number
  services: PageService[]
  serviceLines: ServiceLine[]
  servicesOmitted: number
  unknownHostNames: UnknownHostNames | null
}

/**
 * What the page renders, out of the /status view: every open page receives it each second, so the per-worker views
 * (`--workers`: the page shows their sum, `proxy`), anything else the page does not draw, and detail past
 * PAGE_LIMITS stay out of the stream.
 */
export function pageView(status: Record<string, unknown>): Record<string, unknown> {
  const { at, proxy, registrator, error } = status
  return { at, proxy: isProxyStatus(proxy) ? pageProxyView(proxy) : proxy, registrator, error }
}

function isProxyStatus(v: unknown): v is ProxyStatus {
  return typeof v === 'object' && v !== null && Array.isArray((v as ProxyStatus).services)
}

export function pageProxyView(p: ProxyStatus): PageProxyView {
  const { services, routing, routes: _routes, latencyBoundsMs: _bounds, ...rest } = p
  const unknown = services.filter((s) => s.countedAs === '_unresolved')
  const known = services.filter((s) => s.countedAs !== '_unresolved')
  // Cards for the services that most need a look, in the order /status lists them (configured routes first), so
  // cards do not jump around from one second to the next.
  const routed = new Set(routing.map((r) => r.key))
  const ranked = known
    .map((s, i) => ({ s, i, score: score(s, routed.has(s.key)) }))
    .sort((a, b) => b.score - a.score || a.i - b.i)
  const cards = new Set(ranked.slice(0, PAGE_LIMITS.cards).map((r) => r.s))
  const lines = ranked.slice(PAGE_LIMITS.cards)
  const first = unknown[0]
  return {
    ...rest,
    routing: routing.slice(0, PAGE_LIMITS.routes),
    routesOmitted: Math.max(0, routing.length - PAGE_LIMITS.routes),
    services: known.filter((s) => cards.has(s)).map(withoutBuckets),
    serviceLines: lines.slice(0, PAGE_LIMITS.lines).map((r) => line(r.s)),
    servicesOmitted: Math.max(0, lines.length - PAGE_LIMITS.lines),
    unknownHostNames: first
      ? {
          count: unknown.length,
          names: unknown.slice(0, PAGE_LIMITS.unknownNames).map((s) => s.dnsName),
          countedAs: first.countedAs,
          responses: first.responses,
          errorAnswers: first.errorAnswers,
        }
      : null,
  }
}

/** Needs attention (an ejection, DNS not fresh, error answers in the chart), then a route names it, then traffic. */
function score(s: ServiceStatus, routed: boolean): number {
  const attention =
    s.instances.some((i) => i.ejected) ||
    (s.dnsState !== 'fresh' && s.dnsState !== 'refreshing') ||
    s.history.errors.some((n) => n > 0)
  return (attention ? 2e9 : 0) + (routed ? 1e9 : 0) + Math.min(rps(s), 1e8)
}

function rps(s: ServiceStatus): number {
  let n = 0
  for (const i of s.instances) n += i.rps
  return n
}

function line(s: ServiceStatus): ServiceLine {
  return {
    key: s.key,
    dnsState: s.dnsState,
    instances: s.instances.length,
    ejected: s.instances.filter((i) => i.ejected).length,
    rps: rps(s),
    errors: s.history.errors.reduce((a, b) => a + b, 0),
  }
}

/** The page shows p50/p99, not the buckets they come from. */
function withoutBuckets(s: ServiceStatus): PageService {
  return { ...s, instances: s.instances.map(({ latency: _latency, ...i }) => i) }
}
