import { ConsulLbError } from '../errors.js'
import { type ClientCertificate, classifyTlsFailure, type TlsFailure, type TlsProblem } from '../tls/failure.js'

export type ConsulApiErrorCode =
  | 'CLB_CONSUL_UNREACHABLE' // connection refused, reset, no such socket
  | 'CLB_CONSUL_HTTP' // Consul answered an error status other than 403
  | 'CLB_CONSUL_TIMEOUT'
  | 'CLB_CONSUL_BAD_RESPONSE' // not JSON (a proxy's HTML page in front of the agent)
  | 'CLB_CONSUL_ACL_DENIED' // 403, or an answer emptied by ACL filtering: see ConsulAclError
  | 'CLB_CONSUL_TLS' // the TLS handshake failed: see ConsulTlsError
  | 'CLB_CONSUL_CREDENTIALS' // a token, certificate, key or CA file cannot be used: see ConsulCredentialError

export class ConsulApiError extends ConsulLbError {
  readonly httpStatus: number | null
  constructor(code: ConsulApiErrorCode, message: string, httpStatus: number | null, options?: { cause?: unknown }) {
    super(code, message, 502, options)
    this.name = 'ConsulApiError'
    this.httpStatus = httpStatus
  }
}

/**
 * Consul refused an operation for want of an ACL permission (HTTP 403), or its answer was emptied by ACL filtering.
 * `permission` is what is missing (`service:write on "web"`), from Consul's own answer when it says so.
 */
export class ConsulAclError extends ConsulApiError {
  readonly operation: string
  readonly permission: string | null
  /** permission: the token lacks a right; unknown-token: Consul does not know the token (ACL not found). */
  readonly reason: 'permission' | 'unknown-token'
  constructor(
    operation: string,
    permission: string | null,
    reason: 'permission' | 'unknown-token',
    message: string,
    httpStatus: number | null,
  ) {
    super('CLB_CONSUL_ACL_DENIED', message, httpStatus)
    this.name = 'ConsulAclError'
    this.operation = operation
    this.permission = permission
    this.reason = reason
  }
}

export type { TlsProblem }

export class ConsulTlsError extends ConsulApiError {
  readonly problem: TlsProblem
  constructor(problem: TlsProblem, message: string, options?: { cause?: unknown }) {
    super('CLB_CONSUL_TLS', message, null, options)
    this.name = 'ConsulTlsError'
    this.problem = problem
  }
}

export type CredentialField = 'tokenFile' | 'caFile' | 'caPath' | 'certFile' | 'keyFile'

/** A token file or TLS file that cannot be read or used; `field` is the setting that names it. */
export class ConsulCredentialError extends ConsulApiError {
  readonly field: CredentialField
  readonly path: string
  constructor(field: CredentialField, path: string, detail: string) {
    super('CLB_CONSUL_CREDENTIALS', `${path}: ${detail}`, null)
    this.name = 'ConsulCredentialError'
    this.field = field
    this.path = path
  }
}

/** What the client knows of its own TLS settings: the client certificate it presents, the name it expects. */
export interface TlsContext extends ClientCertificate {
  readonly serverName: string | null
}

/**
 * Turns a transport failure into a coded error that says what is wrong and how to fix it: TLS problems by kind
 * (`failure`, from tls/failure.ts, when the caller already has it), everything else as unreachable. `address` and the
 * context are only used in the message.
 */
export function transportError(
  err: unknown,
  address: string,
  tls: TlsContext | null,
  failure: TlsFailure | null = tls ? classifyTlsFailure(err, tls) : null,
): ConsulApiError {
  const at = `Consul at ${address}`
  const opts = { cause: err }
  if (failure) return new ConsulTlsError(failure.problem, `${at}: ${tlsMessage(failure, tls)}`, opts)
  const codes: string[] = []
  let first: string | undefined
  for (let e = err as { cause?: unknown; code?: string; message?: string } | undefined, i = 0; e && i < 5; i++) {
    codes.push(e.code ?? '')
    first ??= e.message
    e = e.cause as typeof e
  }
  const code = codes.find((c) => c && !c.startsWith('UND_ERR')) ?? codes[0] ?? ''
  return new ConsulApiError(
    'CLB_CONSUL_UNREACHABLE',
    `${at} unreachable (${code || (first ?? 'unknown error')})`,
    null,
    opts,
  )
}

/** The sentence for a TLS problem with the agent, with the Consul setting that fixes it. */
function tlsMessage(f: TlsFailure, tls: TlsContext | null): string {
  switch (f.problem) {
    case 'unknown-ca':
      return `the agent's certificate is not signed by a CA we trust (${f.detail}); give the CA that signed it with --consul-ca-file / CONSUL_CACERT (or --consul-ca-path / CONSUL_CAPATH)`
    case 'name-mismatch':
      return `the agent's certificate is not for the name we expect${tls?.serverName ? ` (${tls.serverName})` : ''}: ${f.detail}; connect by a name the certificate carries, or set --consul-tls-server-name / CONSUL_TLS_SERVER_NAME to one (Consul's server certificates carry server.<dc>.<domain>)`
    case 'expired':
      return `the agent's certificate ${f.detail === 'CERT_HAS_EXPIRED' ? 'has expired' : 'is not valid yet (clock skew?)'}; the agent needs a new certificate`
    case 'client-cert-required':
      return 'the agent requires a client certificate (verify_incoming) and none was given; set --consul-client-cert and --consul-client-key (CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)'
    case 'client-cert-expired':
      return `the agent refused our client certificate because it expired (${f.detail})${tls?.clientCertValidTo ? ` on ${tls.clientCertValidTo.toISOString()}` : ''}; issue a new one (consul tls cert create -client) and write it and its key over the files of --consul-client-cert / --consul-client-key: it is picked up without restart`
    case 'client-cert-rejected':
      return `the agent refused our client certificate (${f.detail}): it must be signed by the CA in the agent's tls ca_file, be valid now, and allow client authentication`
    case 'not-tls':
      return "the agent answers plain HTTP on this port, not HTTPS; use http:// or the agent's HTTPS port (ports.https)"
    case 'tls-required':
      return 'the agent speaks HTTPS on this port: use https:// (or CONSUL_HTTP_SSL=true) with its CA (--consul-ca-file)'
    case 'handshake':
      return `TLS handshake failed (${f.detail})`
  }
}
