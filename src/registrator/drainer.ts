import { constants as osConstants } from 'node:os'
import type { ConsulClient } from '../consul/client.js'
import type { ContainerDesired } from './desired.js'
import type { ContainerInspect, ContainerSummary } from './docker.js'
import { throwIfFailed } from './errors.js'
import { ownedServices } from './reconcile.js'
import type { ConsulWriter } from './writer.js'

/** Our maintenance reasons start with this; maintenance an operator set by hand is never lifted by us. */
export const MAINT_PREFIX = 'consul-lb registrator: '
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

/** A container as the drainer sees it: its services, and whether Docker has it paused. */
export interface DrainView extends ContainerDesired {
  readonly paused: boolean
}

/** `SIGWINCH`, `WINCH` or `28` → 28; null for what this platform does not know (SIGRTMIN+3 and the like). */
export function signalNumber(text: string | undefined): number | null {
  if (!text) return null
  const t = text.trim().toUpperCase()
  if (/^\d+$/.test(t)) return Number(t)
  const n = (osConstants.signals as Record<string, number | undefined>)[t.startsWith('SIG') ? t : `SIG${t}`]
  return n ?? null
}

/**
 * Docker's kill event reports the signal sent (by number for `docker stop`). It drains when the signal ends the
 * process: a terminating one, or the image's own STOPSIGNAL (httpd's is WINCH, its graceful stop).
 */
export function isStopSignal(signal: string, stopSignal: number | null): boolean {
  return TERMINATING_SIGNALS.has(signal) || (stopSignal !== null && signal === String(stopSignal))
}

export interface DrainerOptions {
  readonly hostId: string
  readonly deregister: 'always' | 'on-success' | 'never'
}

/**
 * Whether a container that exited keeps its registrations (in maintenance). on-success is gliderlabs' rule
 * (bridge.go shouldRemove): exit 0 and exits by a signal (128+n: `docker stop` gives 143, `docker kill` 137) are
 * deregistered, any other code stays. never keeps every exited container until it is removed (asked for in
 * gliderlabs' tracker: a crash-looping or briefly stopped container keeps its place in Consul).
 */
export function keepsRegistration(deregister: DrainerOptions['deregister'], exitCode: number): boolean {
  if (deregister === 'never') return true
  return deregister === 'on-success' && exitCode !== 0 && (exitCode & 128) === 0
}

/**
 * Maintenance is how a container is taken out of rotation without deregistering it: while paused, from the stop
 * signal until it exits (so proxies stop sending new requests while in-flight ones finish), and after a failed exit
 * under --deregister=on-success. Maintenance that someone else set (reason without our prefix) is never lifted.
 */
export class Drainer {
  /** Containers that got a terminating signal → when; their instances stay in maintenance until they die. */
  private readonly stopping = new Map<string, number>()

  constructor(
    private readonly consul: ConsulClient,
    private readonly writer: ConsulWriter,
    private readonly opts: DrainerOptions,
  ) {}

  isStopping(containerId: string): boolean {
    return this.stopping.has(containerId)
  }

  /** The kill event: drains at once when the signal stops the container (isStopSignal). */
  async onKill(containerId: string, signal: string, stopSignal: number | null): Promise<void> {
    if (!isStopSignal(signal, stopSignal)) return
    this.stopping.set(containerId, Date.now())
    await this.setContainer(containerId, true, `container is stopping (signal ${signal})`)
  }

  /** Started again, unpaused, dead or gone: no longer stopping. */
  forget(containerId: string): void {
    this.stopping.delete(containerId)
  }

  /** Keeps only the containers still running (those that died while the event stream was down never said so). */
  retainOnly(running: ReadonlySet<string>): void {
    for (const id of this.stopping.keys()) if (!running.has(id)) this.stopping.delete(id)
  }

  pause(containerId: string): Promise<void> {
    return this.setContainer(containerId, true, 'container paused')
  }

  /**
   * The die event. Under --deregister=on-success a non-zero exit keeps the registrations, in maintenance: true then,
   * and the caller must not deregister.
   */
  async keepsAfterExit(containerId: string, exitCode: number): Promise<boolean> {
    this.stopping.delete(containerId)
    if (!keepsRegistration(this.opts.deregister, exitCode)) return false
    await this.setContainer(
      containerId,
      true,
      `container exited with code ${exitCode} (--deregister=${this.opts.deregister} keeps it)`,
    )
    return true
  }

  /** Under --deregister on-success or never, containers of ours that exited and are kept (or restarting) stay. */
  async retainedContainers(
    all: readonly ContainerSummary[],
    registeredContainers: ReadonlySet<string>,
    inspect: (id: string) => Promise<ContainerInspect | null>,
  ): Promise<Set<string>> {
    const keep = new Set<string>()
    if (this.opts.deregister === 'always') return keep
    for (const s of all) {
      if (s.State === 'running' || s.State === 'paused' || !registeredContainers.has(s.Id)) continue
      const c = await inspect(s.Id)
      if (
        c &&
        !c.State.Running &&
        (c.State.Status === 'restarting' || keepsRegistration(this.opts.deregister, c.State.ExitCode))
      )
        keep.add(c.Id)
    }
    return keep
  }

  /**
   * Brings maintenance in line with the containers' state: on for paused, stopping and retained ones, off where we set
   * it and the reason is gone. `owned` (service ID → container) limits it to registrations of ours. Returns the number
   * of writes that failed.
   */
  async settle(
    views: readonly DrainView[],
    retained: ReadonlySet<string>,
    owned: ReadonlyMap<string, string>,
  ): Promise<number> {
    const checks = await this.consul.agentChecks()
    const ours = new Map<string, boolean>() // service ID → maintenance set by us?
    for (const ch of Object.values(checks)) {
      if (ch.CheckID.startsWith('_service_maintenance:'))
        ours.set(ch.ServiceID, (ch.Notes ?? '').startsWith(MAINT_PREFIX))
    }
    let failures = 0
    const now = Date.now()
    for (const v of views) {
      const since = this.stopping.get(v.containerId)
      if (since !== undefined && now - since > DRAIN_STALE_MS) this.stopping.delete(v.containerId)
      const reason = v.paused ? 'container paused' : this.stopping.has(v.containerId) ? 'container is stopping' : null
      for (const s of v.services) {
        const id = s.registration.ID
        if (!owned.has(id)) continue
        if (reason && !ours.has(id)) failures += (await this.set(id, true, reason)) ? 0 : 1
        else if (!reason && ours.get(id) === true) failures += (await this.set(id, false, '')) ? 0 : 1
      }
    }
    for (const [id, containerId] of owned) {
      if (retained.has(containerId) && !ours.has(id))
        failures += (await this.set(id, true, `container exited (--deregister=${this.opts.deregister} keeps it)`))
          ? 0
          : 1
    }
    return failures
  }

  /** Maintenance of every service of ours that belongs to the container, as the agent has them now. */
  private async setContainer(containerId: string, enable: boolean, reason: string): Promise<void> {
    const agent = await this.consul.agentServices()
    let failures = 0
    for (const o of ownedServices(agent, this.opts.hostId).values())
      if (o.containerId === containerId && !(await this.set(o.id, enable, reason))) failures++
    throwIfFailed(failures, `maintenance ${enable ? 'on' : 'off'} write(s) failed`)
  }

  private set(serviceId: string, enable: boolean, reason: string): Promise<boolean> {
    return this.writer.run(
      enable ? 'maintenance_on' : 'maintenance_off',
      () => this.consul.setServiceMaintenance(serviceId, enable, `${MAINT_PREFIX}${reason}`),
      { id: serviceId, ...(enable ? { reason } : {}) },
    )
  }
}
