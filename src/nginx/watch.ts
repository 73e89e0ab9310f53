import { EventEmitter } from 'node:events'
import { readFile } from 'node:fs/promises'
import { Backoff } from '../backoff.js'
import type { ConsulClient } from '../consul/client.js'
import type { ConsulLbError } from '../errors.js'
import type { Logger } from '../log.js'
import type { CheckResult } from './check.js'
import { NginxError } from './errors.js'
import { writeFileAtomically } from './output.js'
import { selectCatalogServices } from './validate.js'

export interface CatalogWatcherOptions {
  client: ConsulClient
  /** The whole text to write for a set of services (throws when the set cannot be rendered). */
  render: (services: readonly string[]) => string
  /** `nginx -t` of what render produced; a failing text is never written. Omit to write unchecked. */
  check?: (services: readonly string[]) => Promise<CheckResult>
  outPath: string
  /** Runs after every write (for example `nginx -s reload`); null: write only. */
  reload: (() => Promise<void>) | null
  /** After a change, wait this long for more changes so a burst of registrations costs one reload. */
  debounceMs: number
  /** Blocking-query wait; Consul caps it at 10 minutes. */
  waitS?: number
  /** Back-off after a failed query or reload: doubles from initialBackoffMs up to maxBackoffMs, with jitter. */
  initialBackoffMs?: number
  maxBackoffMs?: number
  log: Logger
}

export type WatchEvent =
  /** Every catalog answer acted on, changed or not (what the file would hold, and the names refused). */
  | { type: 'polled'; services: string[]; rejected: string[] }
  | { type: 'written'; services: string[] }
  | { type: 'unchanged'; services: string[] }
  | { type: 'reloaded'; services: string[] }
  | { type: 'rejected'; services: string[]; error: ConsulLbError }
  | { type: 'error'; error: unknown }

/**
 * The consul-template replacement: follows /v1/catalog/services with blocking queries and rewrites the config (then
 * reloads nginx) only when the *set of service names* changes. Instances coming and going change the catalog's index
 * but not the set, and need no reload because nginx resolves instances through Consul DNS at request time.
 *
 * Never writes a text that fails the check: the last good file stays, and the reason is logged and emitted. A failed
 * query (Consul restarting, network) is retried with capped exponential backoff; the loop only ends on close().
 */
export class CatalogWatcher extends EventEmitter<{ event: [WatchEvent] }> {
  private readonly opts: Required<Omit<CatalogWatcherOptions, 'check'>> & Pick<CatalogWatcherOptions, 'check'>
  private closed = false
  private wake: (() => void) | null = null
  private loop: Promise<void> | null = null
  /** The service set of the file on disk, and the last set we tried (written or refused), so neither repeats. */
  private lastAttemptKey: string | null = null
  /** A file was written that nginx has not been reloaded with yet (the reload failed): retried until it succeeds. */
  private reloadPending = false
  writes = 0
  reloads = 0

  constructor(opts: CatalogWatcherOptions) {
    super()
    this.opts = { waitS: 60, initialBackoffMs: 500, maxBackoffMs: 30_000, ...opts }
  }

  start(): void {
    if (this.loop) return
    this.loop = this.run()
  }

  /** Stops the loop; an in-flight blocking query is abandoned (it ends within waitS on its own). */
  async close(): Promise<void> {
    this.closed = true
    this.wake?.()
    await this.loop
  }

  private emitEvent(e: WatchEvent): void {
    this.emit('event', e)
  }

  private async run(): Promise<void> {
    let index: string | undefined
    // Jittered: every nginx host's watcher reconnects when Consul comes back, and should not all ask at once.
    const backoff = new Backoff(this.opts.initialBackoffMs, this.opts.maxBackoffMs)
    while (!this.closed) {
      try {
        const askedAt = Date.now()
        const first = await this.untilClosed(this.opts.client.catalogServices(index, this.opts.waitS))
        if (first === null) return
        // A blocking query that returns at once with the same index (Consul's index 0, a proxy that drops ?wait)
        // would spin: pace such answers.
        if (first.index === index && Date.now() - askedAt < 100) await this.sleep(this.opts.initialBackoffMs)
        let result = first
        if (this.lastAttemptKey !== null && keyOf(result.value) !== this.lastAttemptKey && this.opts.debounceMs > 0) {
          // A change: let a burst of registrations settle, then act on the newest state only.
          await this.sleep(this.opts.debounceMs)
          if (this.closed) return
          const settled = await this.untilClosed(this.opts.client.catalogServices())
          if (settled === null) return
          result = settled
        }
        // Consul documents that an index may go backwards (snapshot restore, leader change): start over then.
        index = index !== undefined && BigInt(result.index) < BigInt(index) ? undefined : result.index
        await this.apply(result.value)
        backoff.reset()
      } catch (err) {
        const delay = backoff.next()
        this.opts.log.warn(
          { err, code: (err as { code?: string }).code, retryInMs: delay },
          'catalog watch failed; retrying',
        )
        this.emitEvent({ type: 'error', error: err })
        index = undefined
        await this.sleep(delay)
      }
    }
  }

  private async apply(catalog: Record<string, unknown>): Promise<void> {
    const sel = selectCatalogServices(catalog)
    for (const r of sel.rejected)
      this.opts.log.error(
        { code: 'CLB_NGINX_UNSAFE_NAME', service: r.name },
        `Consul service name not written to the nginx config: ${r.reason}`,
      )
    this.emitEvent({ type: 'polled', services: sel.services, rejected: sel.rejected.map((r) => r.name) })
    const key = sel.services.join(',')
    const log = this.opts.log.child({ services: sel.services.length })
    if (key !== this.lastAttemptKey) {
      this.lastAttemptKey = key
      await this.writeFor(sel.services, log)
    }
    if (this.opts.reload && this.reloadPending) {
      try {
        await this.opts.reload()
      } catch (err) {
        // The file is written but nginx still runs the previous config: throwing makes the loop back off and come
        // back here (the set is unchanged then, so only the reload is retried) until nginx takes it.
        log.error({ code: (err as { code?: string }).code, err }, 'nginx reload failed; retrying')
        throw err
      }
      this.reloadPending = false
      this.reloads++
      this.emitEvent({ type: 'reloaded', services: sel.services })
    }
  }

  /** Renders, checks and writes the file for a new set (not when refused, or when the file already holds it). */
  private async writeFor(services: string[], log: Logger): Promise<void> {
    let text: string
    try {
      text = this.opts.render(services)
      if (this.opts.check) {
        const res = await this.opts.check(services)
        if (!res.ok)
          throw new NginxError(
            'CLB_NGINX_CHECK_FAILED',
            `nginx -t rejected the new config; keeping the last good one: ${res.output}`,
          )
      }
    } catch (err) {
      if (!(err instanceof NginxError)) throw err
      log.error({ code: err.code, err }, 'new catalog config refused; keeping the last good file')
      this.emitEvent({ type: 'rejected', services, error: err })
      return
    }
    try {
      if ((await readIfExists(this.opts.outPath)) === text) {
        log.info({ out: this.opts.outPath }, 'nginx config already up to date')
        this.emitEvent({ type: 'unchanged', services })
        return
      }
      await writeFileAtomically(this.opts.outPath, text)
    } catch (err) {
      this.lastAttemptKey = null // not on disk: the next pass (after backoff) must try again
      throw err
    }
    this.writes++
    this.reloadPending = true
    log.info({ out: this.opts.outPath, serviceNames: services }, 'nginx config rewritten: the set of services changed')
    this.emitEvent({ type: 'written', services })
  }

  private untilClosed<T>(p: Promise<T>): Promise<T | null> {
    return new Promise<T | null>((resolve, reject) => {
      this.wake = () => resolve(null)
      p.then(resolve, reject).finally(() => {
        this.wake = null
      })
    })
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null
        resolve()
      }, ms)
      this.wake = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}

function keyOf(catalog: Record<string, unknown>): string {
  return selectCatalogServices(catalog).services.join(',')
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}
