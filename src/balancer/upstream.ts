import type { Pool } from 'undici'
import type { Instance } from '../resolver/instances.js'

export interface PassiveHealthOptions {
  /** Failures within failWindowMs that eject an instance (nginx max_fails). */
  maxFails: number
  failWindowMs: number
  /** How long an ejected instance gets no traffic (nginx fail_timeout). */
  ejectForMs: number
  /** Concurrent requests above which an instance counts as full. */
  maxConnectionsPerInstance: number
}

/**
 * Everything the proxy knows about one backend `address:port`, independent of which DNS answer listed it:
 * in-flight count, recent failures, ejection, and its undici connection pool. Kept in an UpstreamRegistry so an
 * instance that drops out of one answer and reappears in the next keeps its failure memory and its connections
 * (like Caddy's hosts.go).
 */
export class Upstream {
  readonly key: string
  readonly address: string
  readonly port: number
  readonly origin: string
  readonly pool: Pool
  inflight = 0
  requests = 0
  failures = 0
  /** Failures counted in the current window. */
  recentFails = 0
  windowStart = 0
  ejectedUntil = 0
  ejections = 0
  lastFailure: { code: string; at: number } | null = null
  ejectReason: string | null = null
  /** Service pools currently listing this upstream; when 0 for long enough, the registry closes it. */
  references = 0
  unreferencedSince = 0

  constructor(inst: Instance, pool: Pool) {
    this.key = inst.key
    this.address = inst.address
    this.port = inst.port
    this.origin = `http://${inst.key}`
    this.pool = pool
  }

  isEjected(now: number): boolean {
    return this.ejectedUntil > now
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
  onEject: ((u: Upstream, reason: string) => void) | null = null

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
      u = new Upstream(inst, this.factory(`http://${inst.key}`))
      this.map.set(inst.key, u)
    }
    u.references++
    return u
  }

  release(u: Upstream, now: number): void {
    u.references--
    if (u.references === 0) u.unreferencedSince = now
  }

  /** A connect error, reset or timeout. Ejects the upstream when maxFails are reached within failWindowMs. */
  recordFailure(u: Upstream, code: string, now: number): boolean {
    u.failures++
    u.lastFailure = { code, at: now }
    if (now - u.windowStart > this.health.failWindowMs) {
      u.windowStart = now
      u.recentFails = 0
    }
    u.recentFails++
    if (u.recentFails >= this.health.maxFails && !u.isEjected(now)) {
      u.ejectedUntil = now + this.health.ejectForMs
      u.ejections++
      u.ejectReason = `${u.recentFails} failures (${code}) within ${this.health.failWindowMs} ms`
      u.recentFails = 0
      this.onEject?.(u, code)
      return true
    }
    return false
  }

  /** A response came back: the failure streak is over. */
  recordSuccess(u: Upstream): void {
    if (u.recentFails !== 0) u.recentFails = 0
  }

  get(key: string): Upstream | undefined {
    return this.map.get(key)
  }

  all(): Upstream[] {
    return [...this.map.values()]
  }

  private sweep(now: number): void {
    for (const u of this.map.values()) {
      if (u.references === 0 && u.inflight === 0 && now - u.unreferencedSince > this.graceMs) {
        this.map.delete(u.key)
        void u.pool.close().catch(() => {
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
        u.pool.destroy().catch(() => {
          /* shutting down: the pool's sockets go either way */
        }),
      ),
    )
  }
}
