import type { Backoff } from '../backoff.js'
import { RegistratorError } from './errors.js'

/**
 * One serial queue runs every change (full syncs and single-container updates), so an event can never interleave with
 * a sync that read Docker before it happened. A failed operation does not stop the chain: its failure goes to whoever
 * awaits it.
 */
export class WorkQueue {
  private tail: Promise<unknown> = Promise.resolve()
  /** Operations waiting (not the running one); shown in /status. */
  private waitingCount = 0
  private readonly waitingKeys = new Set<string>()
  private closed = false

  get waiting(): number {
    return this.waitingCount
  }

  enqueue<T>(fn: () => Promise<T>): Promise<T> {
    this.waitingCount++
    const run = this.tail.then(() => {
      this.waitingCount--
      if (this.closed) throw new RegistratorError('CLB_REG_CLOSED', 'registrator was closed')
      return fn()
    })
    this.tail = run.catch(() => undefined)
    return run
  }

  /**
   * Queues `fn` unless an operation with the same key is already waiting: that one reads Docker and Consul when it
   * starts, so a second adds nothing. Without this, ticks that come faster than a slow Consul answers would pile full
   * syncs up without bound, and a drain (kill event) would wait behind all of them. Null when coalesced.
   */
  enqueueOnce<T>(key: string, fn: () => Promise<T>): Promise<T> | null {
    if (this.waitingKeys.has(key)) return null
    this.waitingKeys.add(key)
    return this.enqueue(() => {
      this.waitingKeys.delete(key)
      return fn()
    })
  }

  /** Operations not yet started fail with CLB_REG_CLOSED; resolves when the running one has finished. */
  close(): Promise<void> {
    this.closed = true
    return this.tail.then(() => undefined)
  }
}

/**
 * One pending retry at a time, its delay from a capped back-off: after a failure, the next full sync is what heals a
 * Consul outage when --resync is 0. reset() after a success starts the back-off over.
 */
export class RetryTimer {
  private timer: NodeJS.Timeout | null = null
  private closed = false

  constructor(private readonly backoff: Backoff) {}

  schedule(fn: () => void): void {
    if (this.timer || this.closed) return
    this.timer = setTimeout(() => {
      this.timer = null
      fn()
    }, this.backoff.next())
    this.timer.unref()
  }

  reset(): void {
    this.backoff.reset()
  }

  close(): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = null
  }
}
