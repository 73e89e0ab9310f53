import { LRUCache } from 'lru-cache'
import { isDatacenterName, isDnsTag, isServiceName } from '../routes/names.js'
import type { Route } from '../routes/route.js'

/** A configured route, prepared for matching. */
export interface CompiledRoute<T> {
  readonly route: Route
  readonly target: T
  readonly prefix: string
  /** `.example.com` for a `*.example.com` route, else null. */
  readonly wildcard: string | null
}

export interface RouteMatch<T> {
  target: T
  route: Route | null
  /** Characters to strip from the start of the path (0: forward the path as is). */
  stripLength: number
}

export interface HostRoutingOptions {
  enabled: boolean
  domain: string
  allowServices: readonly string[]
  allowConsulService: boolean
}

/** What Host-based routing decided about a Host header: a service, or why not. */
export type HostDecision =
  | { kind: 'service'; service: string; tag: string | null; datacenter: string | null; key: string }
  | { kind: 'none' }
  | { kind: 'forbidden'; service: string; reason: string }

/**
 * Matches requests to targets: configured routes first, then Host `<svc>.service.<domain>` names. Among configured
 * routes the choice is nginx's, so that `serve` and the configs `consul-lb nginx` writes route alike: the routes of
 * the host are those naming it exactly, else those of the longest `*.` wildcard covering it, plus the host-less ones;
 * among them the longest path prefix (on segment boundaries) wins, a host's own route over a host-less one with the
 * same prefix, then the order given. The tables are built once; per request it costs a Map lookup and a short scan.
 */
export class Router<T> {
  private readonly byHost = new Map<string, RouteList<T>>()
  /** Wildcard suffixes, longest first, each with its routes plus the host-less ones. */
  private readonly wildcards: { suffix: string; routes: RouteList<T> }[] = []
  private readonly anyHost: RouteList<T>
  private readonly hostOpts: HostRoutingOptions
  private readonly domainSuffix: string
  private readonly allow: Set<string> | null
  /** Parsed Host decisions; bounded because clients choose Host headers. */
  // Sized above the services a large cluster routes by Host (a miss only re-parses the name, but should be rare).
  private readonly hostCache = new LRUCache<string, HostDecision>({ max: 16384 })

  constructor(routes: readonly { route: Route; target: T }[], hostOpts: HostRoutingOptions) {
    this.hostOpts = hostOpts
    this.domainSuffix = `.${hostOpts.domain}`
    this.allow = hostOpts.allowServices.length > 0 ? new Set(hostOpts.allowServices) : null
    const compiled = routes.map(({ route, target }) => ({
      route,
      target,
      prefix: route.pathPrefix,
      wildcard: route.host?.startsWith('*.') ? route.host.slice(1) : null,
    }))
    const hostless = compiled.filter((c) => c.route.host === null)
    this.anyHost = new RouteList(bySpecificity(hostless))
    for (const c of compiled) {
      const h = c.route.host
      if (h === null) continue
      if (c.wildcard !== null) {
        if (!this.wildcards.some((w) => w.suffix === c.wildcard)) {
          this.wildcards.push({
            suffix: c.wildcard,
            routes: new RouteList(bySpecificity([...compiled.filter((x) => x.route.host === h), ...hostless])),
          })
        }
      } else if (!this.byHost.has(h)) {
        this.byHost.set(h, new RouteList(bySpecificity([...compiled.filter((x) => x.route.host === h), ...hostless])))
      }
    }
    this.wildcards.sort((a, b) => b.suffix.length - a.suffix.length)
  }

  /** `host` is lower-case without port; `url` is the request target (path and query). */
  matchRoute(host: string, url: string): RouteMatch<T> | null {
    let list = this.byHost.get(host)
    if (list === undefined) {
      list = this.anyHost
      for (let i = 0; i < this.wildcards.length; i++) {
        const w = this.wildcards[i]!
        if (covers(w.suffix, host)) {
          list = w.routes
          break
        }
      }
    }
    const candidates = list.candidates(url)
    for (let i = 0; i < candidates.length; i++) {
      const c = candidates[i]!
      if (prefixMatches(url, c.prefix))
        return { target: c.target, route: c.route, stripLength: c.route.stripPrefix ? c.prefix.length : 0 }
    }
    return null
  }

  /** Host-based routing: `<svc>.service.<domain>`, `<tag>.<svc>.service.<domain>`, `<svc>.service.<dc>.<domain>`. */
  decideHost(host: string): HostDecision {
    if (!this.hostOpts.enabled || !host.endsWith(this.domainSuffix)) return NONE
    let d = this.hostCache.get(host)
    if (d === undefined) {
      d = this.parseHost(host)
      this.hostCache.set(host, d)
    }
    return d
  }

  private parseHost(host: string): HostDecision {
    const labels = host.slice(0, -this.domainSuffix.length).split('.')
    let service: string,
      tag: string | null = null,
      dc: string | null = null
    // Only `.service.` names: never node, addr, query or anything else Consul's DNS knows (not an open proxy).
    if (labels.length >= 2 && labels.length <= 3 && labels[1] === 'service') {
      service = labels[0]!
      dc = labels[2] ?? null
    } else if (labels.length >= 3 && labels.length <= 4 && labels[2] === 'service') {
      tag = labels[0]!
      service = labels[1]!
      dc = labels[3] ?? null
    } else {
      return NONE
    }
    if (!isServiceName(service) || (tag !== null && !isDnsTag(tag)) || (dc !== null && !isDatacenterName(dc)))
      return NONE
    if (service === 'consul' && !this.hostOpts.allowConsulService) {
      return {
        kind: 'forbidden',
        service,
        reason:
          "the 'consul' service (Consul's own API) is not reachable through the load balancer (allowConsulService)",
      }
    }
    if (this.allow !== null && !this.allow.has(service)) {
      return { kind: 'forbidden', service, reason: `service ${service} is not in allowServices` }
    }
    // The cache key of the target, computed once per Host name rather than per request.
    return { kind: 'service', service, tag, datacenter: dc, key: `${tag ?? ''}/${service}/${dc ?? ''}` }
  }
}

const NONE: HostDecision = { kind: 'none' }

/** Lists this short are scanned as they are; longer ones are indexed by first path segment. */
const SCAN_MAX = 8

/**
 * The routes one request may match, most specific first, indexed by the first segment of their path prefix, so a
 * match costs the same with 5 routes or 5 000 (the cost of a request must not grow with the configuration). A prefix
 * matches only on segment boundaries, so a URL can only match prefixes with its own first segment, or `/`: the
 * candidates of a URL are those of its first segment followed by the `/` routes, which keeps the global order (a
 * longer prefix first; `/` is the shortest).
 */
class RouteList<T> {
  private readonly all: CompiledRoute<T>[]
  private readonly bySegment: Map<string, CompiledRoute<T>[]> | null = null
  private readonly root: CompiledRoute<T>[]

  constructor(sorted: CompiledRoute<T>[]) {
    this.all = sorted
    this.root = sorted.filter((c) => c.prefix.length === 1)
    if (sorted.length <= SCAN_MAX) return
    const by = new Map<string, CompiledRoute<T>[]>()
    for (const c of sorted) {
      if (c.prefix.length === 1) continue
      const seg = firstSegment(c.prefix)
      let list = by.get(seg)
      if (list === undefined) {
        list = []
        by.set(seg, list)
      }
      list.push(c)
    }
    for (const list of by.values()) list.push(...this.root)
    this.bySegment = by
  }

  candidates(url: string): readonly CompiledRoute<T>[] {
    if (this.bySegment === null) return this.all
    return this.bySegment.get(firstSegment(url)) ?? this.root
  }
}

/** `/api/v1?x` → `api`; `/` → ``. */
function firstSegment(path: string): string {
  let end = 1
  while (end < path.length) {
    const c = path.charCodeAt(end)
    if (c === 47 /* / */ || c === 63 /* ? */) break
    end++
  }
  return path.slice(1, end)
}

/**
 * Longest prefix first; for equal prefixes a route naming a host before a host-less one; then the order given
 * (Array.prototype.sort is stable).
 */
function bySpecificity<T>(routes: CompiledRoute<T>[]): CompiledRoute<T>[] {
  return [...routes].sort(
    (a, b) => b.prefix.length - a.prefix.length || (a.route.host === null ? 1 : 0) - (b.route.host === null ? 1 : 0),
  )
}

/** `*.example.com` covers `a.example.com` and `a.b.example.com`, not `example.com`. */
function covers(suffix: string, host: string): boolean {
  return host.length > suffix.length && host.endsWith(suffix)
}

/** `/api` matches `/api`, `/api/x` and `/api?q`, never `/apix`; `/` matches everything. */
export function prefixMatches(url: string, prefix: string): boolean {
  if (prefix.length === 1) return true
  if (!url.startsWith(prefix)) return false
  if (url.length === prefix.length) return true
  const c = url.charCodeAt(prefix.length)
  return c === 47 /* / */ || c === 63 /* ? */
}

/** The path forwarded after stripping a prefix: `/api/users?x` → `/users?x`, `/api` → `/`, `/api?x` → `/?x`. */
export function stripPath(url: string, n: number): string {
  const rest = url.slice(n)
  return rest.length === 0 ? '/' : rest.charCodeAt(0) === 47 ? rest : `/${rest}`
}

/** Host header → lower-case host without port (`[::1]:8080` → `[::1]`). */
export function hostOf(header: string | undefined): string {
  if (!header) return ''
  let h = header
  if (h.charCodeAt(0) === 91 /* [ */) {
    const end = h.indexOf(']')
    h = end === -1 ? h : h.slice(0, end + 1)
  } else {
    const colon = h.indexOf(':')
    if (colon !== -1) h = h.slice(0, colon)
  }
  if (h.endsWith('.')) h = h.slice(0, -1)
  // Lower-casing allocates; most clients already send lower case.
  for (let i = 0; i < h.length; i++) {
    const c = h.charCodeAt(i)
    if (c >= 65 && c <= 90) return h.toLowerCase()
  }
  return h
}
