import type { ConsulConnection } from '../consul/connection.js'
import { DEFAULT_CONSUL_ADDRESS } from '../consul/connection.js'
import { ConfigError } from '../errors.js'
import { isDomain, isServiceName } from '../routes/names.js'
import { parseRoute, type Route, type RouteObject, routeFromObject } from '../routes/route.js'
import { CONSUL_FIELDS, consulConnectionFrom } from './consul.js'
import { type FieldSpec, splitHostPort } from './fields.js'
import { type ConfigSources, loadFields } from './load.js'

/** Settings shared by every subcommand that resolves Consul names (serve, nginx). */
export const COMMON_FIELDS: readonly FieldSpec[] = [
  {
    key: 'dns',
    kind: 'list',
    default: ['127.0.0.1:8600'],
    arg: '<host:port,...>',
    help: 'Consul DNS servers, tried in order (failover)',
  },
  { key: 'domain', kind: 'string', default: 'consul', arg: '<domain>', help: "Consul's DNS domain" },
  {
    key: 'routes',
    kind: 'routes',
    default: [],
    arg: '<route>',
    help: 'route [HOST][/PATH]=SERVICE[:PORT][,strip][,ws][,tag=T][,dc=DC]; repeatable; env and file: a list (env separated by ;)',
  },
  {
    key: 'logLevel',
    kind: 'enum',
    default: 'info',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    arg: '<level>',
    help: 'log level (JSON logs on stdout)',
  },
]

export const SERVE_FIELDS: readonly FieldSpec[] = [
  {
    key: 'listen',
    kind: 'hostport',
    default: '0.0.0.0:8080',
    arg: '<host:port>',
    help: 'address the proxy listens on',
  },
  {
    key: 'dataPlane',
    kind: 'enum',
    default: 'passthrough',
    values: ['passthrough', 'classic'],
    arg: '<passthrough|classic>',
    help: 'passthrough: client and instance connections read as bytes, each head parsed once by llhttp and rewritten in one pass, bodies relayed as they come; classic: node:http in front, undici behind',
  },
  {
    key: 'admin',
    kind: 'string',
    default: '127.0.0.1:8081',
    arg: '<host:port|off>',
    help: 'admin listener (status page at /, /healthz, /status, /metrics); on loopback it answers only to an IP or localhost as Host (DNS rebinding); "off" disables it',
  },
  {
    key: 'hostRouting',
    kind: 'bool',
    default: true,
    help: 'route Host <svc>.service.<domain> (and <tag>.<svc>…, <svc>.service.<dc>.<domain>) to that service',
  },
  {
    key: 'allowServices',
    kind: 'list',
    default: [],
    arg: '<svc,...>',
    help: 'if set, Host-based routing only reaches these services',
  },
  {
    key: 'allowConsulService',
    kind: 'bool',
    default: false,
    help: "let Host routing reach the 'consul' service itself (its HTTP API); off by default",
  },
  {
    key: 'dnsTransport',
    kind: 'enum',
    default: 'tcp',
    values: ['tcp', 'udp'],
    arg: '<tcp|udp>',
    help: 'tcp: one reused TCP connection per server, never capped; udp: EDNS0 (4096 B), TCP on truncation or a capped-looking answer',
  },
  {
    key: 'dnsTimeoutMs',
    kind: 'int',
    default: 1000,
    min: 10,
    max: 60000,
    arg: '<ms>',
    help: 'per-server DNS query timeout before failing over to the next server',
  },
  {
    key: 'dnsMaxLookups',
    kind: 'int',
    default: 32,
    min: 1,
    max: 10000,
    arg: '<n>',
    help: 'DNS lookups in flight at most; more wait their turn, those a request waits for first',
  },
  {
    key: 'ttlFloorMs',
    kind: 'int',
    default: 1000,
    min: 0,
    max: 3600000,
    arg: '<ms>',
    help: 'minimum cache lifetime of an answer (Consul answers with TTL 0 by default)',
  },
  {
    key: 'ttlCeilingMs',
    kind: 'int',
    default: 30000,
    min: 1,
    max: 86400000,
    arg: '<ms>',
    help: 'maximum cache lifetime of an answer',
  },
  {
    key: 'staleIfErrorMs',
    kind: 'int',
    default: 300000,
    min: 0,
    max: 86400000,
    arg: '<ms>',
    help: 'keep serving the last good answer this long past its expiry while Consul DNS fails',
  },
  {
    key: 'negativeTtlMs',
    kind: 'int',
    default: 1000,
    min: 0,
    max: 3600000,
    arg: '<ms>',
    help: 'cache NXDOMAIN / empty answers this long',
  },
  {
    key: 'idleServiceMs',
    kind: 'int',
    default: 120000,
    min: 1000,
    max: 86400000,
    arg: '<ms>',
    help: 'forget a Host-routed service (its connections and balancer state) nobody asked for this long',
  },
  {
    key: 'balancer',
    kind: 'enum',
    default: 'round-robin',
    values: ['round-robin', 'least-connections', 'p2c'],
    arg: '<policy>',
    help: 'instance selection policy (SRV weights honoured by each)',
  },
  {
    key: 'maxFails',
    kind: 'int',
    default: 3,
    min: 1,
    max: 1000,
    arg: '<n>',
    help: 'connect/reset/timeout failures within --fail-window-ms that eject an instance',
  },
  {
    key: 'failWindowMs',
    kind: 'int',
    default: 10000,
    min: 100,
    max: 3600000,
    arg: '<ms>',
    help: 'window in which failures are counted',
  },
  {
    key: 'ejectForMs',
    kind: 'int',
    default: 10000,
    min: 100,
    max: 3600000,
    arg: '<ms>',
    help: 'how long an ejected instance gets no traffic',
  },
  {
    key: 'emptyPool',
    kind: 'enum',
    default: 'fail',
    values: ['fail', 'wait'],
    arg: '<fail|wait>',
    help: 'no healthy instance: answer 503 at once, or wait up to --empty-pool-wait-ms for one',
  },
  {
    key: 'emptyPoolWaitMs',
    kind: 'int',
    default: 2000,
    min: 0,
    max: 600000,
    arg: '<ms>',
    help: 'how long a request waits for an instance when --empty-pool=wait',
  },
  {
    key: 'retryAfterS',
    kind: 'int',
    default: 1,
    min: 0,
    max: 3600,
    arg: '<s>',
    help: 'Retry-After sent with 503 answers',
  },
  {
    key: 'retries',
    kind: 'int',
    default: 2,
    min: 0,
    max: 10,
    arg: '<n>',
    help: 'extra attempts on another instance for requests that failed before any response byte',
  },
  {
    key: 'retryBudgetPercent',
    kind: 'int',
    default: 20,
    min: 0,
    max: 100,
    arg: '<pct>',
    help: 'retries in flight may be at most this share of requests in flight (but see --retry-budget-min), so retries cannot amplify an outage',
  },
  {
    key: 'retryBudgetMin',
    kind: 'int',
    default: 32,
    min: 0,
    max: 100000,
    arg: '<n>',
    help: 'retries in flight always allowed, whatever the share: an instance that dies takes all its keep-alive connections with it at once',
  },
  {
    key: 'connectTimeoutMs',
    kind: 'int',
    default: 2000,
    min: 10,
    max: 600000,
    arg: '<ms>',
    help: 'upstream connect timeout',
  },
  {
    key: 'upstreamHeadersTimeoutMs',
    kind: 'int',
    default: 60000,
    min: 10,
    max: 3600000,
    arg: '<ms>',
    help: 'time to wait for upstream response headers (then 504)',
  },
  {
    key: 'upstreamBodyTimeoutMs',
    kind: 'int',
    default: 60000,
    min: 10,
    max: 3600000,
    arg: '<ms>',
    help: 'longest pause between upstream body chunks',
  },
  {
    key: 'upstreamKeepAliveMs',
    kind: 'int',
    default: 4000,
    min: 100,
    max: 600000,
    arg: '<ms>',
    help: 'idle keep-alive time of upstream connections',
  },
  {
    key: 'maxConnectionsPerInstance',
    kind: 'int',
    default: 256,
    min: 1,
    max: 65535,
    arg: '<n>',
    help: 'cap on concurrent upstream connections per instance',
  },
  {
    key: 'clientHeadersTimeoutMs',
    kind: 'int',
    default: 15000,
    min: 100,
    max: 600000,
    arg: '<ms>',
    help: 'a client must send its request headers within this time',
  },
  {
    key: 'clientRequestTimeoutMs',
    kind: 'int',
    default: 300000,
    min: 0,
    max: 86400000,
    arg: '<ms>',
    help: 'a client must send its whole request within this time (0: no limit)',
  },
  {
    key: 'clientKeepAliveMs',
    kind: 'int',
    default: 5000,
    min: 1,
    max: 600000,
    arg: '<ms>',
    help: 'idle keep-alive time of client connections',
  },
  {
    key: 'clientSendTimeoutMs',
    kind: 'int',
    default: 60000,
    min: 100,
    max: 3600000,
    arg: '<ms>',
    help: 'a client that reads none of its response for this long is cut off, freeing its instance slot (nginx send_timeout)',
  },
  {
    key: 'maxHeaderBytes',
    kind: 'int',
    default: 16384,
    min: 1024,
    max: 1048576,
    arg: '<bytes>',
    help: 'largest request header block accepted (431 above it)',
  },
  {
    key: 'maxBodyBytes',
    kind: 'int',
    default: 104857600,
    min: 0,
    max: 1099511627776,
    arg: '<bytes>',
    help: 'largest request body forwarded (413 above it); 0: no limit',
  },
  {
    key: 'requestBufferBytes',
    kind: 'int',
    default: 65536,
    min: 0,
    max: 16777216,
    arg: '<bytes>',
    help: 'a request body of known length up to this size is read whole before an instance is chosen, so a slow client holds no instance slot (larger bodies stream); 0: always stream',
  },
  {
    key: 'workers',
    kind: 'int',
    default: 1,
    min: 1,
    max: 256,
    arg: '<n>',
    help: 'worker processes (Node cluster) sharing the listener',
  },
  {
    key: 'shutdownTimeoutMs',
    kind: 'int',
    default: 10000,
    min: 0,
    max: 600000,
    arg: '<ms>',
    help: 'on SIGTERM, how long in-flight requests may take to finish',
  },
  {
    key: 'registrator',
    kind: 'bool',
    default: false,
    help: 'also run the Docker registrator in this process (see `consul-lb registrator --help` for its settings)',
  },
]

export type BalancerPolicy = 'round-robin' | 'least-connections' | 'p2c'

export interface DnsServer {
  readonly host: string
  readonly port: number
  readonly label: string
}

/** The validated settings of `consul-lb serve`: everything past config/ receives these typed, trusted values. */
export interface ServeConfig {
  listen: { host: string; port: number }
  dataPlane: 'classic' | 'passthrough'
  admin: { host: string; port: number } | null
  dns: DnsServer[]
  domain: string
  routes: Route[]
  hostRouting: boolean
  allowServices: string[]
  allowConsulService: boolean
  dnsTransport: 'tcp' | 'udp'
  dnsTimeoutMs: number
  dnsMaxLookups: number
  ttlFloorMs: number
  ttlCeilingMs: number
  staleIfErrorMs: number
  negativeTtlMs: number
  idleServiceMs: number
  balancer: BalancerPolicy
  maxFails: number
  failWindowMs: number
  ejectForMs: number
  emptyPool: 'fail' | 'wait'
  emptyPoolWaitMs: number
  retryAfterS: number
  retries: number
  retryBudgetPercent: number
  retryBudgetMin: number
  connectTimeoutMs: number
  upstreamHeadersTimeoutMs: number
  upstreamBodyTimeoutMs: number
  upstreamKeepAliveMs: number
  maxConnectionsPerInstance: number
  clientHeadersTimeoutMs: number
  clientRequestTimeoutMs: number
  clientKeepAliveMs: number
  clientSendTimeoutMs: number
  maxHeaderBytes: number
  maxBodyBytes: number
  requestBufferBytes: number
  workers: number
  shutdownTimeoutMs: number
  registrator: boolean
  /**
   * Consul's HTTP API, when known (--consul, CONSUL_HTTP_ADDR, or --registrator's agent): used only to explain why a
   * service has no instance, never on the path of a request that has one. null: no explanations.
   */
  consul: ConsulConnection | null
  logLevel: string
}

export function parseDnsServers(list: string[], field: string): DnsServer[] {
  if (list.length === 0) throw new ConfigError(field, 'at least one DNS server is needed')
  return list.map((s) => {
    // HOST:PORT or [V6]:PORT; a bare host means Consul's default DNS port 8600.
    const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+))(?::(\d{1,5}))?$/.exec(s)
    const port = m?.[3] === undefined ? 8600 : Number(m[3])
    if (!m || port < 1 || port > 65535)
      throw new ConfigError(field, `"${s}": expected HOST:PORT (for example 127.0.0.1:8600)`)
    const host = m[1] ?? m[2]!
    return { host, port, label: m[1] !== undefined ? `[${host}]:${port}` : `${host}:${port}` }
  })
}

export function parseRoutes(raw: unknown[], field: string): Route[] {
  return raw.map((r, i) => {
    if (typeof r === 'string') return parseRoute(r, field)
    const o = r as Record<string, unknown>
    const where = `${field}[${i}]`
    for (const k of Object.keys(o)) {
      if (!['host', 'path', 'service', 'port', 'tag', 'datacenter', 'stripPrefix', 'websocket'].includes(k))
        throw new ConfigError(
          `${where}.${k}`,
          'unknown route key (expected host, path, service, port, tag, datacenter, stripPrefix, websocket)',
        )
    }
    if (typeof o.service !== 'string') throw new ConfigError(`${where}.service`, 'expected a service name')
    for (const k of ['host', 'path', 'tag', 'datacenter'] as const)
      if (o[k] !== undefined && typeof o[k] !== 'string') throw new ConfigError(`${where}.${k}`, 'expected a string')
    if (o.port !== undefined && typeof o.port !== 'number') throw new ConfigError(`${where}.port`, 'expected a number')
    for (const k of ['stripPrefix', 'websocket'] as const)
      if (o[k] !== undefined && typeof o[k] !== 'boolean')
        throw new ConfigError(`${where}.${k}`, 'expected true or false')
    return routeFromObject(o as unknown as RouteObject, where)
  })
}

/** Field keys that other subcommands own; a shared config file may hold them. */
export const OTHER_COMMAND_KEYS: string[] = []

export function registerOtherKeys(fields: readonly FieldSpec[]): void {
  for (const f of fields) if (!OTHER_COMMAND_KEYS.includes(f.key)) OTHER_COMMAND_KEYS.push(f.key)
}

export function loadServeConfig(sources: ConfigSources): ServeConfig {
  const v = loadFields([...COMMON_FIELDS, ...SERVE_FIELDS, ...CONSUL_FIELDS], sources, OTHER_COMMAND_KEYS) as Record<
    string,
    never
  >
  const routesField = sources.flags?.routes !== undefined ? '--route' : 'routes'
  const domain = String(v.domain).toLowerCase().replace(/\.$/, '')
  if (!isDomain(domain)) throw new ConfigError('domain', `"${v.domain}" is not a DNS domain`)
  for (const s of v.allowServices as string[])
    if (!isServiceName(s)) throw new ConfigError('allowServices', `"${s}" is not a valid service name`)
  const ttlFloorMs = v.ttlFloorMs as number
  const ttlCeilingMs = v.ttlCeilingMs as number
  if (ttlCeilingMs < ttlFloorMs) throw new ConfigError('ttlCeilingMs', `must be >= ttlFloorMs (${ttlFloorMs})`)
  const reqTimeout = v.clientRequestTimeoutMs as number
  // Node refuses a headers timeout longer than the request timeout (at listen time, as a crash): refuse it here.
  if (reqTimeout > 0 && (v.clientHeadersTimeoutMs as number) > reqTimeout)
    throw new ConfigError(
      'clientHeadersTimeoutMs',
      `must be <= clientRequestTimeoutMs (${reqTimeout}) unless that is 0`,
    )
  const admin = String(v.admin)
  let adminAddr: { host: string; port: number } | null = null
  if (admin !== 'off') {
    if (
      !/^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(admin) ||
      Number(admin.slice(admin.lastIndexOf(':') + 1)) > 65535
    )
      throw new ConfigError('admin', `"${admin}": expected HOST:PORT or off`)
    adminAddr = splitHostPort(admin)
  }
  return {
    ...(v as unknown as ServeConfig),
    listen: splitHostPort(v.listen),
    admin: adminAddr,
    dns: parseDnsServers(v.dns, 'dns'),
    domain,
    routes: parseRoutes(v.routes as unknown[], routesField),
    allowServices: (v.allowServices as string[]).map((s) => s.toLowerCase()),
    consul: consulConnectionFrom(v, v.registrator ? DEFAULT_CONSUL_ADDRESS : null),
  }
}
