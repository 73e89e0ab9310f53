import type { ConnectionOptions } from 'node:tls'
import { probeTlsAlert } from './probe.js'

/**
 * What went wrong in a TLS handshake with a server we are a client of (Consul's agent, the Docker engine), by what it
 * means for the operator. Each client words the fix in its own settings (CONSUL_CACERT, DOCKER_CERT_PATH).
 */
export type TlsProblem =
  | 'unknown-ca' // the server's certificate is not signed by a CA we trust
  | 'name-mismatch' // the server's certificate does not carry the name we expect
  | 'expired' // the server's certificate expired (or is not valid yet)
  | 'client-cert-required' // the server requires a client certificate and none was given
  | 'client-cert-expired' // the server refused our client certificate because it expired
  | 'client-cert-rejected' // the server does not accept our client certificate (unknown CA, wrong usage)
  | 'not-tls' // https:// to a plain HTTP port
  | 'tls-required' // http:// to an HTTPS port
  | 'handshake' // anything else: `detail` carries OpenSSL's reason

export interface TlsFailure {
  readonly problem: TlsProblem
  /** The Node/OpenSSL code or reason behind it (`UNABLE_TO_VERIFY_LEAF_SIGNATURE`, `TLSV1_ALERT_UNKNOWN_CA`, …). */
  readonly detail: string
}

/** Node/OpenSSL error codes of a handshake that mean "the server's certificate is not one we trust". */
const SERVER_CERT_UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_GET_ISSUER_CERT',
  'CERT_SIGNATURE_FAILURE',
])

/** Alerts a server sends when it refuses the client certificate it was shown. */
const CLIENT_CERT_REFUSED =
  /ALERT_UNKNOWN_CA|ALERT_BAD_CERTIFICATE|ALERT_CERTIFICATE_EXPIRED|ALERT_UNSUPPORTED_CERTIFICATE|ALERT_DECRYPT_ERROR|ALERT_CERTIFICATE_UNKNOWN/

/** What the client presented: whether a client certificate, and until when it is valid. */
export interface ClientCertificate {
  readonly hasClientCert: boolean
  readonly clientCertValidTo: Date | null
}

/**
 * The TLS problem behind a transport error (walking its `cause` chain), or null when it is not a TLS failure (a
 * refused connection, a timeout). `client` decides between "none given" and "ours refused" for a server's
 * bad-certificate alert, and tells an expired certificate of ours from another refusal: Go servers before 1.21 (the
 * Docker engine of Debian, older Consul) send bad_certificate for both.
 */
export function classifyTlsFailure(err: unknown, client: ClientCertificate): TlsFailure | null {
  const hasClientCert = client.hasClientCert
  const chain: { code?: string; message?: string; reason?: string }[] = []
  for (let e = err as { cause?: unknown } | undefined, i = 0; e && i < 5; e = e.cause as typeof e, i++)
    chain.push(e as { code?: string; message?: string })
  const codes = chain.map((e) => e.code ?? '')
  const text = chain.map((e) => `${e.code ?? ''} ${e.message ?? ''}`).join(' | ')
  const has = (re: RegExp) => codes.some((c) => re.test(c)) || re.test(text)
  const alert = () => (codes.find((c) => /ALERT/.test(c)) ?? 'alert').replace(/^ERR_SSL_/, '')
  const untrusted = codes.find((c) => SERVER_CERT_UNTRUSTED.has(c))
  if (untrusted) return { problem: 'unknown-ca', detail: untrusted }
  if (codes.includes('ERR_TLS_CERT_ALTNAME_INVALID'))
    return {
      problem: 'name-mismatch',
      detail: chain.find((e) => e.code === 'ERR_TLS_CERT_ALTNAME_INVALID')?.reason || 'name mismatch',
    }
  if (codes.includes('CERT_HAS_EXPIRED')) return { problem: 'expired', detail: 'CERT_HAS_EXPIRED' }
  if (codes.includes('CERT_NOT_YET_VALID')) return { problem: 'expired', detail: 'CERT_NOT_YET_VALID' }
  if (
    has(/CERTIFICATE_REQUIRED|certificate required/i) ||
    (!hasClientCert && has(/ALERT_BAD_CERTIFICATE|HANDSHAKE_FAILURE/))
  )
    return { problem: 'client-cert-required', detail: alert() }
  if (has(CLIENT_CERT_REFUSED)) {
    const ours = client.clientCertValidTo
    const expired = has(/ALERT_CERTIFICATE_EXPIRED/) || (ours !== null && ours.getTime() < Date.now())
    return { problem: expired ? 'client-cert-expired' : 'client-cert-rejected', detail: alert() }
  }
  if (has(/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|wrong version number/))
    return { problem: 'not-tls', detail: 'WRONG_VERSION_NUMBER' }
  if (has(/^ERR_SSL_|^ERR_TLS_|SSL routines|EPROTO/))
    return {
      problem: 'handshake',
      detail: codes.find((c) => c.startsWith('ERR_SSL') || c.startsWith('ERR_TLS')) ?? chain[0]?.message ?? 'unknown',
    }
  return null
}

/**
 * classifyTlsFailure, and when the server just hung up on a TLS connection (`UND_ERR_SOCKET`, `ECONNRESET`), the
 * reason read by a probe: in TLS 1.3 a server checks the client certificate after the client's side of the handshake
 * has completed, so a refused or missing one reaches an HTTP client as "other side closed" with the alert lost.
 */
export async function tlsFailureOf(
  err: unknown,
  client: ClientCertificate,
  probe: {
    target: { host: string; port: number } | { socketPath: string }
    connect: ConnectionOptions
    timeoutMs: number
  },
): Promise<TlsFailure | null> {
  const direct = classifyTlsFailure(err, client)
  if (direct) return direct
  const codes: string[] = []
  for (let e = err as { cause?: unknown; code?: string } | undefined, i = 0; e && i < 5; e = e.cause as typeof e, i++)
    codes.push(e.code ?? '')
  if (!codes.some((c) => c === 'UND_ERR_SOCKET' || c === 'ECONNRESET')) return null
  const alert = await probeTlsAlert(probe.target, probe.connect, probe.timeoutMs)
  return alert ? classifyTlsFailure(alert, client) : null
}

/** How to fix each problem, in the words of the client's own settings (CONSUL_CACERT, DOCKER_CERT_PATH, …). */
export type TlsFixes = Record<Exclude<TlsProblem, 'expired' | 'handshake'>, string>

/**
 * The sentence for a TLS problem with `peer` ("the agent", "the engine"), ending with the client's own fix. `client`
 * adds what we know of our side: the name we expected, when our client certificate expired.
 */
export function describeTlsFailure(
  f: TlsFailure,
  peer: string,
  fixes: TlsFixes,
  client: { serverName?: string | null; clientCertValidTo?: Date | null } = {},
): string {
  switch (f.problem) {
    case 'unknown-ca':
      return `${peer}'s certificate is not signed by a CA we trust (${f.detail}); ${fixes['unknown-ca']}`
    case 'name-mismatch':
      return `${peer}'s certificate is not for the name we expect${client.serverName ? ` (${client.serverName})` : ''}: ${f.detail}; ${fixes['name-mismatch']}`
    case 'expired':
      return `${peer}'s certificate ${f.detail === 'CERT_HAS_EXPIRED' ? 'has expired' : 'is not valid yet (clock skew?)'}; ${peer} needs a new one`
    case 'client-cert-required':
      return `${peer} requires a client certificate and none was given; ${fixes['client-cert-required']}`
    case 'client-cert-expired':
      return `${peer} refused our client certificate because it expired (${f.detail})${client.clientCertValidTo ? ` on ${client.clientCertValidTo.toISOString()}` : ''}; ${fixes['client-cert-expired']}`
    case 'client-cert-rejected':
      return `${peer} refused our client certificate (${f.detail}): ${fixes['client-cert-rejected']}`
    case 'not-tls':
      return `${peer} answers plain HTTP on this port, not HTTPS; ${fixes['not-tls']}`
    case 'tls-required':
      return `${peer} speaks HTTPS on this port: ${fixes['tls-required']}`
    case 'handshake':
      return `TLS handshake failed (${f.detail})`
  }
}
