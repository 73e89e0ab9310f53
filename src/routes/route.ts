import { ConfigError } from '../errors.js'
import {
  isDatacenterName,
  isDnsTag,
  isHostName,
  isPathPrefix,
  isPort,
  isServiceName,
  NAME_RULE,
  TAG_RULE,
} from './names.js'

/**
 * One configured route: which requests (Host and/or path prefix) go to which Consul service, and how its instances
 * are found. Shared by the proxy and the nginx emitter, so both read a config file the same way.
 *
 * `port === null` means "ports come from SRV records" (Consul's registered port of each instance);
 * a fixed port means "addresses from A/AAAA records, this port", like the tutorials'
 * `set $endpoint svc.service.consul; proxy_pass http://$endpoint:5000`.
 */
export interface Route {
  /** The text the route was written as (or a synthesized form for object routes); used in /status and nginx comments. */
  readonly source: string
  /** Lower-cased host without port, or null for "any host". May start with `*.`. */
  readonly host: string | null
  /** Path prefix, `/` for "any path"; matched on segment boundaries (`/api` matches `/api/x`, not `/apix`). */
  readonly pathPrefix: string
  readonly service: string
  readonly tag: string | null
  readonly datacenter: string | null
  readonly port: number | null
  /** Remove `pathPrefix` from the path before forwarding (`/api/users` → `/users`). */
  readonly stripPrefix: boolean
  /** The route carries WebSocket upgrades (the proxy always proxies upgrades; the nginx emitter adds headers). */
  readonly websocket: boolean
}

/** The object form a config file may use instead of the string form. */
export interface RouteObject {
  host?: string
  path?: string
  service: string
  port?: number
  tag?: string
  datacenter?: string
  stripPrefix?: boolean
  websocket?: boolean
}

export const ROUTE_SYNTAX = 'expected [HOST][/PATH]=SERVICE[:PORT][,strip][,ws][,tag=TAG][,dc=DC]'

/**
 * Parses `mydemo.example.com=mydemo`, `mydemo.example.com=mydemo:5000`, `/api=api,strip`,
 * `shop.example.com/cart=cart`. `field` names the flag or config key in errors.
 */
export function parseRoute(text: string, field = '--route'): Route {
  const where = `${field} "${text}"`
  const eq = text.indexOf('=')
  if (eq <= 0) throw new ConfigError(where, ROUTE_SYNTAX)
  const match = text.slice(0, eq).trim()
  const [target, ...opts] = text
    .slice(eq + 1)
    .trim()
    .split(',')
  const slash = match.indexOf('/')
  const host = slash === -1 ? match : match.slice(0, slash)
  const path = slash === -1 ? '/' : match.slice(slash)
  const colon = (target ?? '').lastIndexOf(':')
  const service = colon === -1 ? (target ?? '') : target!.slice(0, colon)
  const portText = colon === -1 ? null : target!.slice(colon + 1)
  const obj: RouteObject = { service, path }
  if (host !== '') obj.host = host
  if (portText !== null) {
    if (!/^\d+$/.test(portText)) throw new ConfigError(where, `port "${portText}" is not a number; ${ROUTE_SYNTAX}`)
    obj.port = Number(portText)
  }
  for (const raw of opts) {
    const opt = raw.trim()
    if (opt === 'strip') obj.stripPrefix = true
    else if (opt === 'ws') obj.websocket = true
    else if (opt.startsWith('tag=')) obj.tag = opt.slice(4)
    else if (opt.startsWith('dc=')) obj.datacenter = opt.slice(3)
    else throw new ConfigError(where, `unknown option "${opt}"; ${ROUTE_SYNTAX}`)
  }
  return routeFromObject(obj, where, text)
}

export function routeFromObject(obj: RouteObject, where: string, source?: string): Route {
  const host = obj.host === undefined || obj.host === '' ? null : obj.host.toLowerCase()
  const pathPrefix = normalisePrefix(obj.path ?? '/')
  if (host !== null && !isHostName(host))
    throw new ConfigError(where, `host "${obj.host}" is not a valid host name; ${ROUTE_SYNTAX}`)
  if (!isPathPrefix(pathPrefix))
    throw new ConfigError(where, `path "${obj.path}" must start with / and use only letters, digits, - . _ ~ / and %XX`)
  if (!isServiceName(obj.service))
    throw new ConfigError(
      where,
      `service "${obj.service}" is not a Consul service name that DNS answers for and config may hold (${NAME_RULE}); ${ROUTE_SYNTAX}`,
    )
  if (obj.port !== undefined && !isPort(obj.port))
    throw new ConfigError(where, `port ${obj.port} is out of range 1-65535`)
  if (obj.tag !== undefined && !isDnsTag(obj.tag))
    throw new ConfigError(where, `tag "${obj.tag}" is not a tag DNS can ask for (${TAG_RULE})`)
  if (obj.datacenter !== undefined && !isDatacenterName(obj.datacenter))
    throw new ConfigError(where, `datacenter "${obj.datacenter}" is not a datacenter name (${NAME_RULE})`)
  if (obj.stripPrefix === true && pathPrefix === '/')
    throw new ConfigError(where, 'strip needs a path prefix to strip (for example /api=api,strip)')
  return {
    source: source ?? describeRoute(host, pathPrefix, obj),
    host,
    pathPrefix,
    service: obj.service.toLowerCase(),
    tag: obj.tag?.toLowerCase() ?? null,
    datacenter: obj.datacenter?.toLowerCase() ?? null,
    port: obj.port ?? null,
    stripPrefix: obj.stripPrefix ?? false,
    websocket: obj.websocket ?? false,
  }
}

function normalisePrefix(path: string): string {
  if (path.length > 1 && path.endsWith('/')) return path.replace(/\/+$/, '') || '/'
  return path
}

function describeRoute(host: string | null, path: string, obj: RouteObject): string {
  let s = `${host ?? ''}${path === '/' && host !== null ? '' : path}=${obj.service}`
  if (obj.port !== undefined) s += `:${obj.port}`
  if (obj.stripPrefix) s += ',strip'
  if (obj.websocket) s += ',ws'
  if (obj.tag) s += `,tag=${obj.tag}`
  if (obj.datacenter) s += `,dc=${obj.datacenter}`
  return s
}

/** The DNS name Consul answers for a route's instances: `[tag.]service.service[.dc].domain`. */
export function serviceDnsName(service: string, tag: string | null, datacenter: string | null, domain: string): string {
  return `${tag === null ? '' : `${tag}.`}${service}.service.${datacenter === null ? '' : `${datacenter}.`}${domain}`
}
