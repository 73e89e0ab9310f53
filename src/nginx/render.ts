import type { DnsServer } from '../config/serve.js'
import { type Route, serviceDnsName } from '../routes/route.js'
import { NginxError } from './errors.js'
import { assertRouteSafe, assertSettingsSafe, commentText, type EmittedSettings } from './validate.js'
import { type NginxVersion, supportsUpstreamResolve, UPSTREAM_RESOLVE_SINCE } from './version.js'

/**
 * routes → nginx config text. Pure: no I/O, no clock, no randomness, so the same input gives the same bytes (servers
 * sorted by host, locations by path, upstreams by name) and a config-management diff shows only real changes.
 *
 * Two ways to reach a Consul service, chosen per mode:
 * - "resolver" style: `set $endpoint svc.service.consul; proxy_pass http://$endpoint:PORT…`. Works on every nginx,
 *   but A records carry no port (the route must name one) and a variable proxy_pass has no upstream keep-alive.
 * - "upstream" style: `upstream { zone …; server service.consul service=svc resolve; keepalive …; }`. nginx reads SRV
 *   records (each instance's registered port) and keeps connections alive; needs nginx 1.27.3+ or nginx Plus.
 */

export type NginxMode = 'resolver' | 'upstream' | 'catalog'
type Style = 'resolver' | 'upstream'

/** The settings (EmittedSettings: DNS, domain, listen, resolver and proxy timings) and what to render. */
export interface RenderOptions extends EmittedSettings {
  mode: NginxMode
  /** Routes for the resolver and upstream modes; ignored in catalog mode (services come from Consul). */
  routes: readonly Route[]
  /** Catalog mode: a fixed port for every service (resolver style, any nginx); null reads SRV ports (upstream style). */
  catalogPort: number | null
  /** A whole nginx.conf instead of an http-context file for conf.d/. */
  full: boolean
  /** With `full`: the folder of the pid file, logs and temp files (an nginx beside the system's shares none). */
  fullPrefix?: string
  /** When known, upstream style is refused for nginx older than 1.27.3. */
  nginxVersion?: NginxVersion | null
}

export interface FullConfigExtras {
  /**
   * The folder of the pid file, error and access logs and temp files. Without it nginx uses its compiled-in paths
   * (/run/nginx.pid, /var/log/nginx): a second nginx started as root beside a system one would take over its pid file.
   */
  prefixDir?: string
  /** Write an access log in prefixDir (default); false for nginx -t and the tests' and bench's servers. */
  accessLog?: boolean
  /** `user` directive: as root nginx would switch workers to `nobody`, which cannot read a private prefix. */
  user?: string
  /** Default `auto`. Each worker has its own resolver cache, so tests that count what one answer holds use 1. */
  workerProcesses?: number
}

const INDENT = '    '
const UPSTREAM_ZONE = '64k'
const CONNECTION_MAP_VAR = '$consul_lb_connection_upgrade'

/** The http-context text (or a whole nginx.conf with `full`) for the given options; catalog mode needs `services`. */
export function renderNginxConfig(opts: RenderOptions, services?: readonly string[]): string {
  const body = renderNginxHttp(opts, services)
  return opts.full ? wrapFullConfig(body, opts.fullPrefix !== undefined ? { prefixDir: opts.fullPrefix } : {}) : body
}

/** The http-context part only (what `nginx -t` checks inside a harness, and what --full wraps). */
export function renderNginxHttp(opts: RenderOptions, services?: readonly string[]): string {
  assertSettingsSafe(opts)
  const { routes, style } = routesFor(opts, services)
  for (const r of routes) assertRouteSafe(r)
  if (routes.length === 0)
    throw new NginxError(
      'CLB_NGINX_NO_ROUTES',
      opts.mode === 'catalog'
        ? 'the Consul catalog lists no service that can be written'
        : 'no routes: give --route or routes in the config file',
    )
  if (style === 'resolver') {
    const portless = routes.filter((r) => r.port === null)
    if (portless.length > 0) {
      throw new NginxError(
        'CLB_NGINX_NO_PORT',
        `the resolver mode reads addresses from A records, which carry no port; give these routes a fixed port (SERVICE:PORT) or use --mode upstream (SRV ports, nginx >= 1.27.3): ${portless.map((r) => commentText(r.source)).join('; ')}`,
      )
    }
  }
  assertNginxSupports(opts)
  return `${[...header(opts, style), ...httpLevel(opts, routes, style), ...servers(opts, routes, style)].join('\n')}\n`
}

/** Wraps an http-context text in a minimal whole nginx.conf that loads no dynamic modules and no /etc/nginx files. */
export function wrapFullConfig(httpBody: string, extras: FullConfigExtras = {}): string {
  // Unquoted nginx arguments: a folder or user name with a space or `;` would split the directive.
  if (extras.prefixDir !== undefined && !/^[A-Za-z0-9._/-]+$/.test(extras.prefixDir))
    throw new NginxError(
      'CLB_NGINX_UNSAFE_NAME',
      `prefix folder ${JSON.stringify(extras.prefixDir)} has characters nginx would misread (use letters, digits and . _ / -)`,
    )
  if (extras.user !== undefined && !/^[A-Za-z0-9._-]+$/.test(extras.user))
    throw new NginxError('CLB_NGINX_UNSAFE_NAME', `user ${JSON.stringify(extras.user)} is not a plain user name`)
  const lines = ['# Whole nginx.conf written by consul-lb nginx --full.']
  if (extras.user !== undefined) lines.push(`user ${extras.user};`)
  lines.push(`worker_processes ${extras.workerProcesses ?? 'auto'};`)
  const d = extras.prefixDir
  if (d !== undefined) {
    lines.push(`# pid, logs and temp files under ${d} (--full-prefix), never nginx's compiled-in /run/nginx.pid.`)
    lines.push(`pid ${d}/nginx.pid;`, `error_log ${d}/error.log notice;`)
  }
  lines.push('', 'events {', `${INDENT}worker_connections 1024;`, '}', '', 'http {')
  if (d !== undefined) {
    lines.push(extras.accessLog === false ? `${INDENT}access_log off;` : `${INDENT}access_log ${d}/access.log;`)
    for (const kind of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'])
      lines.push(`${INDENT}${kind}_temp_path ${d}/${kind}_temp;`)
    lines.push('')
  }
  for (const l of httpBody.replace(/\n$/, '').split('\n')) lines.push(l === '' ? '' : `${INDENT}${l}`)
  lines.push('}')
  return `${lines.join('\n')}\n`
}

/**
 * Refuses (CLB_NGINX_VERSION_TOO_OLD) a mode the target nginx cannot run, before anything else is done (the catalog
 * mode checks this before it asks Consul). Unknown version: allowed; the output's header names the requirement.
 */
export function assertNginxSupports(opts: Pick<RenderOptions, 'mode' | 'catalogPort' | 'nginxVersion'>): void {
  if (needsUpstreamResolve(opts) && opts.nginxVersion && !supportsUpstreamResolve(opts.nginxVersion)) {
    const v = UPSTREAM_RESOLVE_SINCE
    throw new NginxError(
      'CLB_NGINX_VERSION_TOO_OLD',
      `nginx ${opts.nginxVersion.text} cannot re-resolve upstream servers ("server … resolve" needs nginx >= ${v.major}.${v.minor}.${v.patch} or nginx Plus); use --mode resolver with fixed ports${opts.mode === 'catalog' ? ' (--catalog-port)' : ''}, or a newer nginx`,
    )
  }
}

/** The upstream mode, and the catalog mode without a fixed port, write `server … resolve` (nginx >= 1.27.3). */
export function needsUpstreamResolve(opts: Pick<RenderOptions, 'mode' | 'catalogPort'>): boolean {
  return opts.mode === 'upstream' || (opts.mode === 'catalog' && opts.catalogPort === null)
}

function routesFor(opts: RenderOptions, services: readonly string[] | undefined): { routes: Route[]; style: Style } {
  if (opts.mode === 'resolver') return { routes: [...opts.routes], style: 'resolver' }
  if (opts.mode === 'upstream') return { routes: [...opts.routes], style: 'upstream' }
  const routes = (services ?? []).map(
    (service): Route => ({
      source: `catalog service ${service}`,
      host: null,
      pathPrefix: `/${service}`,
      service,
      tag: null,
      datacenter: null,
      port: opts.catalogPort,
      stripPrefix: false,
      websocket: false,
    }),
  )
  return { routes, style: opts.catalogPort === null ? 'upstream' : 'resolver' }
}

function header(opts: RenderOptions, style: Style): string[] {
  const lines = [
    `# Written by consul-lb nginx (mode ${opts.mode}${opts.mode === 'catalog' ? `, ${style} style` : ''}). Do not edit: re-run consul-lb nginx.`,
    `# Consul DNS ${opts.dns.map(dnsServerText).join(', ')}, domain ${opts.domain}.`,
    '#',
    '# nginx sends no EDNS, so by default Consul answers it with at most 3 addresses and no TC bit: nginx reaches',
    '# every instance only when the Consul agent has dns_config { enable_truncate = true } (nginx then retries over TCP).',
  ]
  if (style === 'resolver') {
    lines.push(
      '# A variable proxy_pass ($endpoint) keeps no upstream connections alive: expect about a quarter of the',
      '# throughput of the upstream mode (13-14k against 44-59k req/s measured). Prefer --mode upstream on nginx >= 1.27.3.',
    )
  } else {
    lines.push(
      '# "server service.<domain> service=SVC resolve" asks SRV _SVC._tcp.service.<domain> (RFC 2782), so nginx learns',
      `# each instance's registered port; it needs nginx >= ${UPSTREAM_RESOLVE_SINCE.major}.${UPSTREAM_RESOLVE_SINCE.minor}.${UPSTREAM_RESOLVE_SINCE.patch} or nginx Plus.`,
    )
  }
  lines.push('')
  return lines
}

/**
 * The resolver lines, written into each server (resolver style) or upstream (upstream style) block rather than at http
 * level: a second emitted file in the same nginx (another port) would otherwise repeat an http-level `resolver`, which
 * nginx refuses as duplicate. Answers are cached resolverValidS (Consul's TTL is 0: nginx would ask every second); the
 * timeout replaces nginx's 30 s, which would make a request hang that long before its 502 while Consul is down.
 */
function resolverLines(opts: RenderOptions): string[] {
  return [
    `resolver ${opts.dns.map(dnsServerText).join(' ')} valid=${opts.resolverValidS}s ipv6=off;`,
    `resolver_timeout ${opts.resolverTimeoutS}s;`,
  ]
}

function httpLevel(opts: RenderOptions, routes: readonly Route[], style: Style): string[] {
  const lines: string[] = []
  if (routes.some((r) => r.websocket)) {
    // Two emitted files may both define this map: nginx accepts a map variable defined twice (checked with 1.22 and
    // 1.30), and the definitions are identical.
    lines.push(
      '# WebSocket routes: pass Upgrade through; plain requests get an empty Connection so upstream keep-alive works.',
      `map $http_upgrade ${CONNECTION_MAP_VAR} {`,
      `${INDENT}default upgrade;`,
      `${INDENT}'' '';`,
      '}',
      '',
    )
  }
  if (style === 'upstream') lines.push(...upstreams(opts, routes))
  return lines
}

/**
 * A DNS server as nginx's `resolver` reads it, built from the validated host and port: `label` is free text an
 * embedding caller may set to anything, so it never reaches the file.
 */
function dnsServerText(d: DnsServer): string {
  return d.host.includes(':') ? `[${d.host}]:${d.port}` : `${d.host}:${d.port}`
}

/**
 * Names, tags and datacenters may hold `_` and `-` but never a dot (routes/names.ts), so dot-separated qualifiers
 * cannot collide: service `a__tag_b` and service `a` with tag `b` get different upstreams. The listen address ends
 * the name, so two emitted files on two ports, both routing to `web`, do not define the same upstream twice.
 */
function upstreamName(r: Route, listen: string): string {
  return `consul_${r.service}${r.tag === null ? '' : `.tag.${r.tag}`}${r.datacenter === null ? '' : `.dc.${r.datacenter}`}${r.port === null ? '' : `.port.${r.port}`}.on.${listenTag(listen)}`
}

/**
 * The listen address as part of a name, one to one (validate.ts LISTEN: a port, or `*`, an IPv4 address, a host name
 * or a bracketed IPv6 address, then the port): brackets dropped, `:` and `*` written `_`. `8080` → `8080`,
 * `127.0.0.1:8080` → `127.0.0.1_8080`, `[::]:8080` → `___8080`, `*:8080` → `__8080`: a file for `8080` and one for
 * `[::]:8080` (IPv4 and IPv6 beside each other) never define the same upstream.
 */
function listenTag(listen: string): string {
  return listen.replace(/[[\]]/g, '').replace(/[:*]/g, '_')
}

function upstreams(opts: RenderOptions, routes: readonly Route[]): string[] {
  const byName = new Map<string, Route[]>()
  for (const r of routes) {
    const name = upstreamName(r, opts.listen)
    byName.set(name, [...(byName.get(name) ?? []), r])
  }
  const lines: string[] = []
  for (const name of [...byName.keys()].sort()) {
    const rs = byName.get(name)!
    const r = rs[0]!
    lines.push(`# Upstream for ${rs.map((x) => commentText(x.source)).join('; ')}`)
    lines.push(`upstream ${name} {`, `${INDENT}zone ${name} ${UPSTREAM_ZONE};`)
    for (const l of resolverLines(opts)) lines.push(`${INDENT}${l}`)
    if (r.port === null) {
      // nginx asks SRV `_<service>._tcp.<name>` unless the service= value has a dot, then `<service>.<name>`. A tagged
      // route uses the dotted form, Consul's standard `<tag>.<svc>.service.<domain>`: its RFC 2782 form
      // (`_svc._tag`) reads a tag named `tcp` or `udp` as the protocol and drops the filter.
      const service = r.tag === null ? r.service : `${r.tag}.${r.service}`
      const host = `service.${r.datacenter === null ? '' : `${r.datacenter}.`}${opts.domain}`
      lines.push(`${INDENT}server ${host} service=${service} resolve;`)
    } else {
      lines.push(`${INDENT}server ${serviceDnsName(r.service, r.tag, r.datacenter, opts.domain)}:${r.port} resolve;`)
    }
    lines.push(`${INDENT}keepalive ${opts.keepalive};`, '}', '')
  }
  return lines
}

interface ServerGroup {
  host: string | null
  routes: Route[]
}

/**
 * One server per host. Host-less routes match any host in the proxy, so they are copied into each host's server
 * (unless that host has its own route for the same path) and get a catch-all server of their own.
 */
function groupByHost(routes: readonly Route[]): ServerGroup[] {
  const anyHost = routes.filter((r) => r.host === null)
  const hosts = [...new Set(routes.filter((r) => r.host !== null).map((r) => r.host!))].sort()
  const groups: ServerGroup[] = hosts.map((host) => {
    const own = routes.filter((r) => r.host === host)
    const inherited = anyHost.filter((a) => !own.some((o) => o.pathPrefix === a.pathPrefix))
    return { host, routes: dedupePaths([...own, ...inherited]) }
  })
  if (anyHost.length > 0) groups.push({ host: null, routes: dedupePaths(anyHost) })
  return groups
}

/**
 * nginx refuses two identical locations; the first route written for a path wins, as in the proxy. Longest prefix
 * first, because regex locations match in file order (ties by text, so the order of the input does not matter).
 */
function dedupePaths(routes: Route[]): Route[] {
  const out: Route[] = []
  for (const r of routes) if (!out.some((o) => o.pathPrefix === r.pathPrefix)) out.push(r)
  return out.sort(
    (a, b) =>
      b.pathPrefix.length - a.pathPrefix.length ||
      (a.pathPrefix < b.pathPrefix ? -1 : a.pathPrefix > b.pathPrefix ? 1 : 0),
  )
}

function servers(opts: RenderOptions, routes: readonly Route[], style: Style): string[] {
  const hostGroups = groupByHost(routes)
  // The catch-all server comes first: nginx takes the first server of a port as its default, so a Host no route names
  // gets the host-less routes (or 404, as consul-lb serve answers) rather than the first host's service. It is not
  // marked default_server unless asked (--default-server): a distribution's default site claims that for port 80,
  // and two claims make nginx refuse the whole config.
  const catchAll = hostGroups.find((g) => g.host === null) ?? { host: null, routes: [] }
  const groups = [catchAll, ...hostGroups.filter((g) => g.host !== null)]
  const lines: string[] = []
  for (const g of groups) {
    const isCatchAll = g.host === null
    lines.push(isCatchAll ? '# Requests for any other host.' : `# Host ${g.host}.`)
    lines.push(
      'server {',
      `${INDENT}listen ${opts.listen}${isCatchAll && opts.defaultServer ? ' default_server' : ''};`,
      `${INDENT}server_name ${g.host ?? '_'};`,
      // nginx's default (8k on x86-64) writes a 16 KiB request body to a temp file before proxying it.
      `${INDENT}client_body_buffer_size ${opts.clientBodyBufferSize};`,
      ...(style === 'resolver' ? resolverLines(opts).map((l) => `${INDENT}${l}`) : []),
      '',
    )
    for (const r of g.routes) lines.push(...locations(opts, r, style))
    if (!g.routes.some((r) => r.pathPrefix === '/')) {
      // Without it, a path no route covers falls to nginx's implicit static-file location (its welcome page, or any
      // file under the prefix's html/ folder); consul-lb serve answers 404.
      lines.push(
        `${INDENT}# No route covers other paths.`,
        `${INDENT}location / {`,
        `${INDENT}${INDENT}return 404;`,
        `${INDENT}}`,
        '',
      )
    }
    if (opts.mode === 'catalog') {
      lines.push(
        `${INDENT}# nginx's own counters, for the local host only.`,
        `${INDENT}location = /nginx_status {`,
        `${INDENT}${INDENT}stub_status;`,
        `${INDENT}${INDENT}allow 127.0.0.1;`,
        `${INDENT}${INDENT}allow ::1;`,
        `${INDENT}${INDENT}deny all;`,
        `${INDENT}}`,
        '',
      )
    }
    if (lines[lines.length - 1] === '') lines.pop()
    lines.push('}', '')
  }
  lines.pop()
  return lines
}

/**
 * `/api` must match `/api` and `/api/…` but not `/apix` (segment boundaries, as in the proxy). A regex location does
 * that in one block; nginx tries regex locations in file order before falling back to prefix ones, so they are
 * written longest prefix first (dedupePaths) and `location /` stays a prefix location that catches the rest.
 */
function locations(opts: RenderOptions, r: Route, style: Style): string[] {
  const matcher = r.pathPrefix === '/' ? '/' : `~ ^${regexLiteral(r.pathPrefix)}(?:/|$)`
  return [
    `${INDENT}# route: ${commentText(r.source)}`,
    `${INDENT}location ${matcher} {`,
    ...proxyBlock(opts, r, style).map((l) => `${INDENT}${INDENT}${l}`),
    `${INDENT}}`,
    '',
  ]
}

/**
 * A path prefix as a PCRE literal for nginx, which matches locations against the decoded path: `.` escaped, a `%XX`
 * escape written as the byte `\xHH` (unreserved characters as themselves), so `/caf%C3%A9` matches `/café` however
 * the client encoded it. Prefixes hold only [A-Za-z0-9._~/-] and checked escapes (validate.ts).
 */
function regexLiteral(path: string): string {
  return path.replace(/%([0-9A-Fa-f]{2})|\./g, (_m, hex: string | undefined) => {
    if (hex === undefined) return '\\.'
    const c = String.fromCharCode(Number.parseInt(hex, 16))
    if (/[A-Za-z0-9_~-]/.test(c)) return c
    return c === '.' ? '\\.' : `\\x${hex.toUpperCase()}`
  })
}

function proxyBlock(opts: RenderOptions, r: Route, style: Style): string[] {
  const lines: string[] = []
  // `set` before `rewrite … break`: break ends every rewrite-module directive of the location, `set` included, and
  // an unset $endpoint makes nginx answer 500 (caught by test/routes-parity.test.ts).
  if (style === 'resolver') lines.push(`set $endpoint ${serviceDnsName(r.service, r.tag, r.datacenter, opts.domain)};`)
  if (r.stripPrefix) lines.push(`rewrite ^${regexLiteral(r.pathPrefix)}/?(.*)$ /$1 break;`)
  if (style === 'resolver') {
    // With variables and no URI part nginx passes the rewritten URI after `rewrite … break`; otherwise the original.
    lines.push(
      r.stripPrefix ? `proxy_pass http://$endpoint:${r.port};` : `proxy_pass http://$endpoint:${r.port}$request_uri;`,
    )
  } else {
    lines.push(`proxy_pass http://${upstreamName(r, opts.listen)};`)
  }
  lines.push(
    'proxy_http_version 1.1;',
    'proxy_set_header Host $host;',
    'proxy_set_header X-Real-IP $remote_addr;',
    'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    'proxy_set_header X-Forwarded-Proto $scheme;',
  )
  if (r.websocket)
    lines.push('proxy_set_header Upgrade $http_upgrade;', `proxy_set_header Connection ${CONNECTION_MAP_VAR};`)
  else lines.push('proxy_set_header Connection "";')
  lines.push(
    'proxy_next_upstream error timeout;',
    'proxy_next_upstream_tries 3;',
    `proxy_connect_timeout ${opts.connectTimeoutS}s;`,
    `proxy_send_timeout ${opts.readTimeoutS}s;`,
    `proxy_read_timeout ${opts.readTimeoutS}s;`,
  )
  return lines
}
