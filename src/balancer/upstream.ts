import type { Pool } from 'undici'
import type { Instance } from '../resolver/instances.js'
import { LATENCY_BOUNDS_MS, latencyBucket, latencyQuantile, SecondRing } from './recent.js'

export interface PassiveHealthOptions {
  /** Failures within failWindowMs that eject an instance (nginx max_fails). */
  maxFails: number
  failWindowMs: number
  /** How long an ejected instance gets no traffic (nginx fail_timeout). */
  ejectForMs: number
  /** Requests in flight at which an instance counts as full (nginx max_conns, but open tunnels do not count). */
  maxConnectionsPerInstance: number
}

/** An instance's recent traffic for the status page (see `Upstream.recent`). */
export interface RecentTraffic {
  /** Attempts started per second over the last RATE_WINDOW_S whole seconds. */
  rps: number
  /** Response latencies counted per bucket (LATENCY_BOUNDS_MS, then slower) over the same window. */
  latency: number[]
  p50Ms: number | null
  p99Ms: number | null
  /** Failures (connect errors, resets, timeouts) over the last FAILURE_WINDOW_S seconds. */
  failures: number
}

/** The window of an instance's rate and latency percentiles: the last 10 whole seconds. */
export const RATE_WINDOW_S = 10
/** "Recent" failures: the last minute. */
export const FAILURE_WINDOW_S = 60
// Series of an upstream's per-second ring: attempts started, failures, then one per latency bucket.
const STARTED = 0
const FAILED = 1
const LATENCY = 2

/** Why an instance was last counted as failing. */
export interface FailureRecord {
  readonly code: string
  readonly at: number
}

/**
 * Everything the proxy knows about one backend `address:port`, independent of which DNS answer listed it: requests
 * and tunnels in flight, recent failures, ejection, and (classic data plane) its undici connection pool, made on
 * first use. Kept in an UpstreamRegistry so an instance that drops out of one answer and reappears in the next keeps
 * its failure memory and its connections (like Caddy's hosts.go).
 *
 * The counters are private: `begin()`/`end()` bracket each request (whoever calls `begin()` owns exactly one `end()`);
 * an upgrade that the instance switched becomes a tunnel (`promoteToTunnel()` … `endTunnel()`), counted apart: a
 * WebSocket left open must not use up the slots plain requests need. `recordFailure()`/`recordSuccess()` feed passive
 * health, and selection asks one question, `isAvailable(now)`: not ejected and under the connection cap.
 */
export class Upstream {
  readonly key: string
  readonly address: string
  readonly port: number
  readonly origin: string
  private readonly makePool: PoolFactory
  private undiciPool: Pool | null = null
  private readonly health: PassiveHealthOptions
  private active = 0
  private tunnelCount = 0
  private started = 0
  private failed = 0
  /** Failures counted in the current window. */
  private recentFails = 0
  private windowStart = 0
  private ejectedUntilMs = 0
  private ejectCount = 0
  private lastFail: FailureRecord | null = null
  private lastEjectReason: string | null = null
  /** Per-second counts of the last minute: counting is an increment, reading (the status page) does the sums. */
  private readonly perSecond = new SecondRing(LATENCY + LATENCY_BOUNDS_MS.length + 1, FAILURE_WINDOW_S + 1)
  /** Service pools currently listing this upstream; when 0 for long enough, the registry closes it. */
  private references = 0
  private unreferencedSince = 0

  constructor(inst: Instance, makePool: PoolFactory, health: PassiveHealthOptions) {
    this.key = inst.key
    this.address = inst.address
    this.port = inst.port
    this.origin = `http://${inst.key}`
    this.makePool = makePool
    this.health = health
  }

  /** The classic plane's connections to this instance; made on first use (the pass-through plane has its own). */
  get pool(): Pool {
    this.undiciPool ??= this.makePool(this.origin)
    return this.undiciPool
  }

  /** @internal UpstreamRegistry: no service lists this instance any more; idle connections close. */
  closePool(): Promise<void> {
    return this.undiciPool === null ? Promise.resolve() : this.undiciPool.close()
  }

  /** @internal UpstreamRegistry: shutting down; connections are cut. */
  destroyPool(): Promise<void> {
    return this.undiciPool === null ? Promise.resolve() : this.undiciPool.destroy()
  }

  /** A request or tunnel starts using this instance; its owner calls `end()` exactly once when it is over. */
  begin(now: number): void {
    this.active++
    this.started++
    this.perSecond.add(STARTED, now)
  }

  /** The request that called `begin()` is over, however it ended. */
  end(): void {
    // Never below zero: an unbalanced end() would otherwise hide a leaked slot elsewhere behind a negative count.
    if (this.active > 0) this.active--
  }

  /** The request that called `begin()` became a tunnel (101): its slot leaves the request count for the tunnel count. */
  promoteToTunnel(): void {
    this.end()
    this.tunnelCount++
  }

  /** A tunnel made by `promoteToTunnel()` closed. */
  endTunnel(): void {
    if (this.tunnelCount > 0) this.tunnelCount--
  }

  /** Not ejected and under the connection cap: the one question selection asks. */
  isAvailable(now: number): boolean {
    return this.ejectedUntilMs <= now && this.active < this.health.maxConnectionsPerInstance
  }

  /** Under the connection cap, ejected or not (panic mode tries ejected instances, never full ones). */
  hasCapacity(): boolean {
    return this.active < this.health.maxConnectionsPerInstance
  }

  isEjected(now: number): boolean {
    return this.ejectedUntilMs > now
  }

  /**
   * A connect error, reset or timeout. Ejects the instance when maxFails are reached within failWindowMs; returns
   * true when this failure ejected it.
   */
  recordFailure(code: string, now: number): boolean {
    this.failed++
    this.perSecond.add(FAILED, now)
    this.lastFail = { code, at: now }
    if (now - this.windowStart > this.health.failWindowMs) {
      this.windowStart = now
      this.recentFails = 0
    }
    this.recentFails++
    if (this.recentFails >= this.health.maxFails && !this.isEjected(now)) {
      this.ejectedUntilMs = now + this.health.ejectForMs
      this.ejectCount++
      this.lastEjectReason = `${this.recentFails} failures (${code}) within ${this.health.failWindowMs} ms`
      this.recentFails = 0
      return true
    }
    return false
  }

  /** A response came back, `latencyMs` after the attempt started: the failure streak is over. */
  recordSuccess(latencyMs: number, now: number): void {
    if (this.recentFails !== 0) this.recentFails = 0
    this.perSecond.add(LATENCY + latencyBucket(latencyMs), now)
  }

  /** Rate, latency and failures of the last seconds (read by the status view; changes nothing). */
  recent(now: number): RecentTraffic {
    const latency = new Array<number>(LATENCY_BOUNDS_MS.length + 1)
    for (let i = 0; i < latency.length; i++) latency[i] = this.perSecond.sum(LATENCY + i, RATE_WINDOW_S, now)
    return {
      rps: this.perSecond.sum(STARTED, RATE_WINDOW_S, now) / RATE_WINDOW_S,
      latency,
      p50Ms: latencyQuantile(latency, 0.5),
      p99Ms: latencyQuantile(latency, 0.99),
      failures: this.perSecond.sum(FAILED, FAILURE_WINDOW_S, now),
    }
  }

  /** Requests in flight (pending upgrades included): what the connection cap counts. */
  get inflight(): number {
    return this.active
  }
  /** Open tunnels (switched upgrades). */
  get tunnels(): number {
    return this.tunnelCount
  }
  /** Everything using the instance now, for the load-aware policies (least-connections, p2c). */
  get load(): number {
    return this.active + this.tunnelCount
  }
  /** Requests (and upgrades) started since the upstream was created. */
  get requests(): number {
    return this.started
  }
  get failures(): number {
    return this.failed
  }
  get ejections(): number {
    return this.ejectCount
  }
  get ejectedUntil(): number {
    return this.ejectedUntilMs
  }
  get ejectReason(): string | null {
    return this.lastEjectReason
  }
  get lastFailure(): FailureRecord | null {
    return this.lastFail
  }
  get maxConnections(): number {
    return this.health.maxConnectionsPerInstance
  }

  /** @internal UpstreamRegistry: a service pool lists this upstream. */
  retain(): void {
    this.references++
  }

  /** @internal UpstreamRegistry: a service pool stopped listing it. */
  release(now: number): void {
    this.references--
    if (this.references === 0) this.unreferencedSince = now
  }

  /** @internal UpstreamRegistry: unlisted, idle, and for longer than `graceMs`. */
  isUnusedFor(graceMs: number, now: number): boolean {
    return (
      this.references === 0 && this.active === 0 && this.tunnelCount === 0 && now - this.unreferencedSince > graceMs
    )
  }
}

export type PoolFactory = (origin: string) => Pool

/**
 * All upstreams by `address:port`. Upstreams no service lists any more are closed after a grace period (a DNS
 * refresh that briefly drops an instance must not throw its connections and failure memory away).
 */
export class UpstreamRegistry {
  private readonly map = new Map<string, Upstream>()
  private readonly factory: PoolFactory
  readonly health: PassiveHealthOptions
  private readonly sweepTimer: NodeJS.Timeout
  private readonly graceMs: number

  constructor(factory: PoolFactory, health: PassiveHealthOptions, graceMs = 60_000) {
    this.factory = factory
    this.health = health
    this.graceMs = graceMs
    this.sweepTimer = setInterval(() => this.sweep(Date.now()), Math.min(graceMs, 10_000))
    this.sweepTimer.unref()
  }

  acquire(inst: Instance): Upstream {
    let u = this.map.get(inst.key)
    if (!u) {
      u = new Upstream(inst, this.factory, this.health)
      this.map.set(inst.key, u)
    }
    u.retain()
    return u
  }

  release(u: Upstream, now: number): void {
    u.release(now)
  }

  get(key: string): Upstream | undefined {
    return this.map.get(key)
  }

  all(): Upstream[] {
    return [...this.map.values()]
  }

  /** Requests and tunnels in flight over every upstream: 0 whenever the proxy is idle (tests assert it). */
  slotsInUse(): number {
    let n = 0
    for (const u of this.map.values()) n += u.load
    return n
  }

  private sweep(now: number): void {
    for (const u of this.map.values()) {
      if (u.isUnusedFor(this.graceMs, now)) {
        this.map.delete(u.key)
        void u.closePool().catch(() => {
          /* closing an idle pool cannot lose a request; nothing to report */
        })
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.sweepTimer)
    const all = [...this.map.values()]
    this.map.clear()
    await Promise.all(
      all.map((u) =>
        u.destroyPool().catch(() => {
          /* shutting down: the pool's sockets go either way */
        }),
      ),
    )
  }
}
