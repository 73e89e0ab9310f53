import { ConsulLbError } from '../errors.js'
import type { TlsProblem } from '../tls/failure.js'

/**
 * Failures of the Docker side. The registrator never lets one of these stop it: the event watcher reconnects with a
 * capped back-off, a failed inspect only skips that container until the next event or resync.
 */
export type DockerErrorCode =
  | 'CLB_DOCKER_UNREACHABLE' // socket missing, connection refused or reset
  | 'CLB_DOCKER_TIMEOUT'
  | 'CLB_DOCKER_HTTP' // the engine answered with an error status
  | 'CLB_DOCKER_BAD_RESPONSE' // not the JSON we expected (or an event line too long)
  | 'CLB_DOCKER_STREAM_ENDED' // /events closed by the engine (it restarts, or is shutting down)
  | 'CLB_DOCKER_TLS' // the TLS handshake with a tcp:// engine failed: see DockerTlsError

export class DockerError extends ConsulLbError {
  readonly httpStatus: number | null
  constructor(code: DockerErrorCode, message: string, httpStatus: number | null = null, options?: { cause?: unknown }) {
    super(code, message, 502, options)
    this.name = 'DockerError'
    this.httpStatus = httpStatus
  }
}

/** The TLS handshake with the engine failed; `problem` says how (unknown CA, wrong name, client certificate refused). */
export class DockerTlsError extends DockerError {
  readonly problem: TlsProblem
  constructor(problem: TlsProblem, message: string, options?: { cause?: unknown }) {
    super('CLB_DOCKER_TLS', message, null, options)
    this.name = 'DockerTlsError'
    this.problem = problem
  }
}

export type RegistratorErrorCode =
  | 'CLB_REG_CONSUL_UNAVAILABLE' // Consul did not answer within --retry-attempts at startup
  | 'CLB_REG_SYNC_FAILED' // a reconcile pass could not finish (Docker or Consul failed); retried with back-off
  | 'CLB_REG_CONFLICT' // a service ID we would register exists in Consul but was not created by us: left alone
  | 'CLB_REG_CLOSED' // the registrator was closed while an operation waited

export class RegistratorError extends ConsulLbError {
  constructor(code: RegistratorErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, 500, options)
    this.name = 'RegistratorError'
  }
}

/**
 * An invalid container setting (SERVICE_* env var or label). Not thrown: collected per container, logged with the
 * container name and the field, shown in /status; the container is still registered as well as it can be.
 */
export interface ConventionWarning {
  readonly code: 'CLB_REG_BAD_CONVENTION'
  /** The env var or label that holds the bad value, as the user wrote it (SERVICE_80_NAME). */
  readonly field: string
  readonly value: string
  readonly message: string
}

export function conventionWarning(field: string, value: string, message: string): ConventionWarning {
  return { code: 'CLB_REG_BAD_CONVENTION', field, value, message }
}

/** Any failure as a coded error: ours keep their code, anything else (a bug, an odd rejection) is a failed sync. */
export function asRegistratorError(err: unknown): ConsulLbError {
  if (err instanceof ConsulLbError) return err
  return new RegistratorError('CLB_REG_SYNC_FAILED', String((err as Error)?.message ?? err), { cause: err })
}

/**
 * Consul writes are counted, not thrown, so one refused service does not stop the others; the operation then fails as
 * a whole (and is retried) when any of them did.
 */
export function throwIfFailed(failures: number, message: string): void {
  if (failures > 0) throw new RegistratorError('CLB_REG_SYNC_FAILED', `${failures} ${message}`)
}

const MAX_RECENT_ERRORS = 20

/** The last errors, newest last, for /status: what went wrong recently, without reading the logs. */
export class RecentErrors {
  private readonly entries: { at: string; code: string; message: string }[] = []

  record(e: ConsulLbError): void {
    this.entries.push({ at: new Date().toISOString(), code: e.code, message: e.message })
    if (this.entries.length > MAX_RECENT_ERRORS) this.entries.shift()
  }

  list(): { at: string; code: string; message: string }[] {
    return [...this.entries]
  }
}
