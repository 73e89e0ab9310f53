/**
 * When a failed attempt may be sent to another instance, and how many retries may be in flight at once. The rules
 * are a pure function; the budget is a small object each exchange holds (no callbacks into the proxy).
 */

/** Errors that mean "this instance did not take the request (well)": counted against it, and retryable. */
// (UND_ERR_CLOSED / UND_ERR_DESTROYED are not here: they mean we closed the pool, while shutting down.)
export const INSTANCE_FAILURES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_HEADERS_TIMEOUT',
])

/** Failures before a connection existed: the request cannot have reached the instance, whatever its method. */
const CONNECT_FAILURES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
])

/** RFC 9110 §9.2.2: methods whose repetition has the effect of one request. */
const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])

/** Upstream timeouts: answered 504 rather than 502. */
export const TIMEOUTS: ReadonlySet<string> = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

export interface FailedAttempt {
  /** The error code of the attempt (undici's, or the socket's). */
  code: string
  method: string
  /** The request has a body. */
  hasBody: boolean
  /** Some of the body has been read from the client (it cannot be sent again). */
  bodyStarted: boolean
  /** Attempts made so far, this one included. */
  attempts: number
  /** Attempts allowed in all (1 + --retries). */
  maxAttempts: number
}

/**
 * A retry is safe when the failure is the instance's, nothing of the request body has been read (a body we started
 * sending cannot be replayed), and the request either is idempotent or provably never reached the instance
 * (refused, unreachable, connect timeout): a POST that timed out waiting for headers was received and must not run
 * twice. A body-less non-idempotent request reset before any response byte is retried (the instance closed a
 * keep-alive connection it had not read from). The budget is asked separately.
 */
export function isRetryable(a: FailedAttempt): boolean {
  if (!INSTANCE_FAILURES.has(a.code) || a.attempts >= a.maxAttempts || a.bodyStarted) return false
  if (CONNECT_FAILURES.has(a.code) || IDEMPOTENT.has(a.method)) return true
  return !a.hasBody && a.code !== 'UND_ERR_HEADERS_TIMEOUT'
}

/**
 * Requests in flight, and the retries among them: retries in flight may be at most `ratio` of the requests in
 * flight, but `min` are always allowed (an instance that dies fails all its keep-alive connections at once), so
 * retries cannot multiply an outage. One per proxy; each exchange takes one request slot for its life and at most one
 * retry slot from its first retry to its end. Closed on shutdown: the pools are being destroyed, nothing is retried.
 */
export class RetryBudget {
  private readonly ratio: number
  private readonly min: number
  private requests = 0
  private retries = 0
  private closed = false
  private onIdle: (() => void) | null = null

  constructor(percent: number, min: number) {
    this.ratio = percent / 100
    this.min = min
  }

  requestStarted(): void {
    this.requests++
  }

  requestEnded(): void {
    this.requests--
    if (this.requests === 0 && this.onIdle !== null) this.onIdle()
  }

  /** Takes a retry slot if the budget allows one now. */
  tryRetry(): boolean {
    if (this.closed || this.retries >= this.limit) return false
    this.retries++
    return true
  }

  retryEnded(): void {
    this.retries--
  }

  get inFlight(): number {
    return this.requests
  }

  get retriesInFlight(): number {
    return this.retries
  }

  /** Retries that may be in flight now: `ratio` of the requests in flight, never fewer than `min`. */
  get limit(): number {
    return Math.max(this.min, this.requests * this.ratio)
  }

  /** No retry from now on; resolves when no request is in flight, or after `deadlineMs`. */
  close(deadlineMs: number): Promise<void> {
    this.closed = true
    if (this.requests === 0) return Promise.resolve()
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, deadlineMs)
      this.onIdle = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}
