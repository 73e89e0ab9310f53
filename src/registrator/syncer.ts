import type { ConsulClient } from '../consul/client.js'
import type { ConsulLbError } from '../errors.js'
import type { Logger } from '../log.js'
import {
  type ContainerDesired,
  type DesiredOptions,
  type DesiredService,
  desiredForContainer,
  type HealthStatus,
  META_CONTAINER,
} from './desired.js'
import type { ContainerInspect, ContainerSummary, DockerClient } from './docker.js'
import { type Drainer, type DrainView, signalNumber } from './drainer.js'
import { asRegistratorError, type RecentErrors, RegistratorError, throwIfFailed } from './errors.js'
import type { HealthMirror } from './health.js'
import type { RegistratorMetrics } from './metrics.js'
import { gliderlabsServices, ownedServices, planReconcile, type ReconcilePlan } from './reconcile.js'
import type { ConsulWriter } from './writer.js'

export type SyncReason = 'startup' | 'reconnect' | 'periodic' | 'retry' | 'manual'

export interface SyncSummary {
  readonly reason: SyncReason
  readonly at: string
  readonly durationMs: number
  readonly ok: boolean
  readonly containers: number
  readonly registered: number
  /** Of `registered`: gliderlabs registrations taken over in place. */
  readonly adopted: number
  readonly deregistered: number
  readonly unchanged: number
  readonly conflicts: number
  readonly error: { code: string; message: string } | null
}

/** A running container as last seen: its desired services, and what the drainer needs to know about it. */
export interface ContainerView extends DrainView {
  /** The container's STOPSIGNAL as a number (what Docker's kill event reports), when it sets one. */
  readonly stopSignal: number | null
}

/** Concurrent inspects during a full sync: enough to be quick with hundreds of containers, gentle on the engine. */
const INSPECT_CONCURRENCY = 8

export interface SyncerDeps {
  readonly log: Logger
  readonly metrics: RegistratorMetrics
  readonly docker: DockerClient
  readonly consul: ConsulClient
  readonly writer: ConsulWriter
  readonly drainer: Drainer
  readonly health: HealthMirror
  readonly errors: RecentErrors
}

export interface SyncerOptions extends DesiredOptions {
  /**
   * --cleanup: the first sync also removes registrations of ours whose containers are gone, and every sync removes
   * gliderlabs' registrations of containers that are gone (without it, those are left as gliderlabs left them).
   */
  readonly cleanup: boolean
}

/**
 * Makes Consul match Docker: a full sync diffs every running container against the agent's services; a container
 * sync does the same for one container after its event. Owns what was seen (the container views) and what is ours
 * (service ID → container, following only the writes that succeeded, so /status never claims a registration Consul
 * refused); the drainer and the health mirror read the latter.
 */
export class Syncer {
  private readonly containers = new Map<string, ContainerView>()
  private readonly ownedIds = new Map<string, string>()
  /** Convention warnings already logged per container, so a resync does not repeat them every period. */
  private readonly warned = new Map<string, Set<string>>()
  /** Service IDs we would register that someone else's registration holds, and why (warned once each). */
  private readonly conflictsWarned = new Map<string, string>()
  /** Service names Consul refused to register for want of an ACL permission (tried first next time). */
  private readonly denied = new Set<string>()
  private last: SyncSummary | null = null
  private everSynced = false

  constructor(
    private readonly deps: SyncerDeps,
    private readonly opts: SyncerOptions,
  ) {}

  /** Service ID → container ID of the registrations this registrator holds. */
  get owned(): ReadonlyMap<string, string> {
    return this.ownedIds
  }

  /** Service IDs left alone because another registration holds them, with the reason (as of the last full sync). */
  get conflicts(): ReadonlyMap<string, string> {
    return this.conflictsWarned
  }

  get lastSync(): SyncSummary | null {
    return this.last
  }

  get views(): ReadonlyMap<string, ContainerView> {
    return this.containers
  }

  /** A health_status event: the view takes the new status; null when the container has no HEALTHCHECK we mirror. */
  noteHealth(containerId: string, status: HealthStatus): ContainerView | null {
    const view = this.containers.get(containerId)
    if (!view || view.health === null) return null
    const updated = { ...view, health: status }
    this.containers.set(containerId, updated)
    return updated
  }

  async fullSync(reason: SyncReason): Promise<SyncSummary> {
    const { docker, consul, drainer, health } = this.deps
    const started = Date.now()
    let plan: ReconcilePlan | null = null
    let views: ContainerView[] = []
    try {
      const all = await docker.listContainers(true)
      views = await this.describeRunning(all)
      const agent = await consul.agentServices()
      const byName = new Map(all.flatMap((c) => c.Names.map((n) => [n.replace(/^\//, ''), c.Id] as const)))
      // Containers with registrations here: ours (Meta) and gliderlabs' (container name in the ID).
      const registered = new Set([...ownedServices(agent, this.opts.hostId).values()].map((o) => o.containerId))
      for (const g of gliderlabsServices(agent, this.opts.hostId).values()) {
        const id = byName.get(g.containerName)
        if (id) registered.add(id)
      }
      const retained = await drainer.retainedContainers(all, registered, (id) => docker.inspectContainer(id))
      // The first sync after start removes leftovers only with --cleanup (gliderlabs' behaviour); every later one
      // does, because that is how a container that died while the event stream was down leaves Consul.
      const mayRemoveGone = reason === 'startup' || (reason === 'retry' && !this.everSynced) ? this.opts.cleanup : true
      const running = new Set(views.map((v) => v.containerName))
      plan = planReconcile(
        views.flatMap((v) => v.services),
        agent,
        this.opts.hostId,
        {
          mayRemove: (o) => mayRemoveGone && !retained.has(o.containerId),
          containers: { byName, running, cleanup: this.opts.cleanup },
        },
      )
      this.ownedIds.clear()
      for (const o of ownedServices(agent, this.opts.hostId).values()) this.ownedIds.set(o.id, o.containerId)
      let failures = await this.apply(plan)
      this.containers.clear()
      for (const v of views) this.containers.set(v.containerId, v)
      // Containers that went away while the event stream was down never send their die/destroy: forget them here.
      for (const id of this.warned.keys()) if (!this.containers.has(id)) this.warned.delete(id)
      drainer.retainOnly(new Set(this.containers.keys()))
      const conflicting = new Set(plan.conflicts.map((c) => c.id))
      for (const id of this.conflictsWarned.keys()) if (!conflicting.has(id)) this.conflictsWarned.delete(id)
      const wanted = new Set(views.flatMap((v) => v.services.map((s) => s.registration.Name)))
      for (const name of this.denied) if (!wanted.has(name)) this.denied.delete(name)
      failures += await drainer.settle(views, retained, this.ownedIds)
      failures += await health.push(views, this.ownedIds)
      const denial = this.deps.writer.aclDenial
      throwIfFailed(
        failures,
        `Consul operation(s) failed during the ${reason} sync${denial ? `; last ACL denial: ${denial.message}` : ''}`,
      )
      this.finish(reason, started, views.length, plan, null)
      this.everSynced = true
      return this.last!
    } catch (err) {
      const e = asRegistratorError(err)
      this.finish(reason, started, views.length, plan, e)
      throw e
    }
  }

  /** Reconciles one container (after its event): its desired services against the agent's services that carry its id. */
  async syncContainer(id: string, gone = false): Promise<void> {
    const { docker, consul, drainer, health, metrics } = this.deps
    const c = gone ? null : await docker.inspectContainer(id)
    const view = c?.State.Running ? await this.describe(c) : null
    const agent = await consul.agentServices()
    const plan = planReconcile(view?.services ?? [], agent, this.opts.hostId, {
      mayRemove: (o) => o.containerId === id,
    })
    let failures = await this.apply(plan)
    if (view) {
      this.containers.set(id, view)
      failures += await drainer.settle([view], new Set(), this.ownedIds)
      failures += await health.push([view], this.ownedIds)
    } else {
      this.containers.delete(id)
      this.warned.delete(id)
    }
    metrics.containers.set(this.containers.size)
    metrics.services.set(this.ownedIds.size)
    throwIfFailed(failures, `Consul operation(s) failed for container ${view?.containerName ?? id.slice(0, 12)}`)
  }

  /** --resync 0: the HEALTHCHECK mirrors still need pushing before their TTL runs out. */
  async refreshHealth(): Promise<void> {
    const views: ContainerView[] = []
    for (const v of this.containers.values()) {
      if (v.health === null) continue
      const c = await this.deps.docker.inspectContainer(v.containerId)
      if (c?.State.Running) views.push(await this.describe(c))
    }
    throwIfFailed(await this.deps.health.push(views, this.ownedIds), 'HEALTHCHECK TTL refresh(es) failed')
  }

  private finish(
    reason: SyncReason,
    started: number,
    containers: number,
    plan: ReconcilePlan | null,
    err: ConsulLbError | null,
  ): void {
    this.last = {
      reason,
      at: new Date().toISOString(),
      durationMs: Date.now() - started,
      ok: err === null,
      containers,
      registered: plan?.register.length ?? 0,
      adopted: plan?.adopted ?? 0,
      deregistered: plan?.deregister.length ?? 0,
      unchanged: plan?.unchanged ?? 0,
      conflicts: plan?.conflicts.length ?? 0,
      error: err ? { code: err.code, message: err.message } : null,
    }
    const { metrics, log } = this.deps
    metrics.syncs.inc({ reason, result: err ? err.code : 'ok' })
    metrics.containers.set(this.containers.size)
    metrics.services.set(this.ownedIds.size)
    const level = err ? 'warn' : plan && (plan.register.length || plan.deregister.length) ? 'info' : 'debug'
    log[level]({ ...this.last }, 'sync finished')
  }

  private async describeRunning(all: readonly ContainerSummary[]): Promise<ContainerView[]> {
    const live = all.filter((c) => c.State === 'running' || c.State === 'paused')
    const out: ContainerView[] = []
    for (let i = 0; i < live.length; i += INSPECT_CONCURRENCY) {
      const batch = await Promise.all(
        live.slice(i, i + INSPECT_CONCURRENCY).map((c) => this.deps.docker.inspectContainer(c.Id)),
      )
      for (const c of batch) if (c?.State.Running) out.push(await this.describe(c))
    }
    return out
  }

  /** Desired state of one container, logging each convention warning once per container. */
  private async describe(c: ContainerInspect): Promise<ContainerView> {
    const mode = c.HostConfig.NetworkMode ?? ''
    // `container:<id>`: the address is the network owner's; a failed inspect leaves the container unregistered.
    const peer = mode.startsWith('container:') ? await this.deps.docker.inspectContainer(mode.slice(10)) : null
    const d: ContainerDesired = desiredForContainer(c, this.opts, peer)
    let seen = this.warned.get(c.Id)
    if (!seen) {
      seen = new Set()
      this.warned.set(c.Id, seen)
    }
    for (const w of d.warnings) {
      const key = `${w.field}\0${w.message}`
      if (seen.has(key)) continue
      seen.add(key)
      this.deps.metrics.warnings.inc()
      this.deps.log.warn(
        { code: w.code, container: d.containerName, containerId: c.Id.slice(0, 12), field: w.field, value: w.value },
        w.message,
      )
    }
    return { ...d, paused: c.State.Paused, stopSignal: signalNumber(c.Config.StopSignal) }
  }

  /** Applies a plan, one Consul write per service; one failing service does not stop the others. */
  private async apply(plan: ReconcilePlan): Promise<number> {
    const { writer, consul, log, errors } = this.deps
    let failures = 0
    for (const group of byContainer(plan.register)) {
      // A service Consul refused last time goes first: while the token still lacks the right, nothing else of its
      // container is written (and undone) on every retry.
      group.sort((a, b) => Number(this.denied.has(b.registration.Name)) - Number(this.denied.has(a.registration.Name)))
      const done: { ID: string; Name: string }[] = []
      for (let i = 0; i < group.length; i++) {
        const reg = group[i]!.registration
        const fields = { service: reg.Name, id: reg.ID, address: reg.Address ?? '(agent address)', port: reg.Port }
        const failure: { denied: boolean } = { denied: false }
        const ok = await writer.run(
          'register',
          () => consul.registerService(reg),
          fields,
          (e) => {
            failure.denied = e.code === 'CLB_CONSUL_ACL_DENIED'
          },
        )
        if (ok) {
          this.ownedIds.set(reg.ID, String(reg.Meta?.[META_CONTAINER]))
          this.denied.delete(reg.Name)
          done.push(reg)
          continue
        }
        failures++
        if (!failure.denied) continue
        // All or nothing per container: a token that may write some of its services but not all leaves none of
        // this pass's registrations behind (what was registered before stays); the retry tries again.
        this.denied.add(reg.Name)
        for (const r of done) {
          // A registration that existed before this pass (updated, or taken over from gliderlabs) is not undone:
          // deregistering it would take a live instance out of Consul.
          if (plan.inPlace.has(r.ID)) continue
          const undo = { service: r.Name, id: r.ID, reason: `rollback: ${reg.Name} was denied` }
          if (await writer.run('deregister', () => consul.deregisterService(r.ID, r.Name), undo))
            this.ownedIds.delete(r.ID)
          else failures++
        }
        failures += group.length - i - 1
        break
      }
    }
    for (const o of plan.deregister) {
      const fields = { service: o.name, id: o.id, containerId: o.containerId.slice(0, 12) }
      if (await writer.run('deregister', () => consul.deregisterService(o.id), fields)) this.ownedIds.delete(o.id)
      else failures++
    }
    for (const { id, reason } of plan.conflicts) {
      // The reason is kept current for the status page; the warning is logged once per conflict.
      const warned = this.conflictsWarned.has(id)
      this.conflictsWarned.set(id, reason)
      if (warned) continue
      errors.record(new RegistratorError('CLB_REG_CONFLICT', `service ID ${id}: ${reason}; left alone`))
      log.warn(
        { code: 'CLB_REG_CONFLICT', id, reason },
        'a registration this registrator may not take over; left alone',
      )
    }
    if (plan.adopted > 0) log.info({ adopted: plan.adopted }, 'took over gliderlabs/registrator registrations in place')
    return failures
  }
}

/** The services of a plan grouped by container, in plan order. */
function byContainer(services: readonly DesiredService[]): DesiredService[][] {
  const groups = new Map<string, DesiredService[]>()
  for (const d of services) {
    const key = String(d.registration.Meta?.[META_CONTAINER] ?? d.registration.ID)
    const g = groups.get(key)
    if (g) g.push(d)
    else groups.set(key, [d])
  }
  return [...groups.values()]
}
