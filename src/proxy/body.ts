import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import { BodyTooLargeError } from '../errors.js'

/**
 * A chunked request body, passed through while counting against maxBodyBytes. It pulls from the client only when
 * undici starts sending (so a request whose connect failed has read nothing and can still be retried), and keeps
 * backpressure: the client is paused whenever undici is.
 */
export class LimitedBody extends Readable {
  private readonly src: IncomingMessage
  private readonly limit: number
  private seen = 0
  private attached = false
  started = false

  constructor(src: IncomingMessage, limit: number) {
    super()
    this.src = src
    this.limit = limit
  }

  override _read(): void {
    this.started = true
    if (!this.attached) {
      this.attached = true
      this.src.on('data', (chunk: Buffer) => {
        this.seen += chunk.length
        if (this.seen > this.limit) {
          this.src.pause()
          this.destroy(new BodyTooLargeError(this.limit))
          return
        }
        if (!this.push(chunk)) this.src.pause()
      })
      this.src.on('end', () => this.push(null))
      this.src.on('error', (err) => this.destroy(err))
    }
    this.src.resume()
  }
}
