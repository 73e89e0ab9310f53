import { constants as osConstants } from 'node:os'
import { Registry } from 'prom-client'
import { Backoff, delay } from '../backoff.js'
import type { RegistratorConfig } from '../config/registrator.js'
import { type AgentService, ConsulClient } from '../consul/client.js'
import { ConsulLbError } from '../errors.js'
import type { Logger } from '../log.js'
import {
  type ContainerDesired,
  type DesiredOptions,
  type DesiredService,
  desiredForContainer,
  type HealthStatus,
  healthCheckId,
  healthFromDocker,
  META_CONTAINER,
} from './desired.js'
import { type ContainerInspect, type ContainerSummary, DockerClient, type DockerEvent } from './docker.js'
import { RegistratorError } from './errors.js'
import { DockerEventWatcher } from './events.js'
import { RegistratorMetrics } from './metrics.js'
import { type OwnedService, ownedServices, planReconcile, type ReconcilePlan } from './reconcile.js'

export type { RegistratorConfig } from '../config/registrator.js'
export { type ConventionWarning, DockerError, RegistratorError } from './errors.js'

export type SyncReason = 'startup' | 'reconnect' | 'periodic' | 'retry' | 'manual'

export interface SyncSummary {
  readonly reason: SyncReason
  readonly at: string
  readonly durationMs: number
  readonly ok: boolean
  readonly containers: number
  readonly registered: number
  readonly deregistered: number
  readonly unchanged: number
  readonly conflicts: number
  readonly error: { code: string; message: string } | null
}

export interface RegistratorDeps {
  log: Logger
  /** Metrics go here (the proxy's registry under serve --registrator); a private one when omitted. */
  registry?: Registry
}

/** Our maintenance reasons start with this; maintenance an operator set by hand is never lifted by us. */
const MAINT_PREFIX = 'consul-lb registrator: '
/** Signals after which a container is expected to exit: its instances are drained at once. SIGHUP, SIGUSR1… are
 * reload signals for many servers and must not take an instance out of rotation. */
const TERMINATING_SIGNALS = new Set([
  '9',
  '15',
  '2',
  '3',
  'SIGKILL',
  'SIGTERM',
  'SIGINT',
  'SIGQUIT',
  'KILL',
  'TERM',
  'INT',
  'QUIT',
])
/** A container that got a terminating signal but still runs after this long handled the signal: undrain it. */
const DRAIN_STALE_MS = 5 * 60_000
/** Concurrent inspects during a full sync: enough to be quick with hundreds of containers, gentle on the engine. */
const INSPECT_CONCURRENCY = 8
const MAX_RECENT_ERRORS = 20

interface ContainerView extends ContainerDesired {
  paused: boolean
  /** The container's STOPSIGNAL as a number (what Docker's kill event reports), when it sets one. */
  stopSignal: number | null
}

/** `SIGWINCH`, `WINCH` or `28` → 28; null for what this platform does not know (SIGRTMIN+3 and the like). */
function signalNumber(text: string | undefined): number | null {
  if (!text) return null
  const t = text.trim().toUpperCase()
  if (/^\d+$/.test(t)) return Number(t)
  const n = (osConstants.signals as Record<string, number | undefined>)[t.startsWith('SIG') ? t : `SIG${t}`]
  return n ?? null
}

/**
 * Docker containers → Consul services on this host's agent. One serial queue runs every change (full syncs and
 * single-container updates), so an event can never interleave with a sync that read Docker before it happened.
 *
 * Lifecycle: start() (optionally waits for Consul), the event watcher connects and triggers the first full sync;
 * close() stops timers and the stream and waits for the running operation. Registrations are left in place on close:
 * restarting the registrator must not make every service on the host flap (gliderlabs/registrator did the same).
 */
export class Registrator {
  readonly metrics: RegistratorMetrics
  private readonly cfg: RegistratorConfig
  private readonly log: Logger
  private readonly docker: DockerClient
  private readonly consul: ConsulClient
  private readonly watcher: DockerEventWatcher
  private readonly desiredOpts: DesiredOptions
  private readonly tickMs: number
  private readonly retryBackoff: Backoff
  private queue: Promise<unknown> = Promise.resolve()
  /** Operations waiting in the queue (not the running one); shown in /status. */
  private queued = 0
  private fullSyncWaiting = false
  private containers = new Map<string, ContainerView>()
  private owned = new Map<string, string>() // service ID → container ID
  /** Containers that got a terminating signal → when; their instances stay in maintenance until they die. */
  private readonly draining = new Map<string, number>()
  /** Convention warnings already logged per container, so a resync does not repeat them every period. */
  private readonly warned = new Map<string, Set<string>>()
  private readonly conflictsWarned = new Set<string>()
  private readonly recentErrors: { at: string; code: string; message: string }[] = []
  private lastSync: SyncSummary | null = null
  private everSynced = false
  private tickTimer: NodeJS.Timeout | null = null
  private retryTimer: NodeJS.Timeout | null = null
  private closed = false
  private readonly closing = new AbortController()
  private resolveReady!: () => void
  private readonly readyPromise = new Promise<void>((r) => {
    this.resolveReady = r
  })

  constructor(config: RegistratorConfig, deps: RegistratorDeps) {
    this.cfg = config
    this.log = deps.log.child({ module: 'registrator' })
    this.metrics = new RegistratorMetrics(deps.registry ?? new Registry())
    this.docker = new DockerClient({ url: config.dockerUrl })
    this.consul = new ConsulClient({ address: config.consulUrl, token: config.consulToken ?? undefined })
    // Without a resync the Docker HEALTHCHECK mirrors still need refreshing: tick every minute then.
    this.tickMs = config.resyncMs > 0 ? config.resyncMs : 60_000
    this.desiredOpts = {
      hostId: config.hostId,
      ip: config.ip,
      internal: config.internal,
      explicit: config.explicit,
      tags: config.tags,
      // Three refresh periods: one missed tick (Consul briefly down) does not flip a healthy instance to critical,
      // while a dead registrator's instances do turn critical instead of looking healthy forever.
      healthTtl: `${Math.max(30, Math.ceil((3 * this.tickMs) / 1000))}s`,
    }
    this.retryBackoff = new Backoff(config.retryIntervalMs, Math.max(config.retryIntervalMs, 30_000))
    this.watcher = new DockerEventWatcher(this.docker, {
      log: this.log,
      initialDelayMs: Math.min(250, config.reconnectMaxMs),
      maxDelayMs: config.reconnectMaxMs,
      onConnected: (isReconnect) => {
        this.metrics.streamUp.set(1)
        this.log.info({ docker: config.dockerUrl, reconnect: isReconnect }, 'Docker event stream open')
        this.runSync(isReconnect ? 'reconnect' : 'startup')
      },
      onDisconnected: (err) => {
        this.metrics.streamUp.set(0)
        this.metrics.reconnects.inc({ code: err.code })
        this.recordError(err)
      },
      onEvent: (e) => this.onDockerEvent(e),
    })
  }

  /**
   * Starts following Docker. With retryAttempts >= 0, first waits for Consul and throws CLB_REG_CONSUL_UNAVAILABLE
   * when it stays unreachable; with -1 it never blocks (failed syncs are retried in the background).
   */
  async start(): Promise<void> {
    if (this.closed) throw new RegistratorError('CLB_REG_CLOSED', 'registrator was closed')
    if (this.cfg.retryAttempts >= 0) await this.waitForConsul()
    // close() may have run while start() waited for Consul: starting the timer and the stream now would outlive it.
    if (this.closed) throw new RegistratorError('CLB_REG_CLOSED', 'registrator was closed while starting')
    this.tickTimer = setInterval(() => this.onTick(), this.tickMs)
    this.tickTimer.unref()
    this.watcher.start()
  }

  /** Resolves after the first successful full sync (or rejects when `timeoutMs` passes first). */
  async ready(timeoutMs = 30_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      // Not unref'd: the caller is waiting on it, and the registrator's own timers would not keep the process alive.
      timer = setTimeout(
        () =>
          reject(
            new RegistratorError(
              'CLB_REG_SYNC_FAILED',
              `no successful sync within ${timeoutMs} ms (last: ${this.lastSync?.error?.message ?? 'none yet'})`,
            ),
          ),
        timeoutMs,
      )
    })
    try {
      await Promise.race([this.readyPromise, timeout])
    } finally {
      clearTimeout(timer)
    }
  }

  /** Runs a full reconcile now (queued behind whatever runs) and returns its summary; never throws for sync failures. */
  async syncNow(reason: SyncReason = 'manual'): Promise<SyncSummary> {
    try {
      return await this.enqueue(() => this.fullSync(reason))
    } catch (err) {
      // fullSync records its failure in lastSync; anything else (closed) is the caller's to see.
      if (this.lastSync && !this.lastSync.ok) return this.lastSync
      throw err
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.closing.abort()
    if (this.tickTimer) clearInterval(this.tickTimer)
    if (this.retryTimer) clearTimeout(this.retryTimer)
    await this.watcher.close()
    await this.queue
    this.metrics.streamUp.set(0)
    await Promise.all([this.docker.close(), this.consul.close()])
  }

  /** The read-only view for the admin /status: what it sees, what it owns, how the last sync went. */
  status(): Record<string, unknown> {
    return {
      hostId: this.cfg.hostId,
      docker: {
        url: this.cfg.dockerUrl,
        eventStream: this.watcher.state,
        connects: this.watcher.connects,
        lastEventAt: this.watcher.lastEventAt ? new Date(this.watcher.lastEventAt).toISOString() : null,
        lastError: this.watcher.lastError
          ? { code: this.watcher.lastError.code, message: this.watcher.lastError.message }
          : null,
      },
      consul: { url: this.cfg.consulUrl },
      containersSeen: this.containers.size,
      containers: [...this.containers.values()].map((v) => ({
        id: v.containerId.slice(0, 12),
        name: v.containerName,
        paused: v.paused,
        draining: this.draining.has(v.containerId),
        services: v.services.map((s) => s.registration.ID),
        skipped: v.skipped,
        warnings: v.warnings.map((w) => ({ code: w.code, field: w.field, message: w.message })),
      })),
      registrationsOwned: this.owned.size,
      owned: [...this.owned.keys()].sort(),
      lastSync: this.lastSync,
      queuedOperations: this.queued,
      errors: [...this.recentErrors],
    }
  }

  // ---- queue and failure handling ----

  private enqueue<T>(fn: () => Promise<T>): Promise<T> {
    this.queued++
    const run = this.queue.then(() => {
      this.queued--
      if (this.closed) throw new RegistratorError('CLB_REG_CLOSED', 'registrator was closed')
      return fn()
    })
    // The chain goes on after a failure; the failure itself is handled by whoever awaits `run`.
    this.queue = run.catch(() => undefined)
    return run
  }

  /**
   * Queues a full sync unless one is already waiting: that one will read Docker and Consul when it starts, so a
   * second adds nothing. Without this, ticks that come faster than a slow Consul answers would pile syncs up without
   * bound, and a drain (kill event) would wait behind all of them.
   */
  private runSync(reason: SyncReason): void {
    if (this.fullSyncWaiting) return
    this.fullSyncWaiting = true
    this.enqueue(() => {
      this.fullSyncWaiting = false
      return this.fullSync(reason)
    }).catch((err: unknown) => this.failed(`${reason} sync`, err))
  }

  private failed(what: string, err: unknown): void {
    if (this.closed) return // CLB_REG_CLOSED and errors of operations cut short by close(): nothing to retry
    const e =
      err instanceof ConsulLbError
        ? err
        : new RegistratorError('CLB_REG_SYNC_FAILED', String((err as Error)?.message ?? err), { cause: err })
    this.recordError(e)
    this.log.error({ code: e.code, err: e.message }, `${what} failed; retrying`)
    this.scheduleRetry()
  }

  /** After a failure, a full sync with capped back-off: this is what heals a Consul outage when --resync is 0. */
  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return
    const wait = this.retryBackoff.next()
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null
      this.runSync('retry')
    }, wait)
    this.retryTimer.unref()
  }

  private recordError(e: ConsulLbError): void {
    this.recentErrors.push({ at: new Date().toISOString(), code: e.code, message: e.message })
    if (this.recentErrors.length > MAX_RECENT_ERRORS) this.recentErrors.shift()
  }

  private async waitForConsul(): Promise<void> {
    const backoff = new Backoff(this.cfg.retryIntervalMs, Math.max(this.cfg.retryIntervalMs, 30_000))
    for (let attempt = 0; ; attempt++) {
      try {
        await this.consul.agentSelf()
        return
      } catch (err) {
        if (attempt >= this.cfg.retryAttempts || this.closed) {
          throw new RegistratorError(
            'CLB_REG_CONSUL_UNAVAILABLE',
            `Consul at ${this.cfg.consulUrl} unreachable after ${attempt + 1} attempt(s): ${(err as Error).message}`,
            { cause: err },
          )
        }
        const wait = backoff.next()
        this.log.warn({ err: (err as Error).message, attempt: attempt + 1, retryInMs: wait }, 'waiting for Consul')
        await delay(wait, this.closing.signal, true)
      }
    }
  }

  private onTick(): void {
    if (this.cfg.resyncMs > 0) {
      this.runSync('periodic')
      return
    }
    this.enqueue(() => this.refreshHealthOnly()).catch((err: unknown) => this.failed('health refresh', err))
  }

  // ---- full reconcile ----

  private async fullSync(reason: SyncReason): Promise<SyncSummary> {
    const started = Date.now()
    let plan: ReconcilePlan | null = null
    let views: ContainerView[] = []
    try {
      const all = await this.docker.listContainers(true)
      views = await this.describeRunning(all)
      const agent = await this.consul.agentServices()
      const retained = await this.retainedContainers(all, agent)
      // The first sync after start removes leftovers only with --cleanup (gliderlabs' behaviour); every later one
      // does, because that is how a container that died while the event stream was down leaves Consul.
      const mayRemoveGone = reason === 'startup' || (reason === 'retry' && !this.everSynced) ? this.cfg.cleanup : true
      plan = planReconcile(
        views.flatMap((v) => v.services),
        agent,
        this.cfg.hostId,
        { mayRemove: (o) => mayRemoveGone && !retained.has(o.containerId) },
      )
      this.owned = new Map([...ownedServices(agent, this.cfg.hostId).values()].map((o) => [o.id, o.containerId]))
      let failures = await this.apply(plan)
      this.containers = new Map(views.map((v) => [v.containerId, v]))
      // Containers that went away while the event stream was down never send their die/destroy: forget them here.
      for (const id of this.warned.keys()) if (!this.containers.has(id)) this.warned.delete(id)
      for (const id of this.draining.keys()) if (!this.containers.has(id)) this.draining.delete(id)
      for (const id of this.conflictsWarned) if (!plan.conflicts.includes(id)) this.conflictsWarned.delete(id)
      failures += await this.settleMaintenance(views, retained)
      failures += await this.refreshHealth(views)
      if (failures > 0)
        throw new RegistratorError(
          'CLB_REG_SYNC_FAILED',
          `${failures} Consul operation(s) failed during the ${reason} sync`,
        )
      this.finishSync(reason, started, views.length, plan, null)
      this.everSynced = true
      this.retryBackoff.reset()
      this.resolveReady()
      return this.lastSync!
    } catch (err) {
      const e =
        err instanceof ConsulLbError
          ? err
          : new RegistratorError('CLB_REG_SYNC_FAILED', String((err as Error)?.message ?? err), { cause: err })
      this.finishSync(reason, started, views.length, plan, e)
      throw e
    }
  }

  private finishSync(
    reason: SyncReason,
    started: number,
    containers: number,
    plan: ReconcilePlan | null,
    err: ConsulLbError | null,
  ): void {
    this.lastSync = {
      reason,
      at: new Date().toISOString(),
      durationMs: Date.now() - started,
      ok: err === null,
      containers,
      registered: plan?.register.length ?? 0,
      deregistered: plan?.deregister.length ?? 0,
      unchanged: plan?.unchanged ?? 0,
      conflicts: plan?.conflicts.length ?? 0,
      error: err ? { code: err.code, message: err.message } : null,
    }
    this.metrics.syncs.inc({ reason, result: err ? err.code : 'ok' })
    this.metrics.containers.set(this.containers.size)
    this.metrics.services.set(this.owned.size)
    const level = err ? 'warn' : plan && (plan.register.length || plan.deregister.length) ? 'info' : 'debug'
    this.log[level]({ ...this.lastSync }, 'sync finished')
  }

  private async describeRunning(all: ContainerSummary[]): Promise<ContainerView[]> {
    const live = all.filter((c) => c.State === 'running' || c.State === 'paused')
    const out: ContainerView[] = []
    for (let i = 0; i < live.length; i += INSPECT_CONCURRENCY) {
      const batch = await Promise.all(
        live.slice(i, i + INSPECT_CONCURRENCY).map((c) => this.docker.inspectContainer(c.Id)),
      )
      for (const c of batch) if (c?.State.Running) out.push(this.describe(c))
    }
    return out
  }

  /** Desired state of one container, logging each convention warning once per container. */
  private describe(c: ContainerInspect): ContainerView {
    const d = desiredForContainer(c, this.desiredOpts)
    let seen = this.warned.get(c.Id)
    if (!seen) {
      seen = new Set()
      this.warned.set(c.Id, seen)
    }
    for (const w of d.warnings) {
      const key = `${w.field}\0${w.message}`
      if (seen.has(key)) continue
      seen.add(key)
      this.metrics.warnings.inc()
      this.log.warn(
        { code: w.code, container: d.containerName, containerId: c.Id.slice(0, 12), field: w.field, value: w.value },
        w.message,
      )
    }
    return { ...d, paused: c.State.Paused, stopSignal: signalNumber(c.Config.StopSignal) }
  }

  /** Under --deregister=on-success, containers that exited non-zero (or are restarting) keep their registrations. */
  private async retainedContainers(all: ContainerSummary[], agent: Record<string, AgentService>): Promise<Set<string>> {
    const keep = new Set<string>()
    if (this.cfg.deregister !== 'on-success') return keep
    const ownedContainers = new Set([...ownedServices(agent, this.cfg.hostId).values()].map((o) => o.containerId))
    for (const s of all) {
      if (s.State === 'running' || s.State === 'paused' || !ownedContainers.has(s.Id)) continue
      const c = await this.docker.inspectContainer(s.Id)
      if (c && this.isRetained(c)) keep.add(c.Id)
    }
    return keep
  }

  private isRetained(c: ContainerInspect): boolean {
    return (
      this.cfg.deregister === 'on-success' &&
      !c.State.Running &&
      (c.State.Status === 'restarting' || c.State.ExitCode !== 0)
    )
  }

  /**
   * Applies a plan, one Consul call per service; one failing service does not stop the others. `owned` follows only
   * the writes that succeeded, so /status never claims a registration Consul refused.
   */
  private async apply(plan: ReconcilePlan): Promise<number> {
    let failures = 0
    for (const d of plan.register) {
      const reg = d.registration
      if (
        await this.consulOp('register', () => this.consul.registerService(reg), {
          service: reg.Name,
          id: reg.ID,
          address: reg.Address ?? '(agent address)',
          port: reg.Port,
        })
      )
        this.owned.set(reg.ID, String(reg.Meta?.[META_CONTAINER]))
      else failures++
    }
    for (const o of plan.deregister) {
      if (
        await this.consulOp('deregister', () => this.consul.deregisterService(o.id), {
          service: o.name,
          id: o.id,
          containerId: o.containerId.slice(0, 12),
        })
      )
        this.owned.delete(o.id)
      else failures++
    }
    for (const id of plan.conflicts) {
      if (this.conflictsWarned.has(id)) continue
      this.conflictsWarned.add(id)
      this.recordError(
        new RegistratorError(
          'CLB_REG_CONFLICT',
          `service ID ${id} exists in Consul without this registrator's mark; left alone`,
        ),
      )
      this.log.warn(
        { code: 'CLB_REG_CONFLICT', id },
        'a service with this ID exists but was not registered by this registrator (host id); not touching it',
      )
    }
    return failures
  }

  /** Runs one Consul write, logs and counts it; false when it failed (the caller retries later). */
  private async consulOp(op: string, fn: () => Promise<void>, fields: Record<string, unknown>): Promise<boolean> {
    try {
      await fn()
      this.metrics.operations.inc({ op, result: 'ok' })
      this.log[op === 'ttl' ? 'debug' : 'info'](fields, op)
      return true
    } catch (err) {
      const code = (err as ConsulLbError).code ?? 'CLB_REG_SYNC_FAILED'
      this.metrics.operations.inc({ op, result: code })
      this.recordError(err instanceof ConsulLbError ? err : new RegistratorError('CLB_REG_SYNC_FAILED', String(err)))
      this.log.warn({ ...fields, code, err: (err as Error).message }, `${op} failed`)
      return false
    }
  }

  /**
   * Maintenance is how a container is drained: paused, signalled to stop, or kept after a failed exit. Maintenance
   * that someone else set (reason without our prefix) is never lifted.
   */
  private async settleMaintenance(views: ContainerView[], retained: Set<string>): Promise<number> {
    const checks = await this.consul.agentChecks()
    const ours = new Map<string, boolean>() // service ID → maintenance set by us?
    for (const ch of Object.values(checks)) {
      if (ch.CheckID.startsWith('_service_maintenance:'))
        ours.set(ch.ServiceID, (ch.Notes ?? '').startsWith(MAINT_PREFIX))
    }
    let failures = 0
    const now = Date.now()
    for (const v of views) {
      const since = this.draining.get(v.containerId)
      if (since !== undefined && now - since > DRAIN_STALE_MS) this.draining.delete(v.containerId)
      const reason = v.paused ? 'container paused' : this.draining.has(v.containerId) ? 'container is stopping' : null
      for (const s of this.ownedOf(v)) {
        const id = s.registration.ID
        if (reason && !ours.has(id)) failures += (await this.maintenance(id, true, reason)) ? 0 : 1
        else if (!reason && ours.get(id) === true) failures += (await this.maintenance(id, false, '')) ? 0 : 1
      }
    }
    for (const [id, containerId] of this.owned) {
      if (retained.has(containerId) && !ours.has(id))
        failures += (await this.maintenance(
          id,
          true,
          'container exited with an error (--deregister=on-success keeps it)',
        ))
          ? 0
          : 1
    }
    return failures
  }

  /**
   * The desired services of a container that this registrator did register. A desired ID that a registration made by
   * hand (or by another host) already holds is a conflict: its maintenance and checks are not ours to set.
   */
  private ownedOf(v: ContainerDesired): DesiredService[] {
    return v.services.filter((s) => this.owned.has(s.registration.ID))
  }

  private maintenance(serviceId: string, enable: boolean, reason: string): Promise<boolean> {
    return this.consulOp(
      enable ? 'maintenance_on' : 'maintenance_off',
      () => this.consul.setServiceMaintenance(serviceId, enable, `${MAINT_PREFIX}${reason}`),
      { id: serviceId, ...(enable ? { reason } : {}) },
    )
  }

  private async refreshHealth(
    views: readonly ContainerDesired[],
    status?: HealthStatus,
    output?: string,
  ): Promise<number> {
    let failures = 0
    for (const v of views) {
      const health = status ?? v.health
      if (health === null) continue
      for (const s of this.ownedOf(v)) {
        const ok = await this.consulOp(
          'ttl',
          () =>
            this.consul.updateTtlCheck(
              healthCheckId(s.registration.ID),
              health,
              output ?? `Docker HEALTHCHECK: ${health === 'passing' ? 'healthy' : 'not healthy'}`,
            ),
          { id: s.registration.ID, status: health },
        )
        if (!ok) failures++
      }
    }
    return failures
  }

  /** --resync 0: still refresh the HEALTHCHECK mirrors before their TTL runs out. */
  private async refreshHealthOnly(): Promise<void> {
    const views: ContainerView[] = []
    for (const v of this.containers.values()) {
      if (v.health === null) continue
      const c = await this.docker.inspectContainer(v.containerId)
      if (c?.State.Running) views.push(this.describe(c))
    }
    if ((await this.refreshHealth(views)) > 0)
      throw new RegistratorError('CLB_REG_SYNC_FAILED', 'HEALTHCHECK TTL refresh failed')
  }

  // ---- Docker events ----

  private onDockerEvent(e: DockerEvent): void {
    const action = e.Action.startsWith('health_status') ? 'health_status' : e.Action
    this.metrics.events.inc({ action })
    this.log.debug(
      { action: e.Action, containerId: e.Actor.ID.slice(0, 12), name: e.Actor.Attributes?.name },
      'docker event',
    )
    this.enqueue(() => this.handleEvent(action, e)).catch((err: unknown) =>
      this.failed(`${action} of ${e.Actor.Attributes?.name ?? e.Actor.ID.slice(0, 12)}`, err),
    )
  }

  private async handleEvent(action: string, e: DockerEvent): Promise<void> {
    const id = e.Actor.ID
    const attrs = e.Actor.Attributes ?? {}
    switch (action) {
      case 'start':
      case 'unpause':
        this.draining.delete(id)
        await this.syncContainer(id)
        return
      case 'pause':
        await this.setContainerMaintenance(id, true, 'container paused')
        return
      case 'kill': {
        // Docker emits kill when it sends the signal, before the process exits: the moment to drain, so proxies stop
        // sending new requests while in-flight ones finish. `docker stop` sends the image's STOPSIGNAL, which need not
        // be TERM (httpd's is WINCH, a graceful stop): that signal drains too.
        const signal = attrs.signal ?? ''
        const stopSignal = this.containers.get(id)?.stopSignal ?? null
        if (!TERMINATING_SIGNALS.has(signal) && !(stopSignal !== null && signal === String(stopSignal))) return
        this.draining.set(id, Date.now())
        await this.setContainerMaintenance(id, true, `container is stopping (signal ${signal})`)
        return
      }
      case 'stop':
        // Comes after die: nothing left to drain. A stop of a container that did not exit is caught by the next kill.
        return
      case 'die': {
        this.draining.delete(id)
        const exitCode = Number(attrs.exitCode ?? '0')
        if (this.cfg.deregister === 'on-success' && exitCode !== 0) {
          await this.setContainerMaintenance(
            id,
            true,
            `container exited with code ${exitCode} (--deregister=on-success keeps it)`,
          )
          return
        }
        await this.syncContainer(id, true)
        return
      }
      case 'destroy':
        this.draining.delete(id)
        await this.syncContainer(id, true)
        return
      case 'health_status': {
        const dockerStatus = e.Action.slice('health_status:'.length).trim()
        const view = this.containers.get(id)
        if (view && view.health !== null) {
          const status = healthFromDocker(dockerStatus)
          this.containers.set(id, { ...view, health: status })
          if ((await this.refreshHealth([view], status, `Docker HEALTHCHECK: ${dockerStatus}`)) > 0)
            throw new RegistratorError('CLB_REG_SYNC_FAILED', `HEALTHCHECK update of ${view.containerName} failed`)
        }
        return
      }
    }
  }

  /** Reconciles one container: its desired services against the agent's services that carry its id. */
  private async syncContainer(id: string, gone = false): Promise<void> {
    const c = gone ? null : await this.docker.inspectContainer(id)
    const view = c?.State.Running ? this.describe(c) : null
    const agent = await this.consul.agentServices()
    const plan = planReconcile(view?.services ?? [], agent, this.cfg.hostId, {
      mayRemove: (o: OwnedService) => o.containerId === id,
    })
    let failures = await this.apply(plan)
    if (view) {
      this.containers.set(id, { ...view, paused: c!.State.Paused })
      failures += await this.settleMaintenance([{ ...view, paused: c!.State.Paused }], new Set())
      failures += await this.refreshHealth([view])
    } else {
      this.containers.delete(id)
      this.warned.delete(id)
    }
    this.metrics.containers.set(this.containers.size)
    this.metrics.services.set(this.owned.size)
    if (failures > 0)
      throw new RegistratorError(
        'CLB_REG_SYNC_FAILED',
        `${failures} Consul operation(s) failed for container ${view?.containerName ?? id.slice(0, 12)}`,
      )
  }

  private async setContainerMaintenance(containerId: string, enable: boolean, reason: string): Promise<void> {
    const agent = await this.consul.agentServices()
    const mine = [...ownedServices(agent, this.cfg.hostId).values()].filter((o) => o.containerId === containerId)
    let failures = 0
    for (const o of mine) if (!(await this.maintenance(o.id, enable, reason))) failures++
    if (failures > 0)
      throw new RegistratorError(
        'CLB_REG_SYNC_FAILED',
        `maintenance ${enable ? 'on' : 'off'} failed for ${failures} service(s)`,
      )
  }
}
