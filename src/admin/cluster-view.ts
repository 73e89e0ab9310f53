import { latencyQuantile } from '../balancer/recent.js'
import type { InstanceStatus, ProxyStatus, ServiceStatus } from '../proxy/status.js'

/** How bad a DNS state is, for the worst-of over workers (each worker keeps its own cache). */
const DNS_SEVERITY: Record<string, number> = { fresh: 0, refreshing: 1, stale: 2, negative: 3, none: 4, failing: 5 }

/**
 * `--workers N`: one view of the whole proxy from each worker's /status view. Counters, rates and in-flight counts
 * add up; latency percentiles are recomputed from the summed bucket counts (an average of p99s would mean nothing);
 * the DNS view is the worst any worker has, with the newest answer's details; an instance is shown ejected while
 * any worker ejects it (each worker judges on its own traffic), with how many do.
 */
export function sumProxyViews(views: ProxyStatus[]): ProxyStatus | null {
  const first = views[0]
  if (first === undefined) return null
  const services = new Map<string, ServiceStatus[]>()
  for (const v of views)
    for (const s of v.services) {
      const list = services.get(s.key)
      if (list) list.push(s)
      else services.set(s.key, [s])
    }
  return {
    ...first,
    state: views.some((v) => v.state === 'closing') ? 'closing' : first.state,
    uptimeS: Math.min(...views.map((v) => v.uptimeS)),
    pid: views.flatMap((v) => v.pid),
    workers: views.length,
    inflight: sum(views, (v) => v.inflight),
    openUpgrades: sum(views, (v) => v.openUpgrades),
    clientConnections: sum(views, (v) => v.clientConnections),
    retryBudget: {
      ...first.retryBudget,
      retriesInFlight: sum(views, (v) => v.retryBudget.retriesInFlight),
      limit: sum(views, (v) => v.retryBudget.limit),
    },
    services: [...services.values()].map(sumService),
  }
}

function sumService(list: ServiceStatus[]): ServiceStatus {
  const worst = list.reduce((a, b) => ((DNS_SEVERITY[b.dnsState] ?? 0) > (DNS_SEVERITY[a.dnsState] ?? 0) ? b : a))
  const newest = list.reduce((a, b) =>
    (b.ageMs ?? Number.POSITIVE_INFINITY) < (a.ageMs ?? Number.POSITIVE_INFINITY) ? b : a,
  )
  const instances = new Map<string, InstanceStatus[]>()
  for (const s of list)
    for (const i of s.instances) {
      const l = instances.get(i.instance)
      if (l) l.push(i)
      else instances.set(i.instance, [i])
    }
  const errors = new Map<string, ServiceStatus['errorAnswers'][number]>()
  for (const s of list)
    for (const e of s.errorAnswers) {
      const prev = errors.get(e.code)
      errors.set(e.code, prev ? { ...(prev.agoMs <= e.agoMs ? prev : e), count: prev.count + e.count } : e)
    }
  return {
    ...newest,
    dnsState: worst.dnsState,
    staleLeftMs: worst.staleLeftMs,
    lastError: worst.lastError ?? newest.lastError,
    refreshes: sum(list, (s) => s.refreshes),
    panicPicks: sum(list, (s) => s.panicPicks),
    responses: {
      '1xx': sum(list, (s) => s.responses['1xx']),
      '2xx': sum(list, (s) => s.responses['2xx']),
      '3xx': sum(list, (s) => s.responses['3xx']),
      '4xx': sum(list, (s) => s.responses['4xx']),
      '5xx': sum(list, (s) => s.responses['5xx']),
    },
    retries: sum(list, (s) => s.retries),
    ejections: sum(list, (s) => s.ejections),
    errorAnswers: [...errors.values()],
    unavailable: list.find((s) => s.unavailable !== null)?.unavailable ?? null,
    history: {
      stepS: newest.history.stepS,
      requests: addArrays(list.map((s) => s.history.requests)),
      errors: addArrays(list.map((s) => s.history.errors)),
    },
    instances: [...instances.values()].map(sumInstance),
  }
}

function sumInstance(list: InstanceStatus[]): InstanceStatus {
  const first = list[0]!
  const latency = addArrays(list.map((i) => i.latency))
  const ejected = list.filter((i) => i.ejected)
  const worstEjection = ejected.reduce<InstanceStatus | null>(
    (a, b) => (a === null || b.ejectedForMs > a.ejectedForMs ? b : a),
    null,
  )
  const lastFailure = list.reduce<InstanceStatus['lastFailure']>(
    (a, b) => (b.lastFailure !== null && (a === null || b.lastFailure.agoMs < a.agoMs) ? b.lastFailure : a),
    null,
  )
  return {
    ...first,
    inflight: sum(list, (i) => i.inflight),
    maxConnections: sum(list, (i) => i.maxConnections),
    full: list.every((i) => i.full),
    available: list.some((i) => i.available),
    requests: sum(list, (i) => i.requests),
    failures: sum(list, (i) => i.failures),
    recentFailures: sum(list, (i) => i.recentFailures),
    rps: sum(list, (i) => i.rps),
    latency,
    p50Ms: latencyQuantile(latency, 0.5),
    p99Ms: latencyQuantile(latency, 0.99),
    ejected: worstEjection !== null,
    ejectedForMs: worstEjection?.ejectedForMs ?? 0,
    ejectReason: worstEjection?.ejectReason ?? null,
    ejectedInWorkers: ejected.length,
    lastFailure,
  }
}

function sum<T>(list: T[], of: (x: T) => number): number {
  let n = 0
  for (const x of list) n += of(x)
  return n
}

/** Element-wise sum of equally long series (the workers' histories and latency buckets). */
function addArrays(arrays: number[][]): number[] {
  const out = new Array<number>(Math.max(0, ...arrays.map((a) => a.length))).fill(0)
  for (const a of arrays) for (let i = 0; i < a.length; i++) out[i]! += a[i]!
  return out
}
