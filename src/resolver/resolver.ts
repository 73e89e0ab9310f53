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
  /**
   * DNS lookups in flight at most (a lookup is one SRV query, or an A and an AAAA query); more wait their turn, those
   * a request waits for ahead of refreshes ahead of expiry.
   */
  maxLookups: number
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
 * The cached answer for one service name (and port mode), refreshed ahead of expiry while requests keep reading it.
 * The request path reads `instances` and never waits on DNS when a current answer exists.
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
  /**
   * A request read this answer since it arrived: the refresh ahead of expiry happens only then, so background DNS
   * work follows demand (a name nobody asks for costs no query, however many names there are).
   */
  requested = false
  /** Bumped each time `instances` changes; the balancer rebuilds its pool when it moves. */
  version = 0
  refreshCount = 0
  /** Holders of this entry (routes, Host-routing cache slots); retired at 0. */
  references = 0
  /** @internal */ timer: NodeJS.Timeout | null = null
  /** @internal */ inflight: Promise<void> | null = null
  /** @internal */ endInflight: (() => void) | null = null
  /** @internal Waiting for a lookup slot: in the urgent queue (a request waits on it) or the background one. */
  queued: 'urgent' | 'background' | null = null
  /** @internal Not being refreshed: never resolved, or no request read the last answer; the next request wakes it. */
  dormant = true
  /** @internal */ closed = false
  /** @internal */ waiters = new Set<() => void>()
  /** @internal */ failures = 0
  private listeners: ((e: ServiceEntry) => void)[] = []
  /**
   * Woken with an expired answer: the next requests wait (up to the DNS timeout) for the refresh in flight instead
   * of using an answer that may be minutes old; if the refresh fails, the old answer is used (stale-if-error) while
   * it is within its window.
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
 * The cache over dns/: TTL floor and ceiling, refresh ahead of expiry for names in demand, one lookup in flight per
 * name and at most `maxLookups` in all, stale-if-error, negative caching. Answers "which instances does service X
 * have now?".
 *
 * Background DNS work follows demand, not the number of names: a name is refreshed ahead of expiry only when a
 * request read its answer since that answer arrived. One nobody asked for keeps its answer until expiry and is not
 * queried; the next request after expiry waits (bounded) for a revalidation, or, when the last lookup failed, is
 * served the stale answer while one runs. So 5 000 services of which 10 are used cost about 10 lookups per TTL.
 */
export class ServiceResolver {
  private readonly dns: DnsClient
  private readonly opts: ResolverOptions
  private readonly map = new Map<string, ServiceEntry>()
  /** Lookups running now (each holds one of maxLookups slots). */
  private running = 0
  /** Entries waiting for a slot: requests wait on the urgent ones; background ones are refreshes ahead of expiry. */
  private readonly urgent = new Fifo<ServiceEntry>()
  private readonly background = new Fifo<ServiceEntry>()
  private queuedCount = 0
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
   * A request reads the entry now. A dormant entry (never resolved, or not requested since its last answer) is
   * looked up; when its answer has expired, requests wait for that lookup (`revalidating`) unless the last lookup
   * failed and the answer is within its stale-if-error window. Cheap when the entry is active: two stores and a check.
   */
  touch(e: ServiceEntry, now: number): void {
    e.lastAccess = now
    e.requested = true
    if (e.dormant && !this.closed) {
      e.dormant = false
      if (e.hasAnswer && now > e.expiresAt && (e.lastError === null || now - e.expiresAt > this.opts.staleIfErrorMs))
        e.revalidating = true
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
      // A request waits on this lookup now: it goes ahead of the refreshes waiting for a slot.
      else if (e.queued === 'background') this.enqueue(e, 'urgent')
    })
  }

  /**
   * Looks the name up now, or as soon as a lookup slot is free (single flight: concurrent callers share the lookup
   * in flight or queued). Lookups a request waits for (a first answer, a revalidation) go ahead of the others.
   */
  refresh(e: ServiceEntry): Promise<void> {
    if (e.inflight) return e.inflight
    if (e.timer) {
      clearTimeout(e.timer)
      e.timer = null
    }
    e.inflight = new Promise<void>((resolve) => {
      e.endInflight = resolve
    })
    if (this.running < this.opts.maxLookups) this.run(e)
    else this.enqueue(e, !e.hasAnswer || e.revalidating || e.waiters.size > 0 ? 'urgent' : 'background')
    return e.inflight
  }

  private enqueue(e: ServiceEntry, queue: 'urgent' | 'background'): void {
    // An entry promoted to urgent stays in the background queue too; it is skipped there (queued no longer matches).
    if (e.queued === null) this.queuedCount++
    e.queued = queue
    ;(queue === 'urgent' ? this.urgent : this.background).push(e)
  }

  /** Runs the lookup of `e` in a slot; when it ends, the next queued entry takes the slot. */
  private run(e: ServiceEntry): void {
    if (e.queued !== null) this.queuedCount--
    e.queued = null
    this.running++
    void this.doRefresh(e).finally(() => {
      this.running--
      this.settle(e)
      this.next()
    })
  }

  /** The lookup of `e` ended (or it was retired while queued): wake its waiters, schedule the next refresh. */
  private settle(e: ServiceEntry): void {
    const end = e.endInflight
    e.inflight = null
    e.endInflight = null
    e.revalidating = false
    // What requests read from now on is the answer just received (or kept): demand is counted afresh.
    e.requested = false
    e.wakeWaiters()
    end?.()
    this.schedule(e)
  }

  private next(): void {
    while (this.running < this.opts.maxLookups) {
      const e = this.urgent.shift() ?? this.background.shift()
      if (e === undefined) return
      if (e.queued === null) continue // promoted to urgent and run from there already
      if (e.closed || this.closed) {
        this.queuedCount--
        e.queued = null
        this.settle(e)
        continue
      }
      this.run(e)
    }
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
      // No request read the answer since it came, and none waits for an instance: no query now; the next request
      // wakes the entry (touch()).
      if (e.requested || e.waiters.size > 0) void this.refresh(e)
      else e.dormant = true
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

  /** Lookups waiting for a slot now (a queue that stays long means Consul DNS answers slower than names are asked). */
  get queuedLookups(): number {
    return this.queuedCount
  }

  close(): void {
    this.closed = true
    for (const e of this.map.values()) this.retire(e)
    this.map.clear()
    // Queued lookups end unanswered: their waiters were woken by retire().
    for (
      let e = this.urgent.shift() ?? this.background.shift();
      e !== undefined;
      e = this.urgent.shift() ?? this.background.shift()
    )
      if (e.queued !== null) {
        this.queuedCount--
        e.queued = null
        e.inflight = null
        e.endInflight?.()
      }
  }
}

/** A first-in first-out queue with O(1) shift (an array's shift() moves every element). */
class Fifo<T> {
  private items: (T | undefined)[] = []
  private head = 0

  push(x: T): void {
    this.items.push(x)
  }

  shift(): T | undefined {
    if (this.head === this.items.length) return undefined
    const x = this.items[this.head]
    this.items[this.head++] = undefined
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return x
  }

  get length(): number {
    return this.items.length - this.head
  }
}

function clamp(n: number, lo: number, hi: number): number {
  return n < lo ? lo : Math.min(n, hi)
}
