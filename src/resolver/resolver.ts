import type { DnsClient, DnsResult } from '../dns/client.js'
import type { Logger } from '../log.js'
import { serviceDnsName } from '../routes/route.js'
import { type Instance, instancesFromAddresses, instancesFromSrv, sameInstances } from './instances.js'

export interface ResolverOptions {
  domain: string
  ttlFloorMs: number
  ttlCeilingMs: number
  staleIfErrorMs: number
  negativeTtlMs: number
  idleServiceMs: number
  log: Logger
  metrics?: ResolverMetrics
}

export interface ResolverMetrics {
  refresh(result: 'ok' | 'nxdomain' | 'empty' | 'error'): void
}

export interface ServiceKey {
  service: string
  tag: string | null
  datacenter: string | null
  /** null: ports from SRV; a number: addresses from A/AAAA and this port. */
  port: number | null
}

export type AnswerSource = 'fresh' | 'stale' | 'negative' | 'none'

/**
 * The cached answer for one service name (and port mode), kept fresh in the background while it is used.
 * The request path reads `instances` and never waits on DNS when an answer exists.
 */
export class ServiceEntry {
  readonly key: string
  readonly service: string
  readonly name: string
  readonly port: number | null
  /** Current instances; empty when Consul says none (or the stale window ran out). */
  instances: readonly Instance[] = []
  /** Whether an answer (positive or negative) has ever arrived. */
  hasAnswer = false
  source: AnswerSource = 'none'
  fetchedAt = 0
  expiresAt = 0
  ttlMs = 0
  transport: 'udp' | 'tcp' | null = null
  server: string | null = null
  /** The last UDP answer looked cut (3 records, or TC) and TCP gave more. */
  capped = false
  lastError: { code: string; message: string; at: number } | null = null
  lastAccess = Date.now()
  /** Bumped each time `instances` changes; the balancer rebuilds its pool when it moves. */
  version = 0
  refreshCount = 0
  /** Holders of this entry (routes, Host-routing cache slots); retired at 0. */
  references = 0
  /** @internal */ timer: NodeJS.Timeout | null = null
  /** @internal */ inflight: Promise<void> | null = null
  /** @internal */ dormant = true
  /** @internal */ closed = false
  /** @internal */ waiters = new Set<() => void>()
  /** @internal */ failures = 0
  private listeners: ((e: ServiceEntry) => void)[] = []
  /**
   * Woken from idleness with an expired answer: the next requests wait (up to the DNS timeout) for the refresh in
   * flight instead of using an answer that may be minutes old; if the refresh fails, the old answer is used
   * (stale-if-error) while it is within its window.
   */
  revalidating = false

  constructor(key: string, service: string, name: string, port: number | null) {
    this.key = key
    this.service = service
    this.name = name
    this.port = port
  }

  /** Calls `fn` (synchronously) whenever `instances` changes; returns the function that unsubscribes it. */
  onChange(fn: (e: ServiceEntry) => void): () => void {
    this.listeners.push(fn)
    return () => {
      this.listeners = this.listeners.filter((f) => f !== fn)
    }
  }

  /** @internal */
  emitChange(): void {
    for (const fn of this.listeners) fn(this)
  }

  /** @internal */
  wakeWaiters(): void {
    const w = this.waiters
    this.waiters = new Set()
    for (const fn of w) fn()
  }
}

/**
 * The cache over dns/: TTL floor and ceiling, refresh ahead of expiry, one query in flight per name,
 * stale-if-error, negative caching. Answers "which instances does service X have now?".
 */
export class ServiceResolver {
  private readonly dns: DnsClient
  private readonly opts: ResolverOptions
  private readonly map = new Map<string, ServiceEntry>()
  private closed = false

  constructor(dns: DnsClient, opts: ResolverOptions) {
    this.dns = dns
    this.opts = opts
  }

  static keyOf(k: ServiceKey, domain: string): string {
    return `${serviceDnsName(k.service, k.tag, k.datacenter, domain)}${k.port === null ? '' : `:${k.port}`}`
  }

  /**
   * The entry for a service, shared by every holder; each acquire() is paired with a release(). The caller bounds how
   * many distinct names it acquires (the proxy keeps Host-routed names in an LRU), because clients choose them.
   */
  acquire(k: ServiceKey): ServiceEntry {
    const key = ServiceResolver.keyOf(k, this.opts.domain)
    let e = this.map.get(key)
    if (!e) {
      e = new ServiceEntry(key, k.service, serviceDnsName(k.service, k.tag, k.datacenter, this.opts.domain), k.port)
      this.map.set(key, e)
    }
    e.references++
    return e
  }

  release(e: ServiceEntry): void {
    if (--e.references > 0) return
    if (this.map.get(e.key) === e) this.map.delete(e.key)
    this.retire(e)
  }

  /**
   * Marks the entry as used now. A dormant entry (never resolved, or idle long enough that refreshing stopped)
   * starts refreshing. Cheap when the entry is active: a timestamp store and a boolean check.
   */
  touch(e: ServiceEntry, now: number): void {
    e.lastAccess = now
    if (e.dormant && !this.closed) {
      e.dormant = false
      if (e.hasAnswer && now > e.expiresAt) e.revalidating = true
      void this.refresh(e)
    }
  }

  /**
   * Resolves when the entry reaches `until` — its first answer (`answer`), an answer with instances (`instances`), or
   * the end of a revalidation (`revalidated`) — or after `timeoutMs`. Used on a cold start, after idleness, and by
   * the "wait for an instance" empty-pool mode. A waiter that timed out is not woken again.
   */
  waitFor(e: ServiceEntry, timeoutMs: number, until: 'answer' | 'instances' | 'revalidated'): Promise<void> {
    const reached = (): boolean =>
      until === 'answer' ? e.hasAnswer : until === 'instances' ? e.instances.length > 0 : !e.revalidating
    if (reached()) return Promise.resolve()
    return new Promise<void>((resolve) => {
      let settled = false
      const done = (): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        e.waiters.delete(check) // a waiter that timed out leaves at once, not at the next refresh
        resolve()
      }
      const timer = setTimeout(done, timeoutMs)
      const check = (): void => {
        if (settled) return
        if (reached() || e.closed) done()
        else e.waiters.add(check)
      }
      e.waiters.add(check)
      // An empty-pool wait asks again sooner than the negative TTL would, but at most every 250 ms per service
      // however many requests wait (each waiter must not become a DNS query).
      if (until === 'instances' && e.hasAnswer && !e.inflight && Date.now() - e.fetchedAt >= 250) void this.refresh(e)
    })
  }

  /** Refreshes now (single flight: concurrent callers share the query in flight). */
  refresh(e: ServiceEntry): Promise<void> {
    if (e.inflight) return e.inflight
    if (e.timer) {
      clearTimeout(e.timer)
      e.timer = null
    }
    e.inflight = this.doRefresh(e).finally(() => {
      e.inflight = null
      e.revalidating = false
      e.wakeWaiters()
      this.schedule(e)
    })
    return e.inflight
  }

  private async doRefresh(e: ServiceEntry): Promise<void> {
    const now = Date.now()
    e.refreshCount++
    try {
      const answer = await this.lookup(e)
      const t = Date.now()
      e.failures = 0
      e.lastError = null
      e.transport = answer.transport
      e.server = answer.server
      e.capped = answer.capped
      e.fetchedAt = t
      if (answer.instances.length === 0) {
        // NXDOMAIN / no records is Consul's real answer (unknown service, or every instance critical), not an error.
        e.ttlMs = this.opts.negativeTtlMs
        e.source = 'negative'
      } else {
        e.ttlMs = clamp(answer.minTtlS * 1000, this.opts.ttlFloorMs, this.opts.ttlCeilingMs)
        e.source = 'fresh'
      }
      e.expiresAt = t + e.ttlMs
      e.hasAnswer = true
      this.opts.metrics?.refresh(answer.kind)
      if (answer.capped)
        this.opts.log.warn(
          { service: e.name, server: answer.server },
          'UDP answer was capped by Consul; used the full TCP answer (set dnsTransport=tcp to skip the UDP try)',
        )
      this.setInstances(e, answer.instances)
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'CLB_DNS_ERROR'
      e.failures++
      e.lastError = { code, message: (err as Error).message, at: Date.now() }
      this.opts.metrics?.refresh('error')
      if (e.failures === 1 || e.failures % 10 === 0)
        this.opts.log.warn(
          { service: e.name, code, err: (err as Error).message, failures: e.failures },
          'Consul DNS lookup failed',
        )
      if (e.hasAnswer && e.instances.length > 0) {
        if (Date.now() - e.expiresAt > this.opts.staleIfErrorMs) {
          this.opts.log.error(
            { service: e.name, staleIfErrorMs: this.opts.staleIfErrorMs },
            'stale answer too old: dropping it',
          )
          this.drop(e, now)
        } else {
          e.source = 'stale'
        }
      }
    }
  }

  private async lookup(e: ServiceEntry): Promise<{
    instances: Instance[]
    minTtlS: number
    kind: 'ok' | 'nxdomain' | 'empty'
    transport: 'udp' | 'tcp'
    server: string
    capped: boolean
  }> {
    if (e.port === null) {
      const r = await this.dns.query(e.name, 'SRV')
      const parsed = instancesFromSrv(r.message)
      // Targets without an address in the answer (additional records trimmed) are node names: ask for them.
      for (const u of parsed.unresolvedTargets) {
        try {
          const a = await this.dns.query(u.target, 'A')
          const addrs = instancesFromAddresses([a.message], u.port)
          for (const i of addrs.instances)
            if (!parsed.instances.some((x) => x.key === i.key))
              parsed.instances.push({ ...i, priority: u.priority, weight: u.weight })
        } catch (err) {
          this.opts.log.warn(
            { service: e.name, target: u.target, err: (err as Error).message },
            'could not resolve SRV target; instance skipped',
          )
        }
      }
      return {
        instances: parsed.instances,
        minTtlS: parsed.minTtlS,
        kind: r.kind,
        transport: r.transport,
        server: r.server,
        capped: r.capped,
      }
    }
    // Fixed port: A and AAAA together (Consul answers AAAA only for IPv6 addresses). One of them failing is fine.
    const [a, aaaa] = await Promise.allSettled([this.dns.query(e.name, 'A'), this.dns.query(e.name, 'AAAA')])
    if (a.status === 'rejected' && aaaa.status === 'rejected') throw a.reason
    const msgs: DnsResult[] = []
    if (a.status === 'fulfilled') msgs.push(a.value)
    if (aaaa.status === 'fulfilled') msgs.push(aaaa.value)
    const first = msgs[0]!
    const parsed = instancesFromAddresses(
      msgs.map((m) => m.message),
      e.port,
    )
    // Consul answers AAAA for an IPv4-only service with no records: one query failing and the other empty is a
    // failure (keep the last answer, stale-if-error), not "no instances".
    if (parsed.instances.length === 0) {
      if (a.status === 'rejected') throw a.reason
      if (aaaa.status === 'rejected') throw aaaa.reason
    }
    const kind = parsed.instances.length > 0 ? 'ok' : msgs.some((m) => m.kind === 'nxdomain') ? 'nxdomain' : 'empty'
    return {
      instances: parsed.instances,
      minTtlS: parsed.minTtlS,
      kind,
      transport: first.transport,
      server: first.server,
      capped: msgs.some((m) => m.capped),
    }
  }

  private setInstances(e: ServiceEntry, instances: Instance[]): void {
    if (sameInstances(e.instances, instances)) return
    e.instances = instances
    e.version++
    e.emitChange()
  }

  private drop(e: ServiceEntry, now: number): void {
    e.source = 'none'
    e.expiresAt = now
    this.setInstances(e, [])
  }

  private schedule(e: ServiceEntry): void {
    if (this.closed || e.closed) return
    const now = Date.now()
    if (now - e.lastAccess > this.opts.idleServiceMs) {
      // Nobody asked for this service for a while: stop refreshing; the next request wakes it (touch()).
      e.dormant = true
      return
    }
    let delay: number
    if (e.lastError) {
      // Consul DNS failing: retry soon (so recovery is seen quickly) with a capped back-off.
      delay = Math.min(250 * 2 ** Math.min(e.failures - 1, 4), 5000)
    } else {
      // Refresh ahead: ask again before the answer expires, so requests never see it expire.
      const ahead = Math.min(e.ttlMs * 0.2, 1000)
      delay = Math.max(50, e.expiresAt - ahead - now)
    }
    e.timer = setTimeout(() => {
      e.timer = null
      void this.refresh(e)
    }, delay)
    e.timer.unref()
  }

  private retire(e: ServiceEntry): void {
    e.closed = true
    if (e.timer) {
      clearTimeout(e.timer)
      e.timer = null
    }
    e.wakeWaiters()
  }

  /** Read-only view for /status. */
  entries(): ServiceEntry[] {
    return [...this.map.values()]
  }

  close(): void {
    this.closed = true
    for (const e of this.map.values()) this.retire(e)
    this.map.clear()
  }
}

function clamp(n: number, lo: number, hi: number): number {
  return n < lo ? lo : Math.min(n, hi)
}
