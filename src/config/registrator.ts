import { existsSync } from 'node:fs'
import { isIP } from 'node:net'
import { homedir, hostname } from 'node:os'
import { join } from 'node:path'
import type { ConsulConnection } from '../consul/connection.js'
import { ConfigError } from '../errors.js'
import type { DockerTls } from '../registrator/docker.js'
import { splitTags } from '../registrator/tags.js'
import { compileTemplate, TemplateError } from '../registrator/template.js'
import { CONSUL_FIELDS, consulConnectionFrom } from './consul.js'
import { type FieldSpec, fieldSchema, splitHostPort } from './fields.js'
import { type ConfigSources, loadFields } from './load.js'
import { COMMON_FIELDS, OTHER_COMMAND_KEYS, registerOtherKeys, SERVE_FIELDS } from './serve.js'

/**
 * Settings of `consul-lb registrator` (and of `serve --registrator`). Flag names follow gliderlabs/registrator where it
 * had one (-ip, -internal, -explicit, -tags, -resync, -cleanup, -deregister, -retry-attempts, -retry-interval).
 */
export const REGISTRATOR_FIELDS: readonly FieldSpec[] = [
  {
    key: 'docker',
    kind: 'string',
    default: 'unix:///var/run/docker.sock',
    arg: '<url>',
    envAliases: ['DOCKER_HOST'],
    help: 'Docker Engine API: unix:///path/docker.sock, tcp://host:port (TLS with --docker-tls-verify) or http(s)://host:port',
  },
  {
    key: 'dockerTlsVerify',
    kind: 'bool',
    default: false,
    envAliases: ['DOCKER_TLS_VERIFY'],
    help: "TLS to a tcp:// engine, verifying its certificate against ca.pem and presenting cert.pem/key.pem from --docker-cert-path, as the docker CLI does (0 and false mean off; docker's CLI takes any non-empty value as on)",
  },
  {
    key: 'dockerCertPath',
    kind: 'string',
    default: null,
    arg: '<dir>',
    envAliases: ['DOCKER_CERT_PATH'],
    help: 'folder holding ca.pem, cert.pem and key.pem for --docker-tls-verify and https:// (default: ~/.docker)',
  },
  {
    key: 'ip',
    kind: 'string',
    default: null,
    arg: '<address>',
    help: "address registered for published ports and host-networked containers (default: the binding address, or the Consul agent's address for 0.0.0.0)",
  },
  {
    key: 'internal',
    kind: 'bool',
    default: false,
    help: "register the container's IP and exposed ports instead of published ones (per container: SERVICE_INTERNAL)",
  },
  {
    key: 'explicit',
    kind: 'bool',
    default: false,
    help: 'register only containers with SERVICE_NAME or SERVICE_<port>_NAME',
  },
  {
    key: 'tags',
    kind: 'list',
    default: [],
    arg: '<tag,...>',
    help: 'tags added to every registered service; `\\,` is a comma inside a tag, and Go templates over the container are evaluated as gliderlabs does (`{{.Config.Hostname}}`, `{{index .Config.Labels "team"}}`, its helpers strSlice, sIndex, mIndex, toUpper, toLower, replace, join, split, splitIndex, matchFirstElement, matchAllElements)',
  },
  {
    key: 'useIpFromLabel',
    kind: 'string',
    default: null,
    arg: '<label>',
    help: 'register the address held in this container label (`10.0.0.5` or `10.0.0.5/24`) when a container has it (gliderlabs -useIpFromLabel)',
  },
  {
    key: 'requireLabel',
    kind: 'bool',
    default: false,
    help: 'register only containers that carry a SERVICE_REGISTER label (gliderlabs -require-label)',
  },
  {
    key: 'resync',
    kind: 'int',
    default: 30,
    min: 0,
    max: 86400,
    arg: '<seconds>',
    help: 'full reconcile every this many seconds (0: off): registers what is missing (Consul lost its state), deregisters what it owns that no longer runs',
  },
  {
    key: 'cleanup',
    kind: 'bool',
    default: false,
    help: "on start, also deregister services this host owns whose containers are gone (resyncs always do); at start and every resync, deregister gliderlabs/registrator's registrations of this host whose containers are gone (as its -cleanup)",
  },
  {
    key: 'deregister',
    kind: 'enum',
    default: 'always',
    values: ['always', 'on-success', 'never'],
    arg: '<always|on-success|never>',
    help: 'when a container dies: always deregister; on-success: only when it exited 0 or by a signal (docker stop, docker kill: exit 128+n), as gliderlabs, others stay in maintenance until removed or restarted; never: every exited container stays, in maintenance, until removed',
  },
  {
    key: 'retryAttempts',
    kind: 'int',
    default: -1,
    min: -1,
    max: 1000000,
    arg: '<n>',
    help: 'at start, how often to retry reaching Consul before exiting (-1: never give up; failures are retried in the background)',
  },
  {
    key: 'retryInterval',
    kind: 'int',
    default: 2000,
    min: 10,
    max: 3600000,
    arg: '<ms>',
    help: 'first delay between Consul retries (doubles, capped at 30 s, after failed syncs)',
  },
  {
    key: 'hostId',
    kind: 'string',
    default: null,
    arg: '<id>',
    help: "this host's id: first part of service IDs and the ownership mark (default: the host name, as registrator)",
  },
  {
    key: 'admin',
    kind: 'string',
    default: '127.0.0.1:8082',
    arg: '<host:port|off>',
    help: 'standalone admin listener (status page at /, /healthz, /status, /metrics); on loopback it answers only to an IP or localhost as Host (DNS rebinding); "off" disables it. serve --registrator uses serve\'s',
  },
  {
    key: 'reconnectMaxMs',
    kind: 'int',
    default: 10000,
    min: 10,
    max: 600000,
    arg: '<ms>',
    hidden: true,
    help: 'cap of the Docker reconnect back-off',
  },
]

registerOtherKeys(REGISTRATOR_FIELDS)

/** The validated registrator settings; past config/ everything receives these typed values. */
export interface RegistratorConfig {
  dockerUrl: string
  /** TLS material for a tcp:// engine with DOCKER_TLS_VERIFY, or an https:// one; null for unix:// and plain TCP. */
  dockerTls: DockerTls | null
  consul: ConsulConnection
  ip: string | null
  internal: boolean
  explicit: boolean
  /** Raw items; each may be a Go template (compiled once here to fail at start-up, evaluated per container). */
  tags: string[]
  useIpFromLabel: string | null
  requireLabel: boolean
  /** 0: no periodic resync. */
  resyncMs: number
  cleanup: boolean
  deregister: 'always' | 'on-success' | 'never'
  /** -1: never give up. */
  retryAttempts: number
  retryIntervalMs: number
  hostId: string
  admin: { host: string; port: number } | null
  reconnectMaxMs: number
  logLevel: string
}

const LOG_LEVEL = COMMON_FIELDS.filter((f) => f.key === 'logLevel')

/** Every field `consul-lb registrator` accepts (its own, the Consul connection, the log level). */
export const REGISTRATOR_COMMAND_FIELDS: readonly FieldSpec[] = [...REGISTRATOR_FIELDS, ...CONSUL_FIELDS, ...LOG_LEVEL]

export function loadRegistratorConfig(sources: ConfigSources): RegistratorConfig {
  // A config file shared with serve (serve --registrator reads one file) holds serve's keys too.
  const v = loadFields(REGISTRATOR_COMMAND_FIELDS, sources, [
    ...OTHER_COMMAND_KEYS,
    ...COMMON_FIELDS.map((f) => f.key),
    ...SERVE_FIELDS.map((f) => f.key),
  ])
  const ip = v.ip as string | null
  if (ip !== null && ip !== undefined && !isIP(ip))
    throw new ConfigError('ip', `"${ip}": expected an IPv4 or IPv6 address`)
  const tags = v.tags as string[]
  for (const t of tags) {
    // Spaces belong inside a template's actions, or around a comma (`-tags "prod, eu"`: trimmed, as the container's
    // SERVICE_TAGS are); inside a tag, one with a space cannot be asked for.
    if (splitTags(t.replace(/\{\{[\s\S]*?\}\}/g, 'x')).some((tag) => /\s/.test(tag.trim())))
      throw new ConfigError('tags', `"${t}": tags must not contain whitespace`)
    try {
      compileTemplate(t)
    } catch (err) {
      if (err instanceof TemplateError) throw new ConfigError('tags', `"${t}": template: ${err.message}`)
      throw err
    }
  }
  const hostId = (v.hostId as string | null) ?? hostname()
  // The host id is the first part of every service ID and the ownership mark: a colon would make IDs ambiguous.
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(hostId))
    throw new ConfigError('hostId', `"${hostId}": letters, digits, dot, dash and underscore only (at most 128)`)
  return {
    ...dockerEndpoint(String(v.docker), v.dockerTlsVerify === true, (v.dockerCertPath as string | null) ?? null),
    consul: consulConnectionFrom(v)!,
    ip: ip ?? null,
    internal: v.internal as boolean,
    explicit: v.explicit as boolean,
    tags,
    useIpFromLabel: (v.useIpFromLabel as string | null) ?? null,
    requireLabel: v.requireLabel as boolean,
    resyncMs: (v.resync as number) * 1000,
    cleanup: v.cleanup as boolean,
    deregister: v.deregister as RegistratorConfig['deregister'],
    retryAttempts: v.retryAttempts as number,
    retryIntervalMs: v.retryInterval as number,
    hostId,
    admin: adminAddress(String(v.admin)),
    reconnectMaxMs: v.reconnectMaxMs as number,
    logLevel: String(v.logLevel),
  }
}

/**
 * DOCKER_HOST forms, as the docker CLI reads them: unix:///path; tcp://host:port is plain HTTP unless
 * DOCKER_TLS_VERIFY is on, then HTTPS verified against DOCKER_CERT_PATH/ca.pem with cert.pem/key.pem as the client
 * certificate; http(s)://host:port as written (https uses DOCKER_CERT_PATH's files when they are there).
 */
function dockerEndpoint(
  raw: string,
  tlsVerify: boolean,
  certPath: string | null,
): { dockerUrl: string; dockerTls: DockerTls | null } {
  let u: URL
  try {
    u = new URL(raw.startsWith('tcp://') ? `${tlsVerify ? 'https' : 'http'}://${raw.slice(6)}` : raw)
  } catch {
    throw new ConfigError('docker', `"${raw}": expected unix:///path/to/docker.sock or tcp://host:port`)
  }
  if (u.protocol === 'unix:') {
    // 107 bytes is the sun_path limit of a unix socket address on Linux.
    if (!u.pathname || u.pathname === '/' || u.pathname.length > 107)
      throw new ConfigError('docker', `"${raw}": expected unix:///path/to/docker.sock (path at most 107 bytes)`)
    if (tlsVerify) throw new ConfigError('dockerTlsVerify', 'is for tcp:// engines; a unix socket has no TLS')
    return { dockerUrl: `unix://${u.pathname}`, dockerTls: null }
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new ConfigError('docker', `"${raw}": unsupported scheme ${u.protocol} (unix://, tcp://, http://, https://)`)
  if (u.protocol === 'http:' && tlsVerify)
    throw new ConfigError('dockerTlsVerify', `is on but the engine address ${raw} is http://: use tcp:// or https://`)
  const dockerUrl = `${u.protocol}//${u.host}`
  if (u.protocol === 'http:') return { dockerUrl, dockerTls: null }
  const dir = certPath ?? join(homedir(), '.docker')
  const file = (name: string, required: boolean): string | null => {
    const path = join(dir, name)
    if (existsSync(path)) return path
    if (required)
      throw new ConfigError(
        'dockerCertPath',
        `${path} is missing: --docker-tls-verify needs ca.pem (and cert.pem, key.pem for the client certificate) in ${dir}`,
      )
    return null
  }
  const caFile = file('ca.pem', tlsVerify)
  const certFile = file('cert.pem', false)
  const keyFile = file('key.pem', certFile !== null)
  return { dockerUrl, dockerTls: { caFile, certFile, keyFile } }
}

function adminAddress(raw: string): { host: string; port: number } | null {
  if (raw === 'off') return null
  if (!fieldSchema({ key: 'admin', kind: 'hostport', default: null, help: '' }).safeParse(raw).success)
    throw new ConfigError('admin', `"${raw}": expected HOST:PORT or off`)
  return splitHostPort(raw)
}
