import { X509Certificate } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { type ConnectionOptions, createSecureContext } from 'node:tls'
import type { ConsulConnection, ConsulTls } from './connection.js'
import { ConsulCredentialError, type CredentialField } from './errors.js'

/** The TLS files of a connection, read and checked (the key matches the certificate, the CA files hold PEM). */
export interface TlsMaterial {
  ca: Buffer[] | null
  cert: Buffer | null
  key: Buffer | null
  /** The client certificate's validity, for `doctor` and the logs. */
  clientCertValidTo: Date | null
  clientCertSubject: string | null
}

/** Reads the TLS files of `tls`; throws a ConsulCredentialError naming the setting and the file that is wrong. */
export function readTlsMaterial(tls: ConsulTls): TlsMaterial {
  const ca: Buffer[] = []
  if (tls.caFile) ca.push(readPemFile('caFile', tls.caFile, 'CERTIFICATE'))
  if (tls.caPath) {
    const before = ca.length
    let names: string[]
    try {
      names = readdirSync(tls.caPath).sort()
    } catch (err) {
      throw new ConsulCredentialError('caPath', tls.caPath, `cannot read the folder: ${(err as Error).message}`)
    }
    // As Consul's own client: every file of the folder that holds a PEM certificate (other files are ignored).
    for (const name of names) {
      const path = join(tls.caPath, name)
      let text: Buffer
      try {
        if (!statSync(path).isFile()) continue
        text = readFileSync(path)
      } catch {
        continue // a file removed while we list the folder: the next change check reads the folder again
      }
      if (text.includes('-----BEGIN CERTIFICATE-----')) ca.push(text)
    }
    if (ca.length === before) throw new ConsulCredentialError('caPath', tls.caPath, 'holds no PEM certificate')
  }
  const cert = tls.certFile ? readPemFile('certFile', tls.certFile, 'CERTIFICATE') : null
  const key = tls.keyFile ? readPemFile('keyFile', tls.keyFile, 'PRIVATE KEY') : null
  let clientCertValidTo: Date | null = null
  let clientCertSubject: string | null = null
  if (cert) {
    try {
      const x = new X509Certificate(cert)
      clientCertValidTo = new Date(x.validTo)
      clientCertSubject = x.subject.replace(/\n/g, ', ')
    } catch (err) {
      throw new ConsulCredentialError('certFile', tls.certFile!, `not a PEM certificate: ${(err as Error).message}`)
    }
  }
  try {
    // What the TLS handshake would do with them, done now: a key that does not match its certificate (a rotation
    // caught half-way) or a damaged CA file fails here, with the file named, instead of in every request.
    createSecureContext({ ...(ca.length ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) })
  } catch (err) {
    const msg = (err as Error).message
    const field: CredentialField = /key/i.test(msg)
      ? 'keyFile'
      : /ca|certificate/i.test(msg) && !cert
        ? 'caFile'
        : 'certFile'
    throw new ConsulCredentialError(
      field,
      (field === 'keyFile' ? tls.keyFile : field === 'caFile' ? tls.caFile : tls.certFile) ?? '',
      `unusable: ${msg}`,
    )
  }
  return { ca: ca.length ? ca : null, cert, key, clientCertValidTo, clientCertSubject }
}

/** The token held by a token file (trimmed, as Consul's CLI reads it); null when the file is empty. */
export function readTokenFile(path: string): string | null {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConsulCredentialError('tokenFile', path, `cannot read it: ${(err as NodeJS.ErrnoException).code ?? ''}`)
  }
  const token = text.trim()
  if (token === '') return null
  const wrong = tokenProblem(token)
  if (wrong) throw new ConsulCredentialError('tokenFile', path, wrong)
  return token
}

/**
 * Why `token` (already trimmed) cannot be sent as X-Consul-Token, or null. A token is one line of visible ASCII (Consul
 * makes UUIDs); a second line, a control character or a space would otherwise fail every request as a transport
 * error ("unreachable"), or be sent as another token than the operator meant. The token itself is never described.
 */
export function tokenProblem(token: string): string | null {
  if (/^[\x21-\x7e]+$/.test(token)) return null
  if (/[\r\n]/.test(token)) return 'holds more than one line: a token is a single line (the secret ID, nothing else)'
  return 'holds characters a token cannot have (spaces, control or non-ASCII characters): a token is the secret ID alone'
}

function readPemFile(field: CredentialField, path: string, kind: string): Buffer {
  let b: Buffer
  try {
    b = readFileSync(path)
  } catch (err) {
    throw new ConsulCredentialError(field, path, `cannot read it: ${(err as Error).message}`)
  }
  if (!b.includes(`-----BEGIN `) || !b.toString('latin1').includes(kind))
    throw new ConsulCredentialError(field, path, `holds no PEM ${kind.toLowerCase()}`)
  return b
}

/** Identity of a file's current content: changes when it is rewritten, replaced, or a symlink is swapped. */
function signature(path: string): string {
  try {
    const st = statSync(path)
    if (st.isDirectory())
      return readdirSync(path)
        .sort()
        .map((n) => `${n}=${signature(join(path, n))}`)
        .join(';')
    return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`
  } catch (err) {
    return `missing:${(err as NodeJS.ErrnoException).code}`
  }
}

export interface CredentialsOptions {
  /** Files are looked at (stat) at most this often; a forced refresh (after a TLS or ACL failure) ignores it. */
  recheckMs?: number
  /** Told about every reload, and about a changed file that could not be used (the previous material stays). */
  onChange?: (what: 'token' | 'tls', error: ConsulCredentialError | null) => void
}

/**
 * The token and TLS material of one connection, re-read when their files change, so certificates and tokens rotate
 * without a restart. Files are stat'ed (not watched: inotify misses a Kubernetes secret's symlink swap and needs a
 * handle per file) at most every `recheckMs`, before a request. A changed file that cannot be used (half written, a
 * key that no longer matches its certificate) leaves the previous material in use and is tried again at the next
 * check; `lastError` says why.
 */
export class ConsulCredentials {
  private readonly conn: ConsulConnection
  private readonly recheckMs: number
  private readonly onChange: CredentialsOptions['onChange']
  private checkedAt = 0
  private tokenSig: string | null = null
  private tokenFromFile: string | null = null
  private tlsSig: string | null = null
  private material: TlsMaterial | null = null
  private tlsGeneration = 0
  lastError: ConsulCredentialError | null = null

  /** Reads every file once; throws a ConsulCredentialError when one is unusable. */
  constructor(conn: ConsulConnection, opts: CredentialsOptions = {}) {
    this.conn = conn
    this.recheckMs = opts.recheckMs ?? 1000
    this.onChange = opts.onChange
    if (conn.tokenFile) {
      this.tokenSig = signature(conn.tokenFile)
      this.tokenFromFile = readTokenFile(conn.tokenFile)
    }
    if (conn.tls) {
      this.tlsSig = this.tlsSignature(conn.tls)
      this.material = readTlsMaterial(conn.tls)
    }
    this.checkedAt = Date.now()
  }

  /** The token to send now: the token file's when it holds one, else the one given directly. */
  get token(): string | null {
    return this.tokenFromFile ?? this.conn.token
  }

  /** Where the token comes from, for messages ("token file /run/secrets/consul"); never the token. */
  get tokenSource(): string {
    if (this.conn.tokenFile && this.tokenFromFile) return `the token from ${this.conn.tokenFile}`
    if (this.conn.token) return 'the given token'
    return this.conn.tokenFile
      ? `the anonymous token (${this.conn.tokenFile} is empty)`
      : 'the anonymous token (no token was given)'
  }

  /** The current TLS material (null for plain HTTP); `generation` moves when it was re-read. */
  get tls(): { material: TlsMaterial; generation: number } | null {
    return this.material ? { material: this.material, generation: this.tlsGeneration } : null
  }

  /** undici connect options for the current material. */
  connectOptions(): ConnectionOptions {
    const tls = this.conn.tls
    const m = this.material
    if (!tls || !m) return {}
    return {
      ...(m.ca ? { ca: m.ca } : {}),
      ...(m.cert ? { cert: m.cert } : {}),
      ...(m.key ? { key: m.key } : {}),
      ...(tls.serverName ? { servername: tls.serverName } : {}),
      rejectUnauthorized: tls.verify,
    }
  }

  /** Looks for changed files (at most every recheckMs unless `force`) and re-reads them. */
  refresh(force = false): void {
    const now = Date.now()
    if (!force && now - this.checkedAt < this.recheckMs) return
    this.checkedAt = now
    const file = this.conn.tokenFile
    if (file) {
      const sig = signature(file)
      if (sig !== this.tokenSig) {
        try {
          this.tokenFromFile = readTokenFile(file)
          this.tokenSig = sig
          this.lastError = null
          this.onChange?.('token', null)
        } catch (err) {
          this.failed('token', err as ConsulCredentialError)
        }
      }
    }
    const tls = this.conn.tls
    if (tls) {
      const sig = this.tlsSignature(tls)
      if (sig !== this.tlsSig) {
        try {
          this.material = readTlsMaterial(tls)
          this.tlsSig = sig
          this.tlsGeneration++
          this.lastError = null
          this.onChange?.('tls', null)
        } catch (err) {
          this.failed('tls', err as ConsulCredentialError)
        }
      }
    }
  }

  private failed(what: 'token' | 'tls', err: ConsulCredentialError): void {
    // Reported once per distinct problem; the next check tries again (the writer may not have finished).
    if (this.lastError?.message !== err.message) this.onChange?.(what, err)
    this.lastError = err
  }

  private tlsSignature(tls: ConsulTls): string {
    return [tls.caFile, tls.caPath, tls.certFile, tls.keyFile].map((p) => (p ? signature(p) : '-')).join('|')
  }
}
