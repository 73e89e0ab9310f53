import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from '../log.js'

export interface StatusFeedOptions {
  /** Builds one snapshot (the /status view); asked at most once per `intervalMs`, whatever the number of viewers. */
  collect: () => Promise<unknown>
  /** How often open streams get a new snapshot. */
  intervalMs: number
  /** Concurrent event streams; the next viewer gets a 503 until one closes. */
  maxStreams: number
  /** A viewer whose socket holds more unsent bytes than this (it stopped reading) is disconnected. */
  maxBufferedBytes: number
  log: Logger
}

/** The reason a viewer over the cap is given; the page shows it and tries again after Retry-After. */
export const STREAMS_FULL_CODE = 'CLB_ADMIN_STREAMS_FULL'

/**
 * The status page's live updates: Server-Sent Events on the admin listener, bounded so that open tabs cannot hurt
 * the proxy they watch. One snapshot is computed per interval (single flight, serialised once) and the same bytes go
 * to every stream; the timer runs only while a stream is open; streams are capped, and one whose reader stopped
 * reading is dropped instead of buffering without end.
 */
export class StatusFeed {
  private readonly opts: StatusFeedOptions
  private readonly streams = new Set<ServerResponse>()
  private timer: NodeJS.Timeout | null = null
  /** The last snapshot as an SSE frame, and when it was computed. */
  private frame: string | null = null
  private frameAt = 0
  private computing: Promise<string> | null = null
  private snapshotCount = 0
  private refusedCount = 0
  private droppedCount = 0
  private closed = false

  constructor(opts: StatusFeedOptions) {
    this.opts = opts
  }

  /** Snapshots computed so far (a viewer count never multiplies this). */
  get snapshots(): number {
    return this.snapshotCount
  }
  get openStreams(): number {
    return this.streams.size
  }
  /** Viewers turned away at the cap. */
  get refused(): number {
    return this.refusedCount
  }
  /** Viewers disconnected because they stopped reading. */
  get dropped(): number {
    return this.droppedCount
  }

  /** Answers GET /events: a stream of `status` events, or a 503 when the cap is reached. */
  serve(req: IncomingMessage, res: ServerResponse): void {
    if (this.closed || this.streams.size >= this.opts.maxStreams) {
      this.refusedCount++
      const retryAfterS = Math.max(1, Math.ceil((this.opts.intervalMs * 10) / 1000))
      res
        .writeHead(503, {
          'content-type': 'text/plain; charset=utf-8',
          'retry-after': String(retryAfterS),
          'cache-control': 'no-store',
          'x-consul-lb-error': STREAMS_FULL_CODE,
        })
        .end(
          `${this.opts.maxStreams} status pages are open already, the most this listener serves (${STREAMS_FULL_CODE})\n`,
        )
      return
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    })
    // HEAD: the head a stream would get, and no stream (it would hold a slot and send nothing).
    if (req.method === 'HEAD') {
      res.end()
      return
    }
    // The browser reconnects by itself after a dropped connection; `retry` sets how soon.
    res.write(`retry: ${Math.max(1000, this.opts.intervalMs * 2)}\n\n`)
    this.streams.add(res)
    req.socket.setNoDelay(true)
    res.once('close', () => this.remove(res))
    // A new viewer sees the current picture at once: the cached frame while it is fresh, else a new snapshot.
    if (this.frame !== null && Date.now() - this.frameAt < this.opts.intervalMs) this.send(res, this.frame)
    else void this.snapshot().then((f) => this.send(res, f))
    if (this.timer === null) {
      this.timer = setInterval(() => this.tick(), this.opts.intervalMs)
      this.timer.unref()
    }
  }

  private tick(): void {
    if (this.streams.size === 0) return
    void this.snapshot().then((f) => {
      for (const res of this.streams) this.send(res, f)
    })
  }

  /** The current frame: computed at most once per interval, one computation shared by every caller. */
  private snapshot(): Promise<string> {
    if (this.computing !== null) return this.computing
    if (this.frame !== null && Date.now() - this.frameAt < this.opts.intervalMs * 0.9)
      return Promise.resolve(this.frame)
    this.computing = this.opts
      .collect()
      .then(
        (body) => `event: status\ndata: ${JSON.stringify(body)}\n\n`,
        (err: Error) => {
          this.opts.log.warn({ err: err.message }, 'status snapshot failed')
          return `event: failure\ndata: ${JSON.stringify({ error: err.message })}\n\n`
        },
      )
      .then((f) => {
        this.snapshotCount++
        this.frame = f
        this.frameAt = Date.now()
        this.computing = null
        return f
      })
    return this.computing
  }

  private send(res: ServerResponse, frame: string): void {
    if (res.destroyed || !this.streams.has(res)) return
    if (res.writableLength > this.opts.maxBufferedBytes) {
      // It stopped reading (a suspended tab, a stuck client): its unsent frames would pile up in our memory.
      this.droppedCount++
      this.remove(res)
      res.destroy()
      return
    }
    res.write(frame)
  }

  /** A stream ends (closed by its reader, or dropped): its slot is free at once. */
  private remove(res: ServerResponse): void {
    if (!this.streams.delete(res)) return
    if (this.streams.size === 0) this.stop()
  }

  private stop(): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** Ends every stream and the timer (the listener is closing). */
  close(): void {
    this.closed = true
    this.stop()
    for (const res of this.streams) res.destroy()
    this.streams.clear()
  }
}
