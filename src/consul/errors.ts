import { ConsulLbError } from '../errors.js'
import {
  type ClientCertificate,
  classifyTlsFailure,
  describeTlsFailure,
  type TlsFailure,
  type TlsFixes,
  type TlsProblem,
} from '../tls/failure.js'

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
  if (failure)
    return new ConsulTlsError(
      failure.problem,
      `${at}: ${describeTlsFailure(failure, 'the agent', CONSUL_TLS_FIXES, tls ?? {})}`,
      opts,
    )
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

/** How to fix each TLS problem with the agent, in Consul's settings. */
const CONSUL_TLS_FIXES: TlsFixes = {
  'unknown-ca':
    'give the CA that signed it with --consul-ca-file / CONSUL_CACERT (or --consul-ca-path / CONSUL_CAPATH)',
  'name-mismatch':
    "connect by a name the certificate carries, or set --consul-tls-server-name / CONSUL_TLS_SERVER_NAME to one (Consul's server certificates carry server.<dc>.<domain>)",
  'client-cert-required':
    'the agent has verify_incoming: set --consul-client-cert and --consul-client-key (CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)',
  'client-cert-expired':
    'issue a new one (consul tls cert create -client) and write it and its key over the files of --consul-client-cert / --consul-client-key: it is picked up without restart',
  'client-cert-rejected':
    "it must be signed by the CA in the agent's tls ca_file, be valid now, and allow client authentication",
  'not-tls': "use http:// or the agent's HTTPS port (ports.https)",
  'tls-required': 'use https:// (or CONSUL_HTTP_SSL=true) with its CA (--consul-ca-file)',
}
