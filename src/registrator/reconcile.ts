import type { AgentService } from '../consul/client.js'
import { type DesiredService, META_CONTAINER, META_OWNER, META_SPEC } from './desired.js'

/**
 * Reconcile is a diff, not a rewrite: a service whose registration hash is unchanged is not registered again, because
 * every register bumps the catalog index and wakes every blocking query and DNS cache that watches it.
 */

export interface OwnedService {
  readonly id: string
  readonly name: string
  readonly containerId: string
  /** The registration hash we stored in Meta; null for an owned registration written before hashes existed. */
  readonly hash: string | null
}

export interface ReconcilePlan {
  readonly register: DesiredService[]
  readonly deregister: OwnedService[]
  /** Desired IDs that exist in Consul but carry no mark of ours (or another host's): never touched. */
  readonly conflicts: string[]
  readonly unchanged: number
}

/** The agent's services this registrator created (Meta owner == hostId). Everything else is invisible to it. */
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

export interface PlanScope {
  /** Owned services that may be deregistered when no longer desired (one container's, or all). */
  readonly mayRemove: (owned: OwnedService) => boolean
}

export function planReconcile(
  desired: readonly DesiredService[],
  agent: Readonly<Record<string, AgentService>>,
  hostId: string,
  scope: PlanScope,
): ReconcilePlan {
  const owned = ownedServices(agent, hostId)
  const register: DesiredService[] = []
  const conflicts: string[] = []
  let unchanged = 0
  const wanted = new Set<string>()
  for (const d of desired) {
    const id = d.registration.ID
    wanted.add(id)
    const mine = owned.get(id)
    if (mine) {
      if (mine.hash === d.hash) unchanged++
      else register.push(d)
    } else if (agent[id]) {
      conflicts.push(id)
    } else {
      register.push(d)
    }
  }
  const deregister = [...owned.values()].filter((o) => !wanted.has(o.id) && scope.mayRemove(o))
  return { register, deregister, conflicts, unchanged }
}
