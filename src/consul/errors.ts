import { ConsulLbError } from '../errors.js'

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

/** What went wrong in a TLS handshake with the agent, each with its own fix in the message. */
export type TlsProblem =
  | 'unknown-ca' // the agent's certificate is not signed by a CA we trust
  | 'name-mismatch' // the agent's certificate does not carry the name we expect
  | 'expired' // the agent's certificate expired (or is not valid yet)
  | 'client-cert-required' // verify_incoming and no client certificate given
  | 'client-cert-rejected' // the agent does not accept our client certificate (unknown CA, expired, wrong usage)
  | 'not-tls' // https:// to a plain HTTP port
  | 'tls-required' // http:// to an HTTPS port
  | 'handshake' // anything else: the message carries OpenSSL's reason

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

/** Node/OpenSSL error codes of a handshake, by what they mean for the operator. */
const SERVER_CERT_UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_SIGNATURE_FAILURE',
])

/**
 * Turns a transport failure into a coded error that says what is wrong and how to fix it: TLS problems by kind,
 * everything else as unreachable. `address` and `serverName` are only used in the message.
 */
export function transportError(
  err: unknown,
  address: string,
  tls: { serverName: string | null; hasClientCert: boolean } | null,
): ConsulApiError {
  const chain: { code?: string; message?: string; reason?: string }[] = []
  for (let e = err as { cause?: unknown } | undefined, i = 0; e && i < 5; e = e.cause as typeof e, i++)
    chain.push(e as { code?: string; message?: string })
  const codes = chain.map((e) => e.code ?? '')
  const text = chain.map((e) => `${e.code ?? ''} ${e.message ?? ''}`).join(' | ')
  const has = (re: RegExp) => codes.some((c) => re.test(c)) || re.test(text)
  const at = `Consul at ${address}`
  const opts = { cause: err }
  if (codes.some((c) => SERVER_CERT_UNTRUSTED.has(c)))
    return new ConsulTlsError(
      'unknown-ca',
      `${at}: the agent's certificate is not signed by a CA we trust (${codes.find((c) => SERVER_CERT_UNTRUSTED.has(c))}); give the CA that signed it with --consul-cacert / CONSUL_CACERT (or --consul-capath / CONSUL_CAPATH)`,
      opts,
    )
  if (codes.includes('ERR_TLS_CERT_ALTNAME_INVALID')) {
    const reason = chain.find((e) => e.code === 'ERR_TLS_CERT_ALTNAME_INVALID')?.reason ?? ''
    return new ConsulTlsError(
      'name-mismatch',
      `${at}: the agent's certificate is not for the name we expect${tls?.serverName ? ` (${tls.serverName})` : ''}: ${reason || 'name mismatch'}; connect by a name the certificate carries, or set --consul-tls-server-name / CONSUL_TLS_SERVER_NAME to one (Consul's server certificates carry server.<dc>.<domain>)`,
      opts,
    )
  }
  if (codes.includes('CERT_HAS_EXPIRED') || codes.includes('CERT_NOT_YET_VALID'))
    return new ConsulTlsError(
      'expired',
      `${at}: the agent's certificate ${codes.includes('CERT_HAS_EXPIRED') ? 'has expired' : 'is not valid yet (clock skew?)'}; the agent needs a new certificate`,
      opts,
    )
  if (
    has(/CERTIFICATE_REQUIRED|certificate required/i) ||
    (!tls?.hasClientCert && has(/ALERT_BAD_CERTIFICATE|HANDSHAKE_FAILURE/))
  )
    return new ConsulTlsError(
      'client-cert-required',
      `${at}: the agent requires a client certificate (verify_incoming) and none was given; set --consul-client-cert and --consul-client-key (CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)`,
      opts,
    )
  if (
    has(
      /ALERT_UNKNOWN_CA|ALERT_BAD_CERTIFICATE|ALERT_CERTIFICATE_EXPIRED|ALERT_UNSUPPORTED_CERTIFICATE|ALERT_DECRYPT_ERROR|ALERT_CERTIFICATE_UNKNOWN/,
    )
  )
    return new ConsulTlsError(
      'client-cert-rejected',
      `${at}: the agent refused our client certificate (${(codes.find((c) => /ALERT/.test(c)) ?? 'alert').replace(/^ERR_SSL_/, '')}): it must be signed by the CA in the agent's tls ca_file, be valid now, and allow client authentication`,
      opts,
    )
  if (has(/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|wrong version number/))
    return new ConsulTlsError(
      'not-tls',
      `${at}: the agent answers plain HTTP on this port, not HTTPS; use http:// or the agent's HTTPS port (ports.https)`,
      opts,
    )
  if (has(/^ERR_SSL_|^ERR_TLS_|SSL routines|EPROTO/))
    return new ConsulTlsError(
      'handshake',
      `${at}: TLS handshake failed (${codes.find((c) => c.startsWith('ERR_SSL') || c.startsWith('ERR_TLS')) ?? chain[0]?.message ?? 'unknown'})`,
      opts,
    )
  const code = codes.find((c) => c && !c.startsWith('UND_ERR')) ?? codes[0] ?? ''
  return new ConsulApiError(
    'CLB_CONSUL_UNREACHABLE',
    `${at} unreachable (${code || (chain[0]?.message ?? 'unknown error')})`,
    null,
    opts,
  )
}
