import { Backoff, delay } from '../backoff.js'
import type { Logger } from '../log.js'
import type { DockerClient, DockerEvent } from './docker.js'
import { DockerError } from './errors.js'

export type StreamState = 'connecting' | 'connected' | 'backoff' | 'closed'

export interface EventWatcherOptions {
  log: Logger
  initialDelayMs: number
  maxDelayMs: number
  onEvent: (e: DockerEvent) => void
  /** The stream is open; `isReconnect` is false only the first time. The caller resyncs here: anything that changed
   * while the stream was down (the engine restarted, events fell out of its buffer) is only visible in a full diff. */
  onConnected: (isReconnect: boolean) => void
  onDisconnected: (err: DockerError) => void
}

/**
 * Follows Docker's /events for as long as it runs. gliderlabs/registrator exited when this stream closed and left
 * the host's registrations frozen; here the stream is reopened with a capped back-off and `since=` set to the last
 * event seen, so the engine replays what happened in between (events it still holds).
 */
export class DockerEventWatcher {
  state: StreamState = 'connecting'
  connects = 0
  lastEventAt: number | null = null
  lastError: DockerError | null = null
  private readonly abort = new AbortController()
  private readonly backoff: Backoff
  private loop: Promise<void> | null = null
  /** `since` for the next connect: the second of the last event (or of the last connect). */
  private sinceS: number | null = null
  /** Events already delivered in second `sinceS`: a replay from that second repeats them, and they are skipped. */
  private seenInLastSecond = new Set<string>()

  constructor(
    private readonly docker: DockerClient,
    private readonly opts: EventWatcherOptions,
  ) {
    this.backoff = new Backoff(opts.initialDelayMs, opts.maxDelayMs)
  }

  start(): void {
    this.loop ??= this.run()
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal
    while (!signal.aborted) {
      this.state = 'connecting'
      try {
        await this.docker.streamEvents({
          signal,
          ...(this.sinceS !== null ? { since: String(this.sinceS) } : {}),
          onOpen: () => {
            this.state = 'connected'
            this.backoff.reset()
            if (this.sinceS === null) this.sinceS = Math.floor(Date.now() / 1000)
            this.opts.onConnected(this.connects++ > 0)
          },
          onEvent: (e) => this.deliver(e),
        })
      } catch (err) {
        if (signal.aborted) break
        const e =
          err instanceof DockerError
            ? err
            : new DockerError('CLB_DOCKER_UNREACHABLE', (err as Error).message, null, { cause: err })
        this.lastError = e
        this.state = 'backoff'
        const wait = this.backoff.next()
        this.opts.log.warn(
          { code: e.code, err: e.message, retryInMs: wait, attempt: this.backoff.attempts },
          'Docker event stream down; reconnecting',
        )
        this.opts.onDisconnected(e)
        await delay(wait, signal)
      }
    }
    this.state = 'closed'
  }

  private deliver(e: DockerEvent): void {
    const key = `${e.timeNano}|${e.Actor.ID}|${e.Action}`
    if (e.time === this.sinceS && this.seenInLastSecond.has(key)) return
    if (e.time !== this.sinceS) {
      this.sinceS = e.time
      this.seenInLastSecond = new Set()
    }
    this.seenInLastSecond.add(key)
    this.lastEventAt = Date.now()
    this.opts.onEvent(e)
  }

  async close(): Promise<void> {
    this.abort.abort()
    await this.loop
  }
}
