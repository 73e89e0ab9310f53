import { type ConsulConnection, type ConsulTls, DEFAULT_CONSUL_ADDRESS } from '../consul/connection.js'
import { readTlsMaterial, readTokenFile, tokenProblem } from '../consul/credentials.js'
import { ConsulCredentialError, type CredentialField } from '../consul/errors.js'
import { ConfigError } from '../errors.js'
import type { FieldSpec } from './fields.js'

/**
 * How every command that talks to Consul's HTTP API reaches it (registrator, serve --registrator and serve's 503
 * explainer, nginx catalog mode and --check, doctor): one table, with Consul's own environment variable names as
 * aliases so an operator's existing environment just works.
 */
export const CONSUL_FIELDS: readonly FieldSpec[] = [
  {
    key: 'consul',
    kind: 'string',
    default: null,
    arg: '<url>',
    envAliases: ['CONSUL_HTTP_ADDR'],
    help: "the Consul agent's HTTP API: http://host:port, https://host:port (either with the path prefix of an API gateway in front of it, as Consul's client takes it), host:port (https with --consul-http-ssl) or unix:///path/agent.sock; default http://127.0.0.1:8500 (serve: unset unless given or --registrator; when set, a 503 says why a service has no instance)",
  },
  {
    key: 'consulHttpSsl',
    kind: 'bool',
    default: false,
    envAliases: ['CONSUL_HTTP_SSL'],
    help: "HTTPS to a --consul given as host:port or unix:// (and, as in Consul's client, to an http:// one: it never downgrades)",
  },
  {
    key: 'consulToken',
    kind: 'string',
    default: null,
    arg: '<token>',
    envAliases: ['CONSUL_HTTP_TOKEN'],
    secret: true,
    help: 'ACL token (a flag or env var shows in ps and /proc: prefer --consul-token-file); never logged',
  },
  {
    key: 'consulTokenFile',
    kind: 'string',
    default: null,
    arg: '<file>',
    envAliases: ['CONSUL_HTTP_TOKEN_FILE'],
    help: 'file holding the ACL token, re-read when it changes (rotation without restart); wins over --consul-token when not empty',
  },
  {
    key: 'consulCaFile',
    kind: 'string',
    default: null,
    arg: '<file>',
    envAliases: ['CONSUL_CACERT'],
    help: "PEM file of the CA that signed the agent's certificate (default: the system's CAs); re-read when it changes",
  },
  {
    key: 'consulCaPath',
    kind: 'string',
    default: null,
    arg: '<dir>',
    envAliases: ['CONSUL_CAPATH'],
    help: 'folder of PEM CA certificates (every file in it holding one)',
  },
  {
    key: 'consulClientCert',
    kind: 'string',
    default: null,
    arg: '<file>',
    envAliases: ['CONSUL_CLIENT_CERT'],
    help: 'client certificate (PEM) for agents with verify_incoming; re-read when it changes',
  },
  {
    key: 'consulClientKey',
    kind: 'string',
    default: null,
    arg: '<file>',
    envAliases: ['CONSUL_CLIENT_KEY'],
    help: "the client certificate's private key (PEM)",
  },
  {
    key: 'consulTlsServerName',
    kind: 'string',
    default: null,
    arg: '<name>',
    envAliases: ['CONSUL_TLS_SERVER_NAME'],
    help: "the name the agent's certificate must carry (SNI), for example server.dc1.consul (default: the host of --consul; a :port is dropped, as Consul does)",
  },
  {
    key: 'consulHttpSslVerify',
    kind: 'bool',
    default: true,
    envAliases: ['CONSUL_HTTP_SSL_VERIFY'],
    help: "verify the agent's certificate; false accepts any certificate (never in production: consul-lb doctor reports it)",
  },
]

const FIELD_OF: Record<CredentialField, string> = {
  tokenFile: 'consulTokenFile',
  caFile: 'consulCaFile',
  caPath: 'consulCaPath',
  certFile: 'consulClientCert',
  keyFile: 'consulClientKey',
}

/**
 * The validated connection from CONSUL_FIELDS values. `defaultAddress` is used when no address is given; null means
 * "no Consul HTTP API" (serve without --consul) and returns null. The token and TLS files are read once here, so a
 * missing file or a key that does not match its certificate fails at start-up (exit 2) naming the setting; with
 * `readFiles` false (doctor, which reports them as findings) they are left to the client.
 */
export function consulConnectionFrom(
  v: Record<string, unknown>,
  defaultAddress: string | null = DEFAULT_CONSUL_ADDRESS,
  readFiles = true,
): ConsulConnection | null {
  const raw = (v.consul as string | null) ?? defaultAddress
  if (raw === null) return null
  const ssl = v.consulHttpSsl === true
  const address = consulAddress(raw, ssl)
  const str = (k: string) => (v[k] as string | null | undefined) ?? null
  const tlsSettings = ['consulCaFile', 'consulCaPath', 'consulClientCert', 'consulClientKey', 'consulTlsServerName']
  const isHttps = address.startsWith('https://') || (address.startsWith('unix://') && ssl)
  if (!isHttps) {
    const given = tlsSettings.find((k) => str(k) !== null)
    if (given)
      throw new ConfigError(
        given,
        `is set but the Consul address ${address} is plain HTTP: use https:// (or --consul-http-ssl for host:port and unix://)`,
      )
  }
  if ((str('consulClientCert') === null) !== (str('consulClientKey') === null))
    throw new ConfigError(
      str('consulClientCert') === null ? 'consulClientCert' : 'consulClientKey',
      'a client certificate needs its key, and a key its certificate: give both',
    )
  const tls: ConsulTls | null = isHttps
    ? {
        caFile: str('consulCaFile'),
        caPath: str('consulCaPath'),
        certFile: str('consulClientCert'),
        keyFile: str('consulClientKey'),
        serverName: str('consulTlsServerName') === null ? null : tlsServerName(str('consulTlsServerName')!),
        verify: v.consulHttpSslVerify !== false,
      }
    : null
  const tokenFile = str('consulTokenFile')
  try {
    if (tls && readFiles) readTlsMaterial(tls)
    if (tokenFile && readFiles) readTokenFile(tokenFile)
  } catch (err) {
    if (err instanceof ConsulCredentialError) throw new ConfigError(FIELD_OF[err.field], err.message)
    throw err
  }
  const token = str('consulToken')?.trim() || null
  const wrong = token ? tokenProblem(token) : null
  if (wrong) throw new ConfigError('consulToken', wrong.replace(/^holds/, 'the token holds'))
  return { address, token, tokenFile, tls }
}

/**
 * CONSUL_HTTP_ADDR forms as Consul's API client reads them (api.NewClient): http(s)://host:port[/prefix],
 * unix:///path, or a bare host:port (https when CONSUL_HTTP_SSL says so). A path is the prefix of an API gateway in
 * front of the agent (Consul's PathPrefix: `https://gw:443/consul` asks `https://gw:443/consul/v1/…`). As in Consul,
 * CONSUL_HTTP_SSL=true never lets an `http://` address downgrade to plain HTTP. Returns the normalised address.
 */
export function consulAddress(raw: string, ssl: boolean): string {
  const s = raw.trim()
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `${ssl ? 'https' : 'http'}://${s}`
  // An address that does not parse is echoed in the error: never with the credentials it may carry.
  const shown = `"${raw.replace(/\/\/[^/@]*@/, '//<credentials>@')}"`
  let u: URL | null = null
  try {
    u = new URL(withScheme)
  } catch {
    u = null
  }
  if (u?.protocol === 'unix:') {
    // 107 bytes is the sun_path limit of a unix socket address on Linux.
    if (!u.pathname || u.pathname === '/' || u.pathname.length > 107 || u.host)
      throw new ConfigError('consul', `${shown}: expected unix:///path/to/agent.sock (absolute, at most 107 bytes)`)
    return `unix://${u.pathname}`
  }
  if (u?.username || u?.password) throw new ConfigError('consul', 'must not carry credentials: use --consul-token-file')
  if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || !u.hostname || u.search || u.hash)
    throw new ConfigError(
      'consul',
      `${shown}: expected http://host:port, https://host:port (optionally with an API gateway's path prefix), host:port or unix:///path/to/agent.sock`,
    )
  const protocol = ssl ? 'https:' : u.protocol
  return `${protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`
}

/**
 * CONSUL_TLS_SERVER_NAME as Consul's SetupTLSConfig reads it: a `host:port` (or `[v6]:port`) loses its port, since
 * the name is only matched against the certificate.
 */
export function tlsServerName(raw: string): string {
  const s = raw.trim()
  const m = /^\[([^\]]+)\](?::\d*)?$/.exec(s) ?? /^([^:]+):\d*$/.exec(s)
  return m ? m[1]! : s
}
