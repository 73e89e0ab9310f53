/**
 * How to reach one Consul agent's HTTP API, as Consul's own CLI and API client take it (CONSUL_HTTP_ADDR,
 * CONSUL_CACERT, CONSUL_HTTP_TOKEN_FILE, …). config/ produces these values, validated; the client (client.ts) and the
 * file watcher (credentials.ts) consume them. Every command that talks to the HTTP API gets one.
 */
export interface ConsulConnection {
  /** `http://host:port`, `https://host:port`, or `unix:///path/to/socket` (then `tls` says whether it is HTTPS). */
  readonly address: string
  /** An ACL token given directly (flag, env, file key). Never logged. */
  readonly token: string | null
  /** A file holding the token; re-read when it changes. Wins over `token` when it holds one, as in Consul's CLI. */
  readonly tokenFile: string | null
  /** HTTPS settings; null for plain HTTP. */
  readonly tls: ConsulTls | null
}

export interface ConsulTls {
  /** PEM file of the CA(s) that sign the agent's certificate; null: the system's roots (plus NODE_EXTRA_CA_CERTS). */
  readonly caFile: string | null
  /** A folder of PEM CA certificates (every file in it that holds one). */
  readonly caPath: string | null
  /** Client certificate and key, for agents with `verify_incoming`. Both or neither. */
  readonly certFile: string | null
  readonly keyFile: string | null
  /** The name the agent's certificate must carry (SNI and verification); default: the address's host. */
  readonly serverName: string | null
  /** false turns certificate verification off (CONSUL_HTTP_SSL_VERIFY=false): `consul-lb doctor` reports it. */
  readonly verify: boolean
}

/** The connection as logs and /status may show it: files and address, never the token. */
export function describeConnection(c: ConsulConnection): Record<string, unknown> {
  return {
    address: c.address,
    token: c.tokenFile ? `from file ${c.tokenFile}` : c.token ? 'given (not shown)' : 'none (anonymous)',
    tls: c.tls
      ? {
          caFile: c.tls.caFile,
          caPath: c.tls.caPath,
          clientCert: c.tls.certFile,
          clientKey: c.tls.keyFile,
          serverName: c.tls.serverName,
          verify: c.tls.verify,
        }
      : false,
  }
}

/** Consul's own default, as its CLI uses when CONSUL_HTTP_ADDR is unset. */
export const DEFAULT_CONSUL_ADDRESS = 'http://127.0.0.1:8500'
