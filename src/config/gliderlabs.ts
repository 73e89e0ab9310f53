import { existsSync } from 'node:fs'
import { ConfigError } from '../errors.js'
import { type FieldSpec, flagName } from './fields.js'

/**
 * gliderlabs/registrator's command line as an alternative syntax of `consul-lb registrator`, so that
 * `docker run … gliderlabs/registrator -ip=10.0.0.5 -resync 30 consul://127.0.0.1:8500` works with only the image
 * name changed. Parsed with Go's `flag` package rules (registrator.go calls flag.Parse), which no npm parser keeps:
 * one or two dashes; `-name=value` or `-name value`, except boolean flags, which never take a separate value
 * (`-cleanup false` is the flag and then a positional argument); parsing stops at the first non-flag argument or `--`;
 * then exactly one positional argument, the registry URI (registrator.go: "Options should come before the registry URI
 * argument"). A flag given twice takes its last value, `-tags` included (Go's flag.String keeps one). Our own settings
 * are accepted the same way under their flag names (`-host-id`, `-consul-token-file`).
 *
 * Values that gliderlabs took and we would refuse mean what they meant there: an empty `-ip`, `-tags` or
 * `-useIpFromLabel` is gliderlabs' default (none; `-ip=$HOST_IP` with the variable unset), and `-resync` of 0 or less
 * is no periodic resync (registrator.go starts its ticker only above 0).
 */

/** gliderlabs' flags that are not ours by name, → our field key (or a handler of their own below). */
const GLIDERLABS_NAMES: Record<string, string> = {
  useIpFromLabel: 'useIpFromLabel',
}
/** gliderlabs' string flags whose default is "": an empty value given for one is that default. */
const EMPTY_IS_UNSET = new Set(['ip', 'tags', 'useIpFromLabel'])
/** gliderlabs' TTL flags: used by its etcd and skydns2 backends only; its Consul adapter ignores them (Refresh is a
 * no-op), and so does this registrator, after checking them as gliderlabs does. */
const TTL_FLAGS = ['ttl', 'ttl-refresh'] as const
/** The registry URI schemes of gliderlabs' Consul adapter (consul/consul.go). */
const REGISTRY_SCHEMES = ['consul', 'consul-tls', 'consul-unix']
/** Backends gliderlabs supports and this registrator does not, with what to do instead. */
const OTHER_BACKENDS: Record<string, string> = {
  etcd: 'etcd',
  etcd2: 'etcd',
  skydns2: 'SkyDNS 2',
  zookeeper: 'ZooKeeper',
  consulkv: "Consul's KV store",
  'consulkv-unix': "Consul's KV store",
}

export interface GliderlabsCommandLine {
  /** Values by field key, as the flags of `consul-lb registrator` would give them. */
  readonly flags: Record<string, unknown>
  /** Things to log once started (flags accepted and deliberately not acted on). */
  readonly notes: string[]
  /** -c / -config: a config file, as `consul-lb registrator --config`. */
  readonly configFile: string | null
  /** -h / -help / --help: print the usage instead of running. */
  readonly help: boolean
  readonly version: boolean
}

/**
 * True when `args` (after `consul-lb registrator`, or after `consul-lb` itself) use gliderlabs' syntax: a single-dash
 * long flag (`-ip`, `-resync`), or a registry URI (consul://, consul-tls://, consul-unix://, or a backend gliderlabs
 * had: etcd://…, for its error). Our own syntax has only `--long` flags and `-c`, whose values are http:// URLs.
 */
export function isGliderlabsSyntax(args: readonly string[]): boolean {
  let afterDashes = false
  for (const a of args) {
    // After `--` only the registry URI can tell (Go's flag package stops there; commander would see one argument).
    if (a === '--') afterDashes = true
    else if (!afterDashes && /^-[A-Za-z][A-Za-z-]+(=|$)/.test(a)) return true
    else if (registryScheme(a) !== null) return true
  }
  return false
}

function registryScheme(arg: string): string | null {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(arg)?.[1]?.toLowerCase()
  return scheme && (REGISTRY_SCHEMES.includes(scheme) || scheme in OTHER_BACKENDS) ? scheme : null
}

/** Go's strconv.ParseBool, which flag uses for `-name=value` on a boolean flag. */
function parseGoBool(flag: string, v: string): boolean {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false
  throw new ConfigError(`-${flag}`, `invalid boolean value "${v}" (true, false, 1, 0, t, f)`)
}

export function parseGliderlabsCommandLine(
  args: readonly string[],
  fields: readonly FieldSpec[],
  env: NodeJS.ProcessEnv,
): GliderlabsCommandLine {
  const byFlag = new Map<string, FieldSpec>()
  for (const f of fields) if (!f.hidden) byFlag.set(flagName(f.key), f)
  for (const [name, key] of Object.entries(GLIDERLABS_NAMES)) byFlag.set(name, fields.find((f) => f.key === key)!)
  const flags: Record<string, unknown> = {}
  const notes: string[] = []
  const ttl: Record<string, number> = {}
  let help = false
  let version = false
  let configFile: string | null = null
  let i = 0
  for (; i < args.length; i++) {
    const a = args[i]!
    if (a === '--') {
      i++
      break
    }
    if (!a.startsWith('-') || a === '-') break
    const body = a.startsWith('--') ? a.slice(2) : a.slice(1)
    if (body === '' || body.startsWith('-') || body.startsWith('='))
      throw new ConfigError(a, 'bad flag syntax (Go flag rules: -name, -name=value or -name value)')
    const eq = body.indexOf('=')
    const name = eq === -1 ? body : body.slice(0, eq)
    const inline = eq === -1 ? undefined : body.slice(eq + 1)
    if (name === 'h' || name === 'help') {
      help = true
      continue
    }
    if (name === 'version') {
      version = true
      continue
    }
    const takeValue = (): string => {
      if (inline !== undefined) return inline
      if (i + 1 >= args.length) throw new ConfigError(`-${name}`, 'flag needs an argument')
      return args[++i]!
    }
    if ((TTL_FLAGS as readonly string[]).includes(name)) {
      const v = takeValue()
      if (!/^-?\d+$/.test(v)) throw new ConfigError(`-${name}`, `"${v}": expected a whole number of seconds`)
      ttl[name] = Number(v)
      continue
    }
    if (name === 'c' || name === 'config') {
      configFile = takeValue()
      continue
    }
    const f = byFlag.get(name)
    if (!f) throw new ConfigError(`-${name}`, 'flag provided but not defined (run with -h for the flags)')
    if (f.kind === 'bool') {
      flags[f.key] = inline === undefined ? true : parseGoBool(name, inline)
      continue
    }
    const value = takeValue()
    if (value === '' && EMPTY_IS_UNSET.has(f.key)) delete flags[f.key]
    else if (f.key === 'resync' && /^-\d+$/.test(value)) flags[f.key] = '0'
    // One item, the last given: gliderlabs evaluates -tags as one template, then splits it (tags.ts).
    else flags[f.key] = f.kind === 'list' ? [value] : value
  }
  const rest = args.slice(i)
  if (help || version) return { flags, notes, configFile, help, version }
  if (rest.length === 0) throw new ConfigError('registry URI', 'missing: give consul://HOST:PORT after the options')
  if (rest.length > 1)
    throw new ConfigError(
      'registry URI',
      `extra arguments after it: ${rest.slice(1).join(' ')} (options come before the registry URI, as in gliderlabs)`,
    )
  const registry = consulFromRegistryUri(rest[0]!, env)
  Object.assign(flags, registry.flags)
  notes.push(...registry.notes)
  // registrator.go's own checks of the TTL flags, then the reason they change nothing here.
  const t = ttl.ttl ?? 0
  const r = ttl['ttl-refresh'] ?? 0
  if ((t === 0) !== (r === 0))
    throw new ConfigError('-ttl', '-ttl and -ttl-refresh must be specified together or not at all')
  if (t > 0 && t <= r) throw new ConfigError('-ttl', '-ttl must be greater than -ttl-refresh')
  if (t > 0)
    notes.push(
      `-ttl ${t} -ttl-refresh ${r} ignored: registration TTLs are for gliderlabs' etcd and SkyDNS backends (its Consul adapter ignored them too); use SERVICE_CHECK_TTL or a Docker HEALTHCHECK for liveness`,
    )
  // gliderlabs' image reads the engine at unix:///tmp/docker.sock (its run docs mount the host's socket there).
  if (flags.docker === undefined && !env.DOCKER_HOST && !env.CONSUL_LB_DOCKER && existsSync('/tmp/docker.sock'))
    flags.docker = 'unix:///tmp/docker.sock'
  return { flags, notes, configFile, help, version }
}

/**
 * The registry URI → this registrator's Consul settings (consul/consul.go Factory.New):
 * `consul://HOST:PORT` → http://HOST:PORT (no host: CONSUL_HTTP_ADDR or the default, as gliderlabs' DefaultConfig);
 * `consul-tls://HOST:PORT` → https://HOST:PORT with the CA and client certificate from CONSUL_CACERT,
 * CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY (Consul's names), or gliderlabs' own CONSUL_TLSCERT and CONSUL_TLSKEY;
 * `consul-unix:///path/agent.sock` → the agent's unix socket. Other backends get a clear error. gliderlabs' Consul
 * adapter read only the URI's host (Go's url.URL.Host): a user name, path, query or fragment is left out, with a note.
 */
export function consulFromRegistryUri(
  uri: string,
  env: NodeJS.ProcessEnv,
): { flags: Record<string, unknown>; notes: string[] } {
  const m = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(uri)
  if (!m)
    throw new ConfigError('registry URI', `"${uri}": expected consul://HOST:PORT (or consul-tls://, consul-unix://)`)
  const scheme = m[1]!.toLowerCase()
  const rest = m[2]!
  const other = OTHER_BACKENDS[scheme]
  if (other)
    throw new ConfigError(
      'registry URI',
      `"${uri}": ${other} is not supported: consul-lb registers services in Consul's catalog (consul://, consul-tls://, consul-unix://)`,
    )
  if (scheme === 'consul-unix') {
    const path = rest.startsWith('/') ? rest : `/${rest}`
    if (path === '/') throw new ConfigError('registry URI', `"${uri}": expected consul-unix:///path/to/agent.sock`)
    return { flags: { consul: `unix://${path}` }, notes: [] }
  }
  if (scheme !== 'consul' && scheme !== 'consul-tls')
    throw new ConfigError(
      'registry URI',
      `"${uri}": unknown registry backend "${scheme}" (consul://, consul-tls://, consul-unix://)`,
    )
  const authority = /^[^/?#]*/.exec(rest)![0]
  const host = authority.slice(authority.lastIndexOf('@') + 1)
  const notes =
    host === rest
      ? []
      : [`registry URI ${scheme}://${host}: the rest of "${uri}" is ignored, as gliderlabs' Consul adapter ignored it`]
  const out: Record<string, unknown> = {}
  if (scheme === 'consul-tls') {
    if (!host) throw new ConfigError('registry URI', `"${uri}": consul-tls:// needs HOST:PORT`)
    out.consul = `https://${host}`
    if (env.CONSUL_TLSCERT && !env.CONSUL_CLIENT_CERT) out.consulClientCert = env.CONSUL_TLSCERT
    if (env.CONSUL_TLSKEY && !env.CONSUL_CLIENT_KEY) out.consulClientKey = env.CONSUL_TLSKEY
  } else if (host) {
    out.consul = `http://${host}`
  }
  return { flags: out, notes }
}

/** The usage text of the gliderlabs syntax, for -h. */
export function gliderlabsUsage(): string {
  return [
    'Usage: consul-lb registrator [options] <registry URI>   (gliderlabs/registrator syntax)',
    '       consul-lb [options] <registry URI>               (the same, for `docker run <image> …` lines)',
    '',
    'Registry URI: consul://HOST:PORT, consul-tls://HOST:PORT (CONSUL_CACERT, CONSUL_CLIENT_CERT/CONSUL_TLSCERT,',
    '              CONSUL_CLIENT_KEY/CONSUL_TLSKEY), consul-unix:///path/agent.sock',
    '',
    "gliderlabs' options (Go flag syntax: -name value, -name=value; booleans -name or -name=false):",
    '  -ip <address>            address registered for published ports',
    '  -internal                register container IPs and exposed ports',
    '  -explicit                only containers with SERVICE_NAME / SERVICE_<port>_NAME',
    '  -tags <tags>             tags for every service (comma list, \\, escapes, Go templates)',
    '  -resync <seconds>        full reconcile period (consul-lb default 30; 0: off)',
    "  -cleanup                 remove registrations of this host whose containers are gone (gliderlabs' own: only with it)",
    '  -deregister <mode>       always, on-success (exit 0 or by a signal) or never',
    '  -retry-attempts <n>      Consul retries at start (-1: forever, the consul-lb default)',
    '  -retry-interval <ms>     first delay between retries',
    '  -useIpFromLabel <label>  register the address held in this container label',
    '  -require-label           only containers with a SERVICE_REGISTER label',
    '  -ttl, -ttl-refresh       accepted and ignored (gliderlabs used them for etcd/SkyDNS only)',
    '',
    'Every `consul-lb registrator --help` option is accepted too, with one dash (-host-id, -consul-token-file, …).',
  ].join('\n')
}
