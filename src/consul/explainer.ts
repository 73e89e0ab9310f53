import { LRUCache } from 'lru-cache'
import type { Logger } from '../log.js'
import type { ConsulClient, HealthEntry } from './client.js'
import type { ConsulApiError } from './errors.js'

/** A service as the proxy names it (structurally the resolver's ServiceKey; the port plays no part here). */
export interface ExplainedService {
  readonly service: string
  readonly tag: string | null
  readonly datacenter: string | null
}

export type ExplanationKind =
  | 'unknown-service' // Consul's catalog has no instance of it
  | 'not-readable' // the explainer's own token may not read it
  | 'all-critical' // instances exist, none passing (critical checks, maintenance)
  | 'dns-hidden' // the API lists passing instances, DNS returns none: the agent's DNS token (ACLs) or another agent
  | 'api-failed' // the HTTP API could not be asked

export interface Explanation {
  readonly kind: ExplanationKind
  readonly text: string
  readonly at: number
}

export interface ExplainerOptions {
  client: ConsulClient
  log: Logger
  /** How long an explanation is reused before the API is asked again. */
  ttlMs?: number
  /**
   * Lookups per second at most, for names the catalog does not list (a flood of 503s for made-up Host names must not
   * flood Consul), and as many again for services it lists.
   */
  lookupsPerSecond?: number
  /** Names remembered (LRU) that the catalog does not list: Host routing lets clients choose them. */
  maxServices?: number
  /** Services remembered (LRU) that the catalog lists; clients cannot add to these. */
  maxListed?: number
}

/** Explanations of services the catalog has instances of: a name a client made up never gets one. */
const LISTED_KINDS: ReadonlySet<ExplanationKind> = new Set(['all-critical', 'dns-hidden'])

/** Lookups allowed per one-second window. */
class LookupBudget {
  private readonly perSecond: number
  private windowStart = 0
  private used = 0
  constructor(perSecond: number) {
    this.perSecond = perSecond
  }
  take(now: number): boolean {
    if (now - this.windowStart >= 1000) {
      this.windowStart = now
      this.used = 0
    }
    if (this.used >= this.perSecond) return false
    this.used++
    return true
  }
}

/**
 * Why does Consul list no instance of a service? Asked by the proxy while it writes a no-instance 503 (never for a
 * service that has one), answered synchronously from a cache; a missing or old explanation is looked up in the
 * background through Consul's HTTP API (`/v1/health/service/<name>`), one lookup per service at a time, rate-limited,
 * so the first 503 of a service may carry no explanation and the next ones do. Each new explanation is logged once;
 * /status lists the current ones.
 *
 * Services the catalog lists (instances all critical, or hidden from DNS) are kept apart from names it does not list,
 * with their own cache and lookup budget: a client flooding 503s with made-up Host names can neither evict the
 * explanation of a real service that is down nor take the lookups it needs to stay current.
 */
export class ConsulExplainer {
  private readonly client: ConsulClient
  private readonly log: Logger
  private readonly ttlMs: number
  private readonly listed: LRUCache<string, Explanation & { service: ExplainedService }>
  private readonly unlisted: LRUCache<string, Explanation & { service: ExplainedService }>
  private readonly listedBudget: LookupBudget
  private readonly unlistedBudget: LookupBudget
  private readonly inFlight = new Set<string>()
  private closed = false

  constructor(opts: ExplainerOptions) {
    this.client = opts.client
    this.log = opts.log.child({ module: 'explainer' })
    this.ttlMs = opts.ttlMs ?? 5000
    this.listedBudget = new LookupBudget(opts.lookupsPerSecond ?? 10)
    this.unlistedBudget = new LookupBudget(opts.lookupsPerSecond ?? 10)
    this.listed = new LRUCache({ max: opts.maxListed ?? 256 })
    this.unlisted = new LRUCache({ max: opts.maxServices ?? 256 })
  }

  /** The cached sentence for this service (null when none yet); starts a lookup when it is missing or old. */
  explain(key: ExplainedService): string | null {
    const id = idOf(key)
    const listed = this.listed.get(id)
    const cached = listed ?? this.unlisted.get(id)
    const now = Date.now()
    if (!cached || now - cached.at > this.ttlMs) this.lookUp(key, id, now, listed !== undefined)
    return cached?.text ?? null
  }

  /** The explanation for a service now, looking it up if needed (tests, `consul-lb doctor`). */
  async explainNow(key: ExplainedService): Promise<Explanation> {
    const e = await this.compute(key)
    this.remember(idOf(key), key, e)
    return e
  }

  /** For /status: the current explanation of every service that had a no-instance answer lately. */
  status(): {
    service: string
    tag: string | null
    datacenter: string | null
    kind: string
    why: string
    ageMs: number
  }[] {
    const now = Date.now()
    return [...this.listed.values(), ...this.unlisted.values()].map((e) => ({
      service: e.service.service,
      tag: e.service.tag,
      datacenter: e.service.datacenter,
      kind: e.kind,
      why: e.text,
      ageMs: now - e.at,
    }))
  }

  close(): void {
    this.closed = true
  }

  private lookUp(key: ExplainedService, id: string, now: number, isListed: boolean): void {
    if (this.closed || this.inFlight.has(id)) return
    // Over budget: the next 503 of this service asks again.
    if (!(isListed ? this.listedBudget : this.unlistedBudget).take(now)) return
    this.inFlight.add(id)
    this.compute(key)
      .then((e) => this.remember(id, key, e))
      .finally(() => this.inFlight.delete(id))
  }

  private remember(id: string, key: ExplainedService, e: Explanation): void {
    if (this.closed) return
    const wasListed = this.listed.has(id)
    const previous = this.listed.get(id) ?? this.unlisted.get(id)
    // A listed service whose lookup failed stays listed: a failing API must not demote it to the flood's cache.
    const isListed = LISTED_KINDS.has(e.kind) || (wasListed && e.kind === 'api-failed')
    ;(isListed ? this.listed : this.unlisted).set(id, { ...e, service: key })
    ;(isListed ? this.unlisted : this.listed).delete(id)
    if (previous?.text !== e.text)
      this.log.warn(
        {
          code: 'CLB_NO_HEALTHY_INSTANCE',
          service: key.service,
          tag: key.tag,
          datacenter: key.datacenter,
          why: e.kind,
        },
        `why ${key.service} has no instance: ${e.text}`,
      )
  }

  /** Never rejects: a failed lookup is itself the explanation ("could not ask"). */
  private async compute(key: ExplainedService): Promise<Explanation> {
    const at = Date.now()
    let entries: HealthEntry[]
    let filtered: boolean
    try {
      ;({ entries, filteredByAcls: filtered } = await this.client.healthService(key.service, key))
    } catch (err) {
      const e = err as ConsulApiError
      return {
        kind: e.code === 'CLB_CONSUL_ACL_DENIED' ? 'not-readable' : 'api-failed',
        text: `Consul's HTTP API could not say why (${e.code}: ${e.message})`,
        at,
      }
    }
    return { ...explainEntries(key, entries, filtered, this.client.aclDefaultPolicy), at }
  }
}

/** The sentence for what `/v1/health/service` answered (pure: unit-tested without Consul). */
export function explainEntries(
  key: ExplainedService,
  entries: readonly HealthEntry[],
  filteredByAcls: boolean,
  aclDefaultPolicy: 'allow' | 'deny' | null,
): { kind: ExplanationKind; text: string } {
  const name = `"${key.service}"${key.tag ? ` with tag "${key.tag}"` : ''}${key.datacenter ? ` in datacenter ${key.datacenter}` : ''}`
  if (entries.length === 0) {
    if (filteredByAcls)
      return {
        kind: 'not-readable',
        text: `the token of --consul may not read ${name} (its instances were filtered by ACLs), so the HTTP API cannot say why`,
      }
    return {
      kind: 'unknown-service',
      text:
        aclDefaultPolicy === 'deny'
          ? `Consul's catalog lists no instance of ${name} readable with the token of --consul: an unknown service, or one that token may not read (ACLs, default deny)`
          : `Consul's catalog has no instance of ${name}: an unknown service (a typo in the route or Host, or not registered)`,
    }
  }
  let passing = 0
  let warning = 0
  let maintenance = 0
  let critical = 0
  let failing: { name: string; output: string } | null = null
  for (const e of entries) {
    const checks = e.Checks ?? []
    if (checks.some((c) => c.CheckID.startsWith('_service_maintenance') || c.CheckID === '_node_maintenance')) {
      maintenance++
      continue
    }
    const bad = checks.find((c) => c.Status === 'critical')
    if (bad) {
      critical++
      failing ??= { name: bad.Name || bad.CheckID, output: (bad.Output ?? '').trim().split('\n')[0]!.slice(0, 160) }
    } else if (checks.some((c) => c.Status === 'warning')) warning++
    else passing++
  }
  if (passing + warning > 0) {
    const listed = `the catalog has ${passing} passing${warning ? ` and ${warning} warning` : ''} instance(s) of ${name} but DNS returns none`
    return {
      kind: 'dns-hidden',
      text:
        aclDefaultPolicy === 'deny'
          ? `${listed}: the agent's DNS token (acl.tokens.dns, else acl.tokens.default) lacks service:read / node:read`
          : `${listed}: is --dns asking another agent or datacenter than --consul, or did they just appear (negative answers are cached for --negative-ttl-ms)?`,
    }
  }
  const parts = [
    critical
      ? `${critical} critical${failing ? ` (check "${failing.name}": ${failing.output || 'no output'})` : ''}`
      : '',
    maintenance ? `${maintenance} in maintenance` : '',
  ].filter(Boolean)
  return {
    kind: 'all-critical',
    text: `every instance of ${name} is failing its checks: ${parts.join(', ')}`,
  }
}

function idOf(k: ExplainedService): string {
  return `${k.service}\0${k.tag ?? ''}\0${k.datacenter ?? ''}`
}
