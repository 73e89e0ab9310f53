import { isIP } from 'node:net'
import { isServiceName, NAME_RULE } from '../routes/names.js'
import { type ConventionWarning, conventionWarning } from './errors.js'
import { splitTags } from './tags.js'

/**
 * gliderlabs/registrator's container conventions: `SERVICE_<KEY>` for every port and `SERVICE_<port>_<KEY>` for one
 * port, read from labels and from the environment, an env var winning over a label of the same name (bridge/util.go
 * serviceMetaData: "Env take precedence over labels"). The prefix is matched as written, upper case (`service_name` is
 * nobody's setting there either); the key after it case-insensitively, as registrator lower-cased it. Both as
 * gliderlabs, so a container keeps the name and settings it had when its registrations are taken over.
 *
 * Parsing never fails: a bad value becomes a ConventionWarning naming the env var/label, and the setting falls back to
 * what registrator would have done without it, so one typo does not take a container out of Consul.
 */

export interface RawAttr {
  readonly value: string
  readonly field: string
}
/** Lower-case key after the prefix (`name`, `check_http`, `version`) → value and where it came from. */
export type AttrMap = ReadonlyMap<string, RawAttr>

export interface ContainerConventions {
  /** SERVICE_<KEY>: applies to every port of the container. */
  readonly base: AttrMap
  /** SERVICE_<port>_<KEY>: applies to that port only, over `base`. */
  readonly ports: ReadonlyMap<number, AttrMap>
  readonly warnings: ConventionWarning[]
}

const PREFIX = 'SERVICE_'

export function readConventions(
  env: readonly string[] | null | undefined,
  labels: Readonly<Record<string, string>> | null | undefined,
): ContainerConventions {
  // Labels first, env second: a later write wins, which is gliderlabs' precedence.
  const raw = new Map<string, RawAttr>()
  for (const [k, v] of Object.entries(labels ?? {})) addRaw(raw, k, v)
  for (const entry of env ?? []) {
    const eq = entry.indexOf('=')
    if (eq > 0) addRaw(raw, entry.slice(0, eq), entry.slice(eq + 1))
  }

  const base = new Map<string, RawAttr>()
  const ports = new Map<number, Map<string, RawAttr>>()
  const warnings: ConventionWarning[] = []
  for (const [upperRest, attr] of raw) {
    const rest = upperRest.toLowerCase()
    // A first segment that starts with a digit is meant as a port (SERVICE_80_NAME); anything else is a key for all
    // ports (SERVICE_CHECK_HTTP, SERVICE_VERSION).
    const m = /^(\d[^_]*)(?:_(.*))?$/.exec(rest)
    if (!m) {
      base.set(rest, attr)
      continue
    }
    const port = /^\d{1,5}$/.test(m[1]!) ? Number(m[1]) : NaN
    if (!(port >= 1 && port <= 65535)) {
      warnings.push(conventionWarning(attr.field, attr.value, `"${m[1]}" is not a port (1-65535); setting ignored`))
      continue
    }
    if (!m[2]) {
      warnings.push(conventionWarning(attr.field, attr.value, 'expected SERVICE_<port>_<KEY>; setting ignored'))
      continue
    }
    let perPort = ports.get(port)
    if (!perPort) {
      perPort = new Map()
      ports.set(port, perPort)
    }
    perPort.set(m[2], attr)
  }
  return { base, ports, warnings }
}

function addRaw(raw: Map<string, RawAttr>, field: string, value: string): void {
  if (field.length > PREFIX.length && field.startsWith(PREFIX))
    raw.set(field.slice(PREFIX.length).toUpperCase(), { value, field })
}

/** What the check settings ask for; the address and port are filled in by desired.ts once they are known. */
export interface CheckSpec {
  readonly kind: 'http' | 'https' | 'tcp' | 'ttl' | 'grpc'
  /** URL path for http/https (starts with /). */
  readonly path?: string
  readonly method?: string
  /** gRPC over TLS (SERVICE_CHECK_GRPC_USE_TLS). */
  readonly grpcUseTls?: boolean
  /** Accept any certificate (SERVICE_CHECK_TLS_SKIP_VERIFY) for HTTPS and gRPC-over-TLS checks. */
  readonly tlsSkipVerify?: boolean
  readonly interval?: string
  readonly timeout?: string
  readonly ttl?: string
  readonly initialStatus?: 'passing' | 'warning' | 'critical'
  readonly deregisterAfter?: string
}

/** The settings of one service (one port), after validation. */
export interface ServiceSettings {
  readonly name: string | undefined
  readonly id: string | undefined
  readonly tags: string[]
  readonly ignore: boolean
  readonly check: CheckSpec | null
  readonly meta: Record<string, string>
}

/** Container-wide settings that choose the address (SERVICE_<port>_ variants make no sense for them). */
export interface AddressSettings {
  readonly network: string | undefined
  readonly internal: boolean | undefined
  readonly ip: string | undefined
}

/** Keys with a meaning of their own; every other key becomes Consul service Meta (registrator's rule). */
const KNOWN_KEYS = new Set([
  'name',
  'id',
  'tags',
  'ignore',
  'network',
  'internal',
  'ip',
  'check_http',
  'check_https',
  'check_tcp',
  'check_ttl',
  'check_grpc',
  'check_grpc_use_tls',
  'check_tls_skip_verify',
  'check_interval',
  'check_timeout',
  'check_http_method',
  'check_https_method',
  // The label --require-label looks for (gliderlabs' master); not Meta.
  'register',
  'check_initial_status',
  'check_deregister_after',
])
/** Keys that only make sense for the whole container (they choose its address). */
const CONTAINER_WIDE_KEYS = ['network', 'internal', 'ip'] as const
/** Script checks run commands on the Consul agent's host; registrator's docker-exec form needs Consul's script
 * checks enabled, which is a remote-execution hole. Reported, not registered. */
const UNSUPPORTED_KEYS = new Set(['check_cmd', 'check_script', 'check_docker'])

/** Go/Consul duration: "10s", "1m30s", "500ms". */
const DURATION = /^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/
/** Consul's rule for Meta keys (agent/structs ValidateServiceMetadata); `consul-` is reserved for Consul itself. */
const META_KEY = /^[A-Za-z0-9_-]{1,128}$/
const META_VALUE_MAX = 512
const TRUE_WORDS = ['true', '1', 'yes', 'on']
const FALSE_WORDS = ['false', '0', 'no', 'off']

/** Merges base and per-port attributes (per-port wins) and validates them into ServiceSettings. */
export function serviceSettings(
  conv: ContainerConventions,
  port: number,
  warnings: ConventionWarning[],
): ServiceSettings {
  const attrs = new Map(conv.base)
  for (const [k, v] of conv.ports.get(port) ?? []) attrs.set(k, v)
  const warn = (a: RawAttr, message: string) => warnings.push(conventionWarning(a.field, a.value, message))
  const get = (key: string): RawAttr | undefined => {
    const a = attrs.get(key)
    // An empty value means "not set", as in registrator (mapDefault).
    return a && a.value.trim() !== '' ? a : undefined
  }

  let name: string | undefined
  const nameAttr = get('name')
  if (nameAttr) {
    name = nameAttr.value.trim()
    // Consul accepts such names, but its DNS interface cannot answer for them: say so, and register anyway.
    if (!isServiceName(name))
      warn(
        nameAttr,
        `Consul DNS cannot answer for this name, and serve and the nginx emitter refuse it (${NAME_RULE}); registered anyway`,
      )
  }

  // gliderlabs ignores on any non-empty value (mapDefault(metadata, "ignore", "") != ""), `false` included. Reading
  // `false` as false would register, on migration, containers that were never in Consul: the value keeps gliderlabs'
  // meaning and the surprise is reported.
  const ignore = isPresent(get('ignore'), warn)

  // The address is chosen per container (addressSettings): a per-port form would otherwise be dropped without a word.
  for (const key of CONTAINER_WIDE_KEYS) {
    const a = conv.ports.get(port)?.get(key)
    if (a) warn(a, `the address is chosen per container: use SERVICE_${key.toUpperCase()}; ignored`)
  }

  const meta: Record<string, string> = {}
  for (const [key, a] of attrs) {
    if (KNOWN_KEYS.has(key)) continue
    if (UNSUPPORTED_KEYS.has(key)) {
      warn(
        a,
        'script checks are not supported (they need Consul script checks enabled); use SERVICE_CHECK_HTTP/TCP/TTL or a Docker HEALTHCHECK',
      )
      continue
    }
    if (key.startsWith('check_')) {
      warn(a, 'unknown check setting; ignored')
      continue
    }
    if (!META_KEY.test(key) || key.startsWith('consul-')) {
      warn(a, 'not usable as a Consul Meta key (letters, digits, _ and -, at most 128, not consul-*); ignored')
      continue
    }
    if (a.value.length > META_VALUE_MAX) {
      warn(a, `Meta values are limited to ${META_VALUE_MAX} characters; ignored`)
      continue
    }
    meta[key] = a.value
  }

  return {
    name,
    id: get('id')?.value.trim(),
    tags: parseTags(get('tags'), warnings),
    ignore,
    check: parseCheck(get, warn),
    meta,
  }
}

export function addressSettings(conv: ContainerConventions, warnings: ConventionWarning[]): AddressSettings {
  const present = (key: string) => {
    const a = conv.base.get(key)
    return a && a.value.trim() !== '' ? a : undefined
  }
  const internalAttr = present('internal')
  let internal: boolean | undefined
  if (internalAttr) {
    const v = internalAttr.value.trim().toLowerCase()
    if (TRUE_WORDS.includes(v)) internal = true
    else if (FALSE_WORDS.includes(v)) internal = false
    else
      warnings.push(
        conventionWarning(
          internalAttr.field,
          internalAttr.value,
          'expected true or false; the --internal setting applies',
        ),
      )
  }
  const ipAttr = present('ip')
  let ip: string | undefined
  if (ipAttr) {
    if (isIP(ipAttr.value.trim())) ip = ipAttr.value.trim()
    else warnings.push(conventionWarning(ipAttr.field, ipAttr.value, 'not an IP address; the --ip setting applies'))
  }
  return { network: present('network')?.value.trim(), internal, ip }
}

/** SERVICE_TAGS: gliderlabs' comma list (`\\,` is a comma inside a tag), checked by cleanTags. */
export function parseTags(a: RawAttr | undefined, warnings: ConventionWarning[]): string[] {
  return a ? cleanTags(splitTags(a.value), a.field, a.value, warnings) : []
}

/** Items with whitespace or control characters cannot be queried as tags and are dropped with a warning. */
export function cleanTags(
  items: readonly string[],
  field: string,
  value: string,
  warnings: ConventionWarning[],
): string[] {
  const out: string[] = []
  for (const item of items) {
    const tag = item.trim()
    if (tag === '') continue
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this refuses
    if (/[\s\x00-\x1f\x7f]/.test(tag)) {
      warnings.push(conventionWarning(field, value, `tag "${tag}" contains whitespace or control characters; dropped`))
      continue
    }
    if (!out.includes(tag)) out.push(tag)
  }
  return out
}

/**
 * gliderlabs' switches (SERVICE_IGNORE, SERVICE_CHECK_GRPC_USE_TLS, SERVICE_CHECK_TLS_SKIP_VERIFY) are on for any
 * non-empty value. A value that reads as "off" keeps that meaning, and a warning says how to really turn it off.
 */
function isPresent(a: RawAttr | undefined, warn: (a: RawAttr, m: string) => void): boolean {
  if (!a) return false
  if (FALSE_WORDS.includes(a.value.trim().toLowerCase()))
    warn(
      a,
      'any value turns this on, as in gliderlabs/registrator (false included); remove the variable to turn it off',
    )
  return true
}

function parseCheck(get: (k: string) => RawAttr | undefined, warn: (a: RawAttr, m: string) => void): CheckSpec | null {
  const duration = (key: string): string | undefined => {
    const a = get(key)
    if (!a) return undefined
    const v = a.value.trim()
    if (DURATION.test(v) && /[1-9]/.test(v)) return v
    warn(
      a,
      `expected a duration such as 10s, 1m or 500ms${key === 'check_interval' ? '; the default 10s applies' : '; not set'}`,
    )
    return undefined
  }
  // Same precedence as gliderlabs' consul adapter (consul/consul.go buildCheck): http, https, [cmd, script], ttl, tcp,
  // grpc.
  let kind: CheckSpec['kind'] | null = null
  let pathAttr: RawAttr | undefined
  const http = get('check_http')
  const https = get('check_https')
  if (http) {
    kind = 'http'
    pathAttr = http
  } else if (https) {
    kind = 'https'
    pathAttr = https
  } else if (get('check_ttl')) kind = 'ttl'
  else if (get('check_tcp')) kind = 'tcp'
  else if (get('check_grpc')) kind = 'grpc'
  if (!kind) return null

  if (kind === 'ttl') {
    const ttl = duration('check_ttl')
    if (!ttl) return null
    return { kind, ttl, ...optional(get, warn, duration) }
  }
  let path: string | undefined
  if (pathAttr) {
    path = pathAttr.value.trim()
    if (!path.startsWith('/')) {
      warn(pathAttr, 'expected a path starting with /; "/" was prepended')
      path = `/${path}`
    }
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this refuses
    if (/[\s\x00-\x1f\x7f]/.test(path)) {
      warn(pathAttr, 'the path contains whitespace or control characters; "/" is checked instead')
      path = '/'
    }
  }
  // gliderlabs reads SERVICE_CHECK_HTTP_METHOD for HTTP checks and SERVICE_CHECK_HTTPS_METHOD for HTTPS ones.
  let method: string | undefined
  const methodKey = kind === 'https' ? 'check_https_method' : 'check_http_method'
  const methodAttr = kind === 'http' || kind === 'https' ? get(methodKey) : undefined
  if (methodAttr) {
    if (/^[A-Za-z]{1,20}$/.test(methodAttr.value.trim())) method = methodAttr.value.trim().toUpperCase()
    else warn(methodAttr, 'expected an HTTP method such as GET or HEAD; GET is used')
  }
  const otherMethod = get(kind === 'https' ? 'check_http_method' : 'check_https_method')
  if (otherMethod && (kind === 'http' || kind === 'https'))
    warn(
      otherMethod,
      `applies to ${kind === 'https' ? 'SERVICE_CHECK_HTTP' : 'SERVICE_CHECK_HTTPS'} checks only; ignored`,
    )
  const grpcUseTls = kind === 'grpc' && isPresent(get('check_grpc_use_tls'), warn)
  const skipAttr = get('check_tls_skip_verify')
  // gliderlabs applies it to gRPC-over-TLS; an HTTPS check takes it too (Consul's TLSSkipVerify is the same switch).
  const tlsSkipVerify = (kind === 'https' || grpcUseTls) && isPresent(skipAttr, warn)
  if (skipAttr && !(kind === 'https' || grpcUseTls))
    warn(skipAttr, 'applies to HTTPS checks and to gRPC checks with SERVICE_CHECK_GRPC_USE_TLS only; ignored')
  const timeout = duration('check_timeout')
  return {
    kind,
    ...(path !== undefined ? { path } : {}),
    ...(method !== undefined ? { method } : {}),
    ...(grpcUseTls ? { grpcUseTls } : {}),
    ...(tlsSkipVerify ? { tlsSkipVerify } : {}),
    interval: duration('check_interval') ?? '10s',
    ...(timeout !== undefined ? { timeout } : {}),
    ...optional(get, warn, duration),
  }
}

function optional(
  get: (k: string) => RawAttr | undefined,
  warn: (a: RawAttr, m: string) => void,
  duration: (k: string) => string | undefined,
): Pick<CheckSpec, 'initialStatus' | 'deregisterAfter'> {
  const out: { initialStatus?: CheckSpec['initialStatus']; deregisterAfter?: string } = {}
  const status = get('check_initial_status')
  if (status) {
    const v = status.value.trim().toLowerCase()
    if (v === 'passing' || v === 'warning' || v === 'critical') out.initialStatus = v
    else warn(status, "expected passing, warning or critical; Consul's default (critical) applies")
  }
  const after = duration('check_deregister_after')
  if (after) out.deregisterAfter = after
  return out
}
