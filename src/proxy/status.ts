import { LATENCY_BOUNDS_MS } from '../balancer/recent.js'
import { FAILURE_WINDOW_S, RATE_WINDOW_S } from '../balancer/upstream.js'
import { type ServiceEntry, ServiceResolver } from '../resolver/resolver.js'
import { errorAnswer } from './answers.js'
import type { LoadBalancer } from './proxy.js'
import type { ServiceTarget } from './target.js'

export interface InstanceStatus {
  instance: string
  priority: number
  weight: number
  inflight: number
  maxConnections: number
  full: boolean
  available: boolean
  requests: number
  failures: number
  /** Attempts started per second, over the last `rateWindowS` seconds. */
  rps: number
  /** Response latency counts per bucket (bounds in `latencyBoundsMs`, then slower) over the same window. */
  latency: number[]
  p50Ms: number | null
  p99Ms: number | null
  /** Failures over the last `failureWindowS` seconds. */
  recentFailures: number
  ejected: boolean
  ejectedForMs: number
  ejectReason: string | null
  lastFailure: { code: string; agoMs: number } | null
  /** `--workers`: how many workers eject it (each judges on its own traffic). */
  ejectedInWorkers?: number
}

export interface ServiceStatus {
  /** The resolver's key: DNS name, and `:port` for a fixed-port lookup. */
  key: string
  service: string
  /** The lookup's tag and datacenter (a route's `tag=`, `dc=`, or a Host name's), null when it has none. */
  tag: string | null
  datacenter: string | null
  /**
   * The `service` label its answers are counted under: its name, or `_unresolved` for a Host-routed name Consul never
   * listed an instance for (every such name shares those counters), or `_other` past the services' label cap. The
   * answers, error answers and chart of all lookups of one service name are the same counters.
   */
  countedAs: string
  dnsName: string
  lookup: string
  answer: string
  answerMeaning: string | undefined
  /** fresh; refreshing (expired, a query in flight); stale (stale-if-error); failing; negative; none. */
  dnsState: DnsState
  /** While stale: how long the last good answer may still be used. */
  staleLeftMs: number | null
  transport: string | null
  server: string | null
  capped: boolean
  cappedMeaning: string | undefined
  ageMs: number | null
  ttlMs: number
  expiresInMs: number | null
  refreshes: number
  lastError: { code: string; message: string; at: number; agoMs: number } | null
  panicPicks: number
  /** Answers by status class since start (this service's name, all its routes). */
  responses: Record<'1xx' | '2xx' | '3xx' | '4xx' | '5xx', number>
  retries: number
  ejections: number
  /** The proxy's own error answers by code: how many, and the text of the last one's body. */
  errorAnswers: { status: number; code: string; count: number; message: string; agoMs: number }[]
  /** No instance now: the 503 a request would get, in the words its body would use. */
  unavailable: { status: number; code: string; message: string } | null
  /** Answers and 5xx answers per step, oldest first, for the chart. */
  history: { stepS: number; requests: number[]; errors: number[] }
  instances: InstanceStatus[]
}

export type DnsState = 'fresh' | 'refreshing' | 'stale' | 'failing' | 'negative' | 'none'

export interface RouteStatus {
  route: string
  /** The key of the service entry it uses (ServiceStatus.key). */
  key: string
  host: string | null
  path: string
  service: string
  tag: string | null
  datacenter: string | null
  port: number | null
  strip: boolean
  websocket: boolean
}

export interface ProxyStatus {
  state: 'serving' | 'closing'
  uptimeS: number
  /** A list in `--workers` mode (one per worker). */
  pid: number | number[]
  /** `--workers`: the number of workers whose views are summed here. */
  workers?: number
  listen: string
  inflight: number
  openUpgrades: number
  clientConnections: number
  retryBudget: { retriesInFlight: number; limit: number; percent: number; min: number }
  dns: {
    servers: string[]
    transport: string
    domain: string
    ttlFloorMs: number
    ttlCeilingMs: number
    staleIfErrorMs: number
  }
  balancer: string
  passiveHealth: { maxFails: number; failWindowMs: number; ejectForMs: number }
  routes: string[]
  /** The routes, taken apart. */
  routing: RouteStatus[]
  hostRouting: false | { domain: string; allowServices: string[] | 'any'; consulServiceReachable: boolean }
  rateWindowS: number
  failureWindowS: number
  latencyBoundsMs: readonly number[]
  services: ServiceStatus[]
}

export function proxyStatus(p: LoadBalancer): ProxyStatus {
  const now = Date.now()
  const c = p.config
  const seen = new Set<string>()
  const services: ServiceStatus[] = []
  for (const t of p.targets()) {
    const e = t.entry
    const id = `${e.key}`
    if (seen.has(id)) continue
    seen.add(id)
    services.push({
      key: e.key,
      service: e.service,
      tag: t.key.tag,
      datacenter: t.key.datacenter,
      countedAs: t.stats.label,
      dnsName: e.name,
      lookup: e.port === null ? 'SRV (ports from Consul)' : `A/AAAA, fixed port ${e.port}`,
      answer: e.source,
      answerMeaning: SOURCE_MEANING[e.source],
      dnsState: dnsState(e, now),
      staleLeftMs: e.source === 'stale' ? Math.max(0, e.expiresAt + c.staleIfErrorMs - now) : null,
      transport: e.transport,
      server: e.server,
      capped: e.capped,
      cappedMeaning: e.capped
        ? 'a UDP answer held only part of the instances (Consul udp_answer_limit / no TC bit); the full TCP answer is used'
        : undefined,
      ageMs: e.fetchedAt ? now - e.fetchedAt : null,
      ttlMs: e.ttlMs,
      expiresInMs: e.expiresAt ? e.expiresAt - now : null,
      refreshes: e.refreshCount,
      lastError: e.lastError ? { ...e.lastError, agoMs: now - e.lastError.at } : null,
      panicPicks: t.pool.panics,
      ...traffic(t, now),
      instances: t.pool.members().map((m) => {
        const u = m.upstream
        const ejected = u.isEjected(now)
        const recent = u.recent(now)
        return {
          instance: u.key,
          priority: m.priority,
          weight: m.weight,
          inflight: u.inflight,
          tunnels: u.tunnels,
          maxConnections: u.maxConnections,
          full: !u.hasCapacity(),
          available: u.isAvailable(now),
          requests: u.requests,
          failures: u.failures,
          rps: recent.rps,
          latency: recent.latency,
          p50Ms: recent.p50Ms,
          p99Ms: recent.p99Ms,
          recentFailures: recent.failures,
          ejected,
          ejectedForMs: ejected ? u.ejectedUntil - now : 0,
          ejectReason: ejected ? u.ejectReason : null,
          lastFailure: u.lastFailure ? { code: u.lastFailure.code, agoMs: now - u.lastFailure.at } : null,
        }
      }),
    })
  }
  return {
    state: p.isClosing ? 'closing' : 'serving',
    uptimeS: Math.round((now - p.startedAt) / 1000),
    pid: process.pid,
    listen: `${c.listen.host}:${p.port}`,
    inflight: p.inFlight,
    openUpgrades: p.openUpgrades,
    clientConnections: p.clientConnections,
    retryBudget: {
      retriesInFlight: p.retriesInFlight,
      limit: p.retryLimit,
      percent: c.retryBudgetPercent,
      min: c.retryBudgetMin,
    },
    dns: {
      servers: c.dns.map((d) => d.label),
      transport: c.dnsTransport,
      domain: c.domain,
      ttlFloorMs: c.ttlFloorMs,
      ttlCeilingMs: c.ttlCeilingMs,
      staleIfErrorMs: c.staleIfErrorMs,
    },
    balancer: c.balancer,
    passiveHealth: { maxFails: c.maxFails, failWindowMs: c.failWindowMs, ejectForMs: c.ejectForMs },
    routes: c.routes.map((r) => r.source),
    routing: c.routes.map((r) => ({
      route: r.source,
      key: ServiceResolver.keyOf(r, c.domain),
      host: r.host,
      path: r.pathPrefix,
      service: r.service,
      tag: r.tag,
      datacenter: r.datacenter,
      port: r.port,
      strip: r.stripPrefix,
      websocket: r.websocket,
    })),
    hostRouting: c.hostRouting
      ? {
          domain: c.domain,
          allowServices: c.allowServices.length ? c.allowServices : 'any',
          consulServiceReachable: c.allowConsulService,
        }
      : false,
    rateWindowS: RATE_WINDOW_S,
    failureWindowS: FAILURE_WINDOW_S,
    latencyBoundsMs: LATENCY_BOUNDS_MS,
    services,
  }
}

/**
 * Where the service's answer stands: stale-if-error and failing come from a failed refresh; refreshing is an expired
 * answer with a query out (requests may be waiting on it); fresh, negative and none are the last answer's kind.
 */
function dnsState(e: ServiceEntry, now: number): DnsState {
  if (e.source === 'stale') return 'stale'
  if (e.lastError !== null && e.instances.length === 0) return 'failing'
  if (e.inflight !== null && e.hasAnswer && now >= e.expiresAt) return 'refreshing'
  return e.source
}

/** A service's answers, error answers (in their bodies' words), the 503 it would give now, and its chart. */
function traffic(
  t: ServiceTarget,
  now: number,
): Pick<ServiceStatus, 'responses' | 'retries' | 'ejections' | 'errorAnswers' | 'unavailable' | 'history'> {
  const st = t.stats
  const errorAnswers: ServiceStatus['errorAnswers'] = []
  for (const [code, a] of st.errors())
    errorAnswers.push({
      status: a.last.statusCode,
      code,
      count: a.count,
      message: errorAnswer(a.last).body.trimEnd(),
      agoMs: now - a.at,
    })
  const none = t.entry.instances.length === 0 ? t.unavailable() : null
  return {
    responses: {
      '1xx': st.byClass[0]!,
      '2xx': st.byClass[1]!,
      '3xx': st.byClass[2]!,
      '4xx': st.byClass[3]!,
      '5xx': st.byClass[4]!,
    },
    retries: st.retries,
    ejections: st.ejections,
    errorAnswers,
    unavailable: none && { status: none.statusCode, code: none.code, message: errorAnswer(none).body.trimEnd() },
    history: st.history(now),
  }
}

const SOURCE_MEANING: Record<string, string | undefined> = {
  fresh: 'current answer from Consul DNS',
  stale: 'Consul DNS is failing; serving the last good answer (stale-if-error)',
  negative: 'Consul answered NXDOMAIN or no records: unknown service, or no passing instance',
  none: 'no usable answer (never resolved, or the stale window ran out)',
}
