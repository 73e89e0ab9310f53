import { Registry } from 'prom-client'
import { Backoff, delay } from '../backoff.js'
import type { RegistratorConfig } from '../config/registrator.js'
import { ConsulClient } from '../consul/client.js'
import { describeConnection } from '../consul/connection.js'
import type { Logger } from '../log.js'
import { healthFromDocker } from './desired.js'
import { DockerClient, type DockerEvent } from './docker.js'
import { Drainer } from './drainer.js'
import { asRegistratorError, RecentErrors, RegistratorError, throwIfFailed } from './errors.js'
import { DockerEventWatcher } from './events.js'
import { HealthMirror } from './health.js'
import { RegistratorMetrics } from './metrics.js'
import { RetryTimer, WorkQueue } from './queue.js'
import { Syncer, type SyncReason, type SyncSummary } from './syncer.js'
import { ForcedTags } from './tags.js'
import { ConsulWriter } from './writer.js'

export type { RegistratorConfig } from '../config/registrator.js'
export { type ConventionWarning, DockerError, RegistratorError } from './errors.js'
export type { SyncReason, SyncSummary } from './syncer.js'

export interface RegistratorDeps {
  log: Logger
  /** Metrics go here (the proxy's registry under serve --registrator); a private one when omitted. */
  registry?: Registry
}

/**
 * Docker containers → Consul services on this host's agent. This class only wires the parts: the event watcher
 * (events.ts) feeds the work queue (queue.ts), which runs the syncer (syncer.ts: full and per-container reconcile),
 * the drainer (drainer.ts: maintenance while paused or stopping) and the health mirror (health.ts: Docker HEALTHCHECK
 * → TTL check), all writing through one ConsulWriter (writer.ts).
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
  private readonly errors = new RecentErrors()
  private readonly queue = new WorkQueue()
  private readonly retry: RetryTimer
  private readonly drainer: Drainer
  private readonly health: HealthMirror
  private readonly syncer: Syncer
  private readonly writer: ConsulWriter
  private readonly tickMs: number
  private tickTimer: NodeJS.Timeout | null = null
  private closed = false
  private readonly closing = new AbortController()
  private resolveReady!: () => void
  private readonly readyPromise = new Promise<void>((r) => {
    this.resolveReady = r
  })

  constructor(config: RegistratorConfig, deps: RegistratorDeps) {
    this.cfg = config
    const log = deps.log.child({ module: 'registrator' })
    this.log = log
    const metrics = new RegistratorMetrics(deps.registry ?? new Registry())
    this.metrics = metrics
    this.docker = new DockerClient({ url: config.dockerUrl, tls: config.dockerTls })
    this.consul = new ConsulClient({ connection: config.consul, log: this.log })
    // Without a resync the Docker HEALTHCHECK mirrors still need refreshing: tick every minute then.
    this.tickMs = config.resyncMs > 0 ? config.resyncMs : 60_000
    this.retry = new RetryTimer(new Backoff(config.retryIntervalMs, Math.max(config.retryIntervalMs, 30_000)))
    const writer = new ConsulWriter(log, metrics, this.errors)
    this.writer = writer
    this.drainer = new Drainer(this.consul, writer, { hostId: config.hostId, deregister: config.deregister })
    this.health = new HealthMirror(this.consul, writer)
    this.syncer = new Syncer(
      {
        log,
        metrics,
        docker: this.docker,
        consul: this.consul,
        writer,
        drainer: this.drainer,
        health: this.health,
        errors: this.errors,
      },
      {
        hostId: config.hostId,
        ip: config.ip,
        internal: config.internal,
        explicit: config.explicit,
        forcedTags: new ForcedTags(config.tags),
        ipFromLabel: config.useIpFromLabel,
        requireLabel: config.requireLabel,
        cleanup: config.cleanup,
        // Three refresh periods: one missed tick (Consul briefly down) does not flip a healthy instance to critical,
        // while a dead registrator's instances do turn critical instead of looking healthy forever.
        healthTtl: `${Math.max(30, Math.ceil((3 * this.tickMs) / 1000))}s`,
      },
    )
    this.watcher = new DockerEventWatcher(this.docker, {
      log,
      initialDelayMs: Math.min(250, config.reconnectMaxMs),
      maxDelayMs: config.reconnectMaxMs,
      onConnected: (isReconnect) => {
        metrics.streamUp.set(1)
        log.info({ docker: config.dockerUrl, reconnect: isReconnect }, 'Docker event stream open')
        this.runSync(isReconnect ? 'reconnect' : 'startup')
      },
      onDisconnected: (err) => {
        metrics.streamUp.set(0)
        metrics.reconnects.inc({ code: err.code })
        this.errors.record(err)
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
              `no successful sync within ${timeoutMs} ms (last: ${this.syncer.lastSync?.error?.message ?? 'none yet'})`,
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
      return await this.queue.enqueue(() => this.fullSync(reason))
    } catch (err) {
      // fullSync records its failure in lastSync; anything else (closed) is the caller's to see.
      const last = this.syncer.lastSync
      if (last && !last.ok) return last
      throw err
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.closing.abort()
    if (this.tickTimer) clearInterval(this.tickTimer)
    this.retry.close()
    const drained = this.queue.close()
    await this.watcher.close()
    await drained
    this.metrics.streamUp.set(0)
    await Promise.all([this.docker.close(), this.consul.close()])
  }

  /** The read-only view for the admin /status: what it sees, what it owns, how the last sync went. */
  status(): Record<string, unknown> {
    const owned = this.syncer.owned
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
      consul: { ...describeConnection(this.cfg.consul), aclDenied: this.writer.aclDenial },
      containersSeen: this.syncer.views.size,
      containers: [...this.syncer.views.values()].map((v) => ({
        id: v.containerId.slice(0, 12),
        name: v.containerName,
        paused: v.paused,
        draining: this.drainer.isStopping(v.containerId),
        services: v.services.map((s) => s.registration.ID),
        skipped: v.skipped,
        warnings: v.warnings.map((w) => ({ code: w.code, field: w.field, message: w.message })),
      })),
      conflicts: [...this.syncer.conflicts].map(([id, reason]) => ({ id, reason })),
      registrationsOwned: owned.size,
      owned: [...owned.keys()].sort(),
      lastSync: this.syncer.lastSync,
      queuedOperations: this.queue.waiting,
      errors: this.errors.list(),
    }
  }

  // ---- scheduling and failures ----

  private async fullSync(reason: SyncReason): Promise<SyncSummary> {
    const summary = await this.syncer.fullSync(reason)
    this.writer.clearAclDenial()
    this.retry.reset()
    this.resolveReady()
    return summary
  }

  /** Queues a full sync unless one is already waiting (it will read everything fresh when it starts). */
  private runSync(reason: SyncReason): void {
    this.queue.enqueueOnce('full-sync', () => this.fullSync(reason))?.catch((err) => this.failed(`${reason} sync`, err))
  }

  /** Every queued operation ends here when it fails: recorded, logged, and healed by a full sync after a back-off. */
  private failed(what: string, err: unknown): void {
    if (this.closed) return // CLB_REG_CLOSED and errors of operations cut short by close(): nothing to retry
    const e = asRegistratorError(err)
    this.errors.record(e)
    this.log.error({ code: e.code, err: e.message }, `${what} failed; retrying`)
    this.retry.schedule(() => this.runSync('retry'))
  }

  private async waitForConsul(): Promise<void> {
    const backoff = new Backoff(this.cfg.retryIntervalMs, Math.max(this.cfg.retryIntervalMs, 30_000))
    for (let attempt = 0; ; attempt++) {
      try {
        await this.consul.leader()
        return
      } catch (err) {
        if (attempt >= this.cfg.retryAttempts || this.closed) {
          throw new RegistratorError(
            'CLB_REG_CONSUL_UNAVAILABLE',
            `Consul at ${this.cfg.consul.address} unreachable after ${attempt + 1} attempt(s): ${(err as Error).message}`,
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
    this.queue.enqueue(() => this.syncer.refreshHealth()).catch((err) => this.failed('health refresh', err))
  }

  // ---- Docker events ----

  private onDockerEvent(e: DockerEvent): void {
    const action = e.Action.startsWith('health_status') ? 'health_status' : e.Action
    this.metrics.events.inc({ action })
    this.log.debug(
      { action: e.Action, containerId: e.Actor.ID.slice(0, 12), name: e.Actor.Attributes?.name },
      'docker event',
    )
    this.queue
      .enqueue(() => this.handleEvent(action, e))
      .catch((err) => this.failed(`${action} of ${e.Actor.Attributes?.name ?? e.Actor.ID.slice(0, 12)}`, err))
  }

  private async handleEvent(action: string, e: DockerEvent): Promise<void> {
    const id = e.Actor.ID
    const attrs = e.Actor.Attributes ?? {}
    switch (action) {
      case 'start':
      case 'unpause':
        this.drainer.forget(id)
        await this.syncer.syncContainer(id)
        return
      case 'pause':
        await this.drainer.pause(id)
        return
      case 'kill':
        // Docker emits kill when it sends the signal, before the process exits: the moment to drain, so proxies stop
        // sending new requests while in-flight ones finish.
        await this.drainer.onKill(id, attrs.signal ?? '', this.syncer.views.get(id)?.stopSignal ?? null)
        return
      case 'stop':
        // Comes after die: nothing left to drain. A stop of a container that did not exit is caught by the next kill.
        return
      case 'die':
        if (await this.drainer.keepsAfterExit(id, Number(attrs.exitCode ?? '0'))) return
        await this.syncer.syncContainer(id, true)
        return
      case 'destroy':
        this.drainer.forget(id)
        await this.syncer.syncContainer(id, true)
        return
      case 'health_status': {
        const dockerStatus = e.Action.slice('health_status:'.length).trim()
        const view = this.syncer.noteHealth(id, healthFromDocker(dockerStatus))
        if (view)
          throwIfFailed(
            await this.health.push([view], this.syncer.owned, `Docker HEALTHCHECK: ${dockerStatus}`),
            `HEALTHCHECK update(s) of ${view.containerName} failed`,
          )
        return
      }
    }
  }
}
