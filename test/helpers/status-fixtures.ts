import { LATENCY_BOUNDS_MS } from '../../src/balancer/recent.js'
import type { InstanceStatus, ProxyStatus, ServiceStatus } from '../../src/proxy/status.js'

// Status views built by hand, for the pure cores (the --workers sum, the page's view) and for the page in a browser
// with data no real proxy would produce (hostile names everywhere). Defaults describe a healthy, quiet service.

export function instance(over: Partial<InstanceStatus>): InstanceStatus {
  return {
    instance: '127.0.0.1:9001',
    priority: 1,
    weight: 1,
    inflight: 0,
    maxConnections: 256,
    full: false,
    available: true,
    requests: 0,
    failures: 0,
    rps: 0,
    latency: new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0),
    p50Ms: null,
    p99Ms: null,
    recentFailures: 0,
    ejected: false,
    ejectedForMs: 0,
    ejectReason: null,
    lastFailure: null,
    ...over,
  }
}

export function service(over: Partial<ServiceStatus>): ServiceStatus {
  return {
    key: 'web.service.consul',
    service: 'web',
    tag: null,
    datacenter: null,
    countedAs: 'web',
    dnsName: 'web.service.consul',
    lookup: 'SRV',
    answer: 'fresh',
    answerMeaning: undefined,
    dnsState: 'fresh',
    staleLeftMs: null,
    transport: 'udp',
    server: '127.0.0.1:8600',
    capped: false,
    cappedMeaning: undefined,
    ageMs: 100,
    ttlMs: 1000,
    expiresInMs: 900,
    refreshes: 1,
    lastError: null,
    panicPicks: 0,
    responses: { '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0 },
    retries: 0,
    ejections: 0,
    errorAnswers: [],
    unavailable: null,
    history: { stepS: 5, requests: [0, 0], errors: [0, 0] },
    instances: [],
    ...over,
  }
}

export function view(pid: number, services: ServiceStatus[]): ProxyStatus {
  return {
    state: 'serving',
    uptimeS: 10,
    pid,
    listen: '127.0.0.1:8080',
    inflight: 1,
    openUpgrades: 0,
    clientConnections: 2,
    retryBudget: { retriesInFlight: 1, limit: 32, percent: 20, min: 32 },
    dns: { servers: [], transport: 'udp', domain: 'consul', ttlFloorMs: 1000, ttlCeilingMs: 5000, staleIfErrorMs: 1 },
    balancer: 'round-robin',
    passiveHealth: { maxFails: 3, failWindowMs: 10_000, ejectForMs: 30_000 },
    routes: [],
    routing: [],
    hostRouting: false,
    rateWindowS: 10,
    failureWindowS: 60,
    latencyBoundsMs: LATENCY_BOUNDS_MS,
    services,
  }
}
