/**
 * Capped exponential back-off with jitter. Jitter matters here: after a Docker or Consul restart every registrator on
 * every host reconnects at once, and equal delays would make them hit the restarted daemon together again.
 */
export class Backoff {
  private failures = 0
  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
  ) {}

  /** The delay before the next attempt; each call counts one more failure. */
  next(): number {
    const base = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.failures, 20))
    this.failures++
    // Between half and the full delay.
    return Math.round(base / 2 + Math.random() * (base / 2))
  }

  reset(): void {
    this.failures = 0
  }

  get attempts(): number {
    return this.failures
  }
}

/**
 * Resolves after `ms` or as soon as `signal` aborts (never rejects). Background loops pass `holdProcess` false so the
 * timer does not keep the process alive; a caller awaiting the delay (start() waiting for Consul) passes true, or the
 * process could exit under it.
 */
export function delay(ms: number, signal: AbortSignal, holdProcess = false): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve()
      return
    }
    const onAbort = () => {
      clearTimeout(timer)
      resolve()
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    if (!holdProcess) timer.unref()
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
