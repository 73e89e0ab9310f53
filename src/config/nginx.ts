import type { ConsulConnection } from '../consul/connection.js'
import { ConfigError } from '../errors.js'
import { isNginxListen, NGINX_SIZE } from '../nginx/validate.js'
import { parseNginxVersion } from '../nginx/version.js'
import { isDomain } from '../routes/names.js'
import type { Route } from '../routes/route.js'
import { CONSUL_FIELDS, consulConnectionFrom } from './consul.js'
import type { FieldSpec } from './fields.js'
import { type ConfigSources, loadFields } from './load.js'
import {
  COMMON_FIELDS,
  type DnsServer,
  OTHER_COMMAND_KEYS,
  parseDnsServers,
  parseRoutes,
  registerOtherKeys,
  SERVE_FIELDS,
} from './serve.js'

/** Settings of `consul-lb nginx` beyond COMMON_FIELDS (dns, domain, routes, logLevel), which it shares with serve. */
export const NGINX_FIELDS: readonly FieldSpec[] = [
  {
    key: 'listen',
    kind: 'string',
    default: '8080',
    arg: '<[addr:]port>',
    help: "nginx's listen address in the emitted server blocks",
  },
  {
    key: 'mode',
    kind: 'enum',
    default: 'resolver',
    values: ['resolver', 'upstream', 'catalog'],
    arg: '<mode>',
    help: 'resolver: set $endpoint + resolver (any nginx, fixed ports); upstream: upstream { server … service= resolve } (SRV ports, keep-alive, nginx >= 1.27.3); catalog: one location per Consul service',
  },
  {
    key: 'out',
    kind: 'string',
    default: '-',
    arg: '<file|->',
    help: 'where to write the config ("-": stdout); written atomically',
  },
  {
    key: 'check',
    kind: 'bool',
    default: false,
    help: 'run nginx -t on the output (temporary prefix) before writing it, and warn when Consul lacks enable_truncate',
  },
  {
    key: 'full',
    kind: 'bool',
    default: false,
    help: 'emit a whole nginx.conf instead of an http-context file for conf.d/ (its pid, logs and temp files go to --full-prefix)',
  },
  {
    key: 'fullPrefix',
    kind: 'string',
    default: '/var/lib/consul-lb/nginx',
    arg: '<dir>',
    help: "with --full: the folder of nginx's pid file (nginx.pid), error.log, access.log and temp folders, created when the file is written; never the system nginx's /run/nginx.pid",
  },
  {
    key: 'defaultServer',
    kind: 'bool',
    default: false,
    help: "mark the catch-all server default_server (it is written first, so nginx takes it as the port's default anyway unless another site claims default_server, as a distribution's default site does on port 80; two claims make nginx refuse the config)",
  },
  {
    key: 'clientBodyBufferSize',
    kind: 'string',
    default: '64k',
    arg: '<size>',
    help: "client_body_buffer_size: request bodies up to this size stay in memory (nginx's 8k default writes a 16 KiB body to a temp file first)",
  },
  {
    key: 'nginxVersion',
    kind: 'string',
    default: null,
    arg: '<x.y.z>',
    help: 'the nginx version the output is for (default: ask `nginx -v` when nginx is on PATH)',
  },
  { key: 'nginxBin', kind: 'string', default: 'nginx', arg: '<path>', help: 'nginx binary for -v, -t' },
  {
    key: 'watch',
    kind: 'bool',
    default: false,
    help: 'catalog mode: keep running, re-emit and reload when the set of services changes',
  },
  {
    key: 'reloadCommand',
    kind: 'string',
    default: null,
    arg: '<command>',
    help: 'shell command run after each rewrite in --watch (for example "nginx -s reload")',
  },
  {
    key: 'debounceMs',
    kind: 'int',
    default: 2000,
    min: 0,
    max: 600000,
    arg: '<ms>',
    help: '--watch: wait this long after a catalog change for more changes before rewriting',
  },
  {
    key: 'catalogPort',
    kind: 'int',
    default: null,
    min: 1,
    max: 65535,
    arg: '<port>',
    help: 'catalog mode: one fixed port for every service (resolver style, any nginx); unset: SRV ports (nginx >= 1.27.3)',
  },
  {
    key: 'resolverValidS',
    kind: 'int',
    default: 5,
    min: 1,
    max: 3600,
    arg: '<s>',
    help: 'resolver valid=: how long nginx caches a Consul answer',
  },
  {
    key: 'resolverTimeoutS',
    kind: 'int',
    default: 3,
    min: 1,
    max: 60,
    arg: '<s>',
    help: "resolver_timeout (nginx's default 30 s hangs requests while Consul is down)",
  },
  {
    key: 'keepalive',
    kind: 'int',
    default: 16,
    min: 1,
    max: 10000,
    arg: '<n>',
    help: 'upstream mode: idle upstream connections kept per worker and upstream',
  },
  { key: 'proxyConnectTimeoutS', kind: 'int', default: 2, min: 1, max: 600, arg: '<s>', help: 'proxy_connect_timeout' },
  {
    key: 'proxyReadTimeoutS',
    kind: 'int',
    default: 60,
    min: 1,
    max: 86400,
    arg: '<s>',
    help: 'proxy_read_timeout and proxy_send_timeout',
  },
]

// A config file shared with `serve` may hold the emitter's keys (and the reverse, done in serve.ts's loader).
registerOtherKeys(NGINX_FIELDS)

export type NginxModeSetting = 'resolver' | 'upstream' | 'catalog'

/** The validated settings of `consul-lb nginx`. */
export interface NginxConfig {
  listen: string
  mode: NginxModeSetting
  out: string
  check: boolean
  full: boolean
  fullPrefix: string
  defaultServer: boolean
  clientBodyBufferSize: string
  nginxVersion: string | null
  nginxBin: string
  /** Catalog mode and --check's enable_truncate probe. */
  consul: ConsulConnection
  watch: boolean
  reloadCommand: string | null
  debounceMs: number
  catalogPort: number | null
  resolverValidS: number
  resolverTimeoutS: number
  keepalive: number
  proxyConnectTimeoutS: number
  proxyReadTimeoutS: number
  dns: DnsServer[]
  domain: string
  routes: Route[]
  logLevel: string
}

export function loadNginxConfig(sources: ConfigSources): NginxConfig {
  // serve's keys are allowed in a shared file; both tables share COMMON_FIELDS.
  const v = loadFields([...COMMON_FIELDS, ...NGINX_FIELDS, ...CONSUL_FIELDS], sources, [
    ...OTHER_COMMAND_KEYS,
    ...SERVE_FIELDS.map((f) => f.key),
  ]) as Record<string, never>
  const routesField = sources.flags?.routes !== undefined ? '--route' : 'routes'
  const domain = String(v.domain).toLowerCase().replace(/\.$/, '')
  if (!isDomain(domain)) throw new ConfigError('domain', `"${v.domain}" is not a DNS domain`)
  const listen = String(v.listen)
  if (!isNginxListen(listen))
    throw new ConfigError('listen', `"${listen}": expected PORT or ADDRESS:PORT (for example 8080 or 127.0.0.1:8080)`)
  const mode = v.mode as NginxModeSetting
  if (v.watch && mode !== 'catalog')
    throw new ConfigError(
      'watch',
      'only the catalog mode watches Consul (the other modes need no reloads: nginx resolves names at request time)',
    )
  if (v.reloadCommand !== null && !v.watch) throw new ConfigError('reloadCommand', 'is only used with --watch')
  if (v.watch && v.out === '-') throw new ConfigError('out', '--watch needs a file to rewrite (--out FILE)')
  if (v.catalogPort !== null && mode !== 'catalog')
    throw new ConfigError('catalogPort', 'is only used in the catalog mode (routes name their own ports: SERVICE:PORT)')
  // Checked here, not when the emitter first needs it: a typo must fail at start-up with exit 2, naming the field.
  if (v.nginxVersion !== null) {
    try {
      parseNginxVersion(String(v.nginxVersion))
    } catch {
      throw new ConfigError('nginxVersion', `"${v.nginxVersion}": expected a version such as 1.27.3`)
    }
  }
  if (!NGINX_SIZE.test(String(v.clientBodyBufferSize)))
    throw new ConfigError(
      'clientBodyBufferSize',
      `"${v.clientBodyBufferSize}": expected an nginx size such as 64k or 1m`,
    )
  if (!String(v.fullPrefix).startsWith('/') || !/^[A-Za-z0-9._/-]+$/.test(String(v.fullPrefix)))
    throw new ConfigError('fullPrefix', `"${v.fullPrefix}": expected an absolute path of letters, digits and . _ / -`)
  const routes = parseRoutes(v.routes as unknown[], routesField)
  if (mode !== 'catalog' && routes.length === 0)
    throw new ConfigError(
      routesField,
      'at least one route is needed in the resolver and upstream modes (for example --route api.example.com=api:8080)',
    )
  return {
    ...(v as unknown as NginxConfig),
    listen,
    mode,
    consul: consulConnectionFrom(v)!,
    dns: parseDnsServers(v.dns, 'dns'),
    domain,
    routes,
  }
}
