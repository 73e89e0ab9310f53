import type { DnsServer } from '../config/serve.js'
import {
  isDatacenterName,
  isDnsTag,
  isDomain,
  isHostName,
  isPathPrefix,
  isPort,
  isServiceName,
  NAME_RULE,
} from '../routes/names.js'
import type { Route } from '../routes/route.js'
import { NginxError } from './errors.js'

/**
 * The emitter's last line of defence: every value that becomes nginx config text passes through here, even when it
 * was already checked by config/ (embedding users build Route objects themselves, and catalog names come straight
 * from Consul, which accepts service names such as `x; } server { listen 80`). nginx has no quoting we could trust
 * for arbitrary text, so anything outside the DNS-label / path alphabet is refused, never escaped.
 */

/** nginx's `listen`: a port, or ADDRESS:PORT with an IPv4 address, a host name, `*` or a bracketed IPv6 address. */
const LISTEN = /^(?:(?:\*|[0-9.]+|[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):)?(\d{1,5})$/
const DNS_SERVER_HOST = /^(?:[0-9.]+|[0-9A-Fa-f:.]+|[A-Za-z0-9.-]+)$/

export function isNginxListen(listen: string): boolean {
  const m = LISTEN.exec(listen)
  return m !== null && isPort(Number(m[1]))
}

function unsafe(what: string, value: unknown, origin: string): never {
  throw new NginxError(
    'CLB_NGINX_UNSAFE_NAME',
    `${origin}: ${what} ${JSON.stringify(value)} is not allowed in an nginx config (names: letters, digits, dashes, underscores, dots between labels; paths also / . _ ~ %XX)`,
  )
}

/** Throws CLB_NGINX_UNSAFE_NAME unless every field of the route is a safe name. */
export function assertRouteSafe(route: Route): void {
  const origin = `route ${commentText(route.source)}`
  if (route.host !== null && !isHostName(route.host)) unsafe('host', route.host, origin)
  if (!isPathPrefix(route.pathPrefix)) unsafe('path', route.pathPrefix, origin)
  // nginx matches locations against the decoded path: an escape is written as the byte it stands for (\xHH in the
  // regex, never the raw byte, so `;` and `{` stay out of the text). A decoded `/` or `\` would match other paths
  // in nginx than in serve (which keeps %2F encoded), and a control byte is no path: both refused.
  for (const m of route.pathPrefix.matchAll(/%([0-9A-Fa-f]{2})/g)) {
    const byte = Number.parseInt(m[1]!, 16)
    if (byte < 0x20 || byte === 0x7f || byte === 0x2f || byte === 0x5c)
      unsafe(
        `path (%${m[1]} decodes to ${byte === 0x2f ? 'a slash' : byte === 0x5c ? 'a backslash' : 'a control byte'})`,
        route.pathPrefix,
        origin,
      )
  }
  if (!isServiceName(route.service)) unsafe('service', route.service, origin)
  if (route.tag !== null && !isDnsTag(route.tag)) unsafe('tag', route.tag, origin)
  if (route.datacenter !== null && !isDatacenterName(route.datacenter)) unsafe('datacenter', route.datacenter, origin)
  if (route.port !== null && !isPort(route.port)) unsafe('port', route.port, origin)
}

/** The render settings that are written into the text as they are (checked by assertSettingsSafe). */
export interface EmittedSettings {
  dns: readonly DnsServer[]
  domain: string
  /** nginx's `listen` argument: `8080`, `127.0.0.1:8080`, `[::1]:8080`. */
  listen: string
  /** `resolver … valid=`: how long nginx caches an answer (Consul answers with TTL 0 by default). */
  resolverValidS: number
  /** nginx's default is 30 s: a request would hang that long before its 502 while Consul DNS is down. */
  resolverTimeoutS: number
  /** Idle upstream connections kept per worker and upstream (upstream style only). */
  keepalive: number
  connectTimeoutS: number
  readTimeoutS: number
  /** nginx size syntax (`64k`, `1m`): request bodies up to this stay in memory. */
  clientBodyBufferSize: string
  /** Mark the catch-all server `default_server` (it is written first either way). */
  defaultServer: boolean
}

/** nginx sizes: a number with an optional k or m suffix. */
export const NGINX_SIZE = /^[1-9]\d{0,8}[kKmM]?$/

/** Throws CLB_NGINX_UNSAFE_NAME unless every setting written into the text is safe (the numbers too: an embedding
 * caller without TypeScript could hand over a string such as `16; evil`). */
export function assertSettingsSafe(s: EmittedSettings): void {
  if (!isDomain(s.domain)) unsafe('domain', s.domain, 'settings')
  for (const d of s.dns) {
    if (typeof d.host !== 'string' || !DNS_SERVER_HOST.test(d.host) || !isPort(d.port))
      unsafe('DNS server', `${d.host}:${d.port}`, 'settings')
  }
  if (!isNginxListen(s.listen)) unsafe('listen address', s.listen, 'settings')
  if (typeof s.clientBodyBufferSize !== 'string' || !NGINX_SIZE.test(s.clientBodyBufferSize))
    unsafe('client body buffer size', s.clientBodyBufferSize, 'settings')
  for (const key of ['resolverValidS', 'resolverTimeoutS', 'keepalive', 'connectTimeoutS', 'readTimeoutS'] as const) {
    const n = s[key]
    if (!Number.isInteger(n) || n < 1) unsafe(`${key} (a whole number >= 1)`, n, 'settings')
  }
}

/**
 * Text for a `#` comment: nginx comments end at the line break, so a newline in a route's source text is the only
 * way out of a comment. Everything outside printable ASCII becomes `?`.
 */
export function commentText(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?')
}

export interface RejectedName {
  name: string
  reason: string
}

export interface CatalogSelection {
  /** Safe, lower-cased, de-duplicated, sorted service names. */
  services: string[]
  /** Names Consul holds that the emitter refused to write, with why. */
  rejected: RejectedName[]
}

/**
 * Picks the services a catalog-mode config may name. Consul's catalog accepts almost any service name; what is not a
 * label (letters, digits, `-`, `_`: routes/names.ts) is either unreachable through DNS (a dot reads as a tag lookup) or
 * nginx syntax, and is refused. `consul` itself is excluded: it would expose Consul's server RPC port.
 */
export function selectCatalogServices(
  catalog: Record<string, unknown>,
  exclude: readonly string[] = ['consul'],
): CatalogSelection {
  const seen = new Set<string>()
  const rejected: RejectedName[] = []
  for (const name of Object.keys(catalog)) {
    if (!isServiceName(name)) {
      rejected.push({ name, reason: `not a name Consul DNS answers for that config may hold (${NAME_RULE})` })
      continue
    }
    const lower = name.toLowerCase()
    if (exclude.includes(lower)) continue
    seen.add(lower)
  }
  rejected.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  return { services: [...seen].sort(), rejected }
}
