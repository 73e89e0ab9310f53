import type { AgentService } from '../consul/client.js'
import { type DesiredService, META_CONTAINER, META_OWNER, META_SPEC } from './desired.js'

/**
 * Reconcile is a diff, not a rewrite: a service whose registration hash is unchanged is not registered again, because
 * every register bumps the catalog index and wakes every blocking query and DNS cache that watches it.
 *
 * What this registrator may touch: its own registrations (Meta owner == host id), and the ones gliderlabs/registrator
 * wrote on this host, which it takes over. Everything else (another host's, another tool's, hand-made) is never
 * written, drained or removed.
 */

export interface OwnedService {
  readonly id: string
  readonly name: string
  /** The container's full id; '' for a gliderlabs registration whose container no longer exists. */
  readonly containerId: string
  /** The registration hash we stored in Meta; null for one written before hashes existed, or by gliderlabs. */
  readonly hash: string | null
}

export interface ReconcilePlan {
  /** Registrations to write, adopted ones included. */
  readonly register: DesiredService[]
  readonly deregister: OwnedService[]
  /** Desired IDs that exist in Consul as someone else's registration: never touched. */
  readonly conflicts: Conflict[]
  /** How many of `register` take over a gliderlabs registration in place (same ID). */
  readonly adopted: number
  /** IDs in `register` that exist in Consul already (changed or adopted): rewritten in place, never undone. */
  readonly inPlace: ReadonlySet<string>
  readonly unchanged: number
}

export interface Conflict {
  readonly id: string
  readonly reason: string
}

/** The agent's services this registrator created (Meta owner == hostId). */
export function ownedServices(
  agent: Readonly<Record<string, AgentService>>,
  hostId: string,
): Map<string, OwnedService> {
  const out = new Map<string, OwnedService>()
  for (const svc of Object.values(agent)) {
    if (svc.Meta?.[META_OWNER] !== hostId) continue
    out.set(svc.ID, {
      id: svc.ID,
      name: svc.Service,
      containerId: svc.Meta[META_CONTAINER] ?? '',
      hash: svc.Meta[META_SPEC] ?? null,
    })
  }
  return out
}

/** gliderlabs' own test of "registered by us" (bridge/bridge.go serviceIDPattern): `<hostname>:<container>:<port>[:udp]`. */
const GLIDERLABS_ID = /^(.+?):([a-zA-Z0-9][a-zA-Z0-9_.-]+):[0-9]+(?::udp)?$/

/** A registration with no registrator's mark: gliderlabs wrote none, and neither does a person or another tool. */
function isUnmarked(svc: AgentService): boolean {
  return !svc.Meta?.[META_OWNER] && !(svc as { Kind?: string }).Kind
}

/**
 * Registrations gliderlabs/registrator wrote on this host, decided as its `-cleanup` decides: the ID's host part is
 * this host (gliderlabs used os.Hostname(), our default host id) and the service is on this agent (`agent` lists only
 * the local agent's services, as gliderlabs read them). One more mark is required, because gliderlabs always writes the
 * service address (the resolved host IP, -ip, or the container's): a registration without one is not gliderlabs'.
 * Keyed by ID, with the container name from the ID.
 */
export function gliderlabsServices(
  agent: Readonly<Record<string, AgentService>>,
  hostId: string,
): Map<string, { id: string; name: string; containerName: string }> {
  const out = new Map<string, { id: string; name: string; containerName: string }>()
  for (const svc of Object.values(agent)) {
    const containerName = gliderlabsContainer(svc, hostId)
    if (containerName !== null) out.set(svc.ID, { id: svc.ID, name: svc.Service, containerName })
  }
  return out
}

/** The container name in a registration gliderlabs wrote on this host (see gliderlabsServices); null if it is not one. */
function gliderlabsContainer(svc: AgentService, hostId: string): string | null {
  if (!isUnmarked(svc) || !svc.Address) return null
  const m = GLIDERLABS_ID.exec(svc.ID)
  return m && m[1] === hostId ? m[2]! : null
}

export interface PlanScope {
  /** Owned services that may be deregistered when no longer desired (one container's, or all). */
  readonly mayRemove: (owned: OwnedService) => boolean
  /**
   * Full syncs only: the containers Docker has (running or not) by name → id, and the running ones, so that gliderlabs
   * registrations of containers that are gone are removed (with `cleanup`, then under `mayRemove`), and those of
   * running containers that this registrator does not want are left alone.
   */
  readonly containers?: {
    readonly byName: ReadonlyMap<string, string>
    readonly running: ReadonlySet<string>
    /**
     * --cleanup. gliderlabs removed its dangling registrations only with -cleanup: a registration that merely looks
     * like one of its own (a person's `<host>:postgres:5432` for a database outside Docker) is removed only when the
     * user asked for exactly that, never by a plain resync.
     */
    readonly cleanup: boolean
  }
}

export function planReconcile(
  desired: readonly DesiredService[],
  agent: Readonly<Record<string, AgentService>>,
  hostId: string,
  scope: PlanScope,
): ReconcilePlan {
  const owned = ownedServices(agent, hostId)
  const register: DesiredService[] = []
  const conflicts: Conflict[] = []
  let unchanged = 0
  let adopted = 0
  const inPlace = new Set<string>()
  const wanted = new Set<string>()
  for (const d of desired) {
    const id = d.registration.ID
    wanted.add(id)
    const mine = owned.get(id)
    const existing = agent[id]
    if (mine) {
      if (mine.hash === d.hash) unchanged++
      else {
        register.push(d)
        inPlace.add(id)
      }
    } else if (!existing) {
      register.push(d)
    } else {
      const why = whyNotAdoptable(existing, d, hostId)
      if (why === null) {
        // Same ID, registered again: Consul updates the entry in place and keeps the status of checks with the same
        // ID, so the service never loses the instance (no deregister/register flap).
        register.push(d)
        inPlace.add(id)
        adopted++
      } else {
        conflicts.push({ id, reason: why })
      }
    }
  }
  const deregister = [...owned.values()].filter((o) => !wanted.has(o.id) && scope.mayRemove(o))
  if (scope.containers) {
    const { byName, running, cleanup } = scope.containers
    for (const g of gliderlabsServices(agent, hostId).values()) {
      if (wanted.has(g.id)) continue
      if (running.has(g.containerName)) {
        // gliderlabs registered more than this registrator does (every EXPOSEd port of a host-networked container, an
        // ignored port): removing it from a running container would drop live instances on migration.
        conflicts.push({
          id: g.id,
          reason: `gliderlabs registration of the running container ${g.containerName}, which this registrator does not register; left until the container stops`,
        })
        continue
      }
      const o: OwnedService = { id: g.id, name: g.name, containerId: byName.get(g.containerName) ?? '', hash: null }
      if (!cleanup) {
        conflicts.push({
          id: g.id,
          reason: `gliderlabs registration of the container ${g.containerName}, which is not running; removed only with --cleanup, as gliderlabs did`,
        })
        continue
      }
      if (scope.mayRemove(o)) deregister.push(o)
    }
  }
  return { register, deregister, conflicts, adopted, inPlace, unchanged }
}

/**
 * A registration with the ID a container wants is taken over when it carries no registrator's mark, has an address
 * (gliderlabs always wrote one), does not name another host in gliderlabs' ID form (a container's SERVICE_ID could
 * copy one: another host's gliderlabs may register on this agent), and says what this registrator would: same service
 * name and port (the address may differ: gliderlabs resolved the host name). A hand-made entry that only borrows the
 * ID shape differs in one of them, and stays a conflict.
 */
function whyNotAdoptable(existing: AgentService, d: DesiredService, hostId: string): string | null {
  if (!isUnmarked(existing)) {
    const owner = existing.Meta?.[META_OWNER]
    return owner ? `registered by the registrator of host ${owner}` : 'a Consul service of another kind'
  }
  if (!existing.Address) return 'registered without an address, which gliderlabs never wrote'
  const host = GLIDERLABS_ID.exec(existing.ID)?.[1]
  if (host !== undefined && host !== hostId) return `gliderlabs' ID form with another host's name (${host})`
  const reg = d.registration
  if (existing.Service !== reg.Name || existing.Port !== reg.Port)
    return `registered as ${existing.Service}:${existing.Port} where this container gives ${reg.Name}:${reg.Port}`
  return null
}
