import { type ServerResponse, STATUS_CODES } from 'node:http'
import type { ConsulLbError } from '../errors.js'

/**
 * An answer the proxy makes itself, independent of how it is written: through a node:http ServerResponse
 * (`writeAnswer`) or as raw bytes on a socket (`answerBytes`: client errors, upgrades, another data plane).
 */
export interface Answer {
  readonly status: number
  /** Flat [name, value, …] list, Content-Length included. */
  readonly headers: string[]
  readonly body: string
  /** The connection ends after this answer (`connection: close` is among the headers). */
  readonly close: boolean
}

export interface AnswerOptions {
  /** The client asked for JSON (`Accept: …json`). */
  json?: boolean
  /** Sent as Retry-After with 503 answers (0: none). */
  retryAfterS?: number
  /** End the connection after the answer (a request body we did not read, a parse error). */
  close?: boolean
}

/**
 * The one place an error becomes an answer: the status from the error, a short body (text, or JSON when the client
 * asks), the stable code in `x-consul-lb-error`, `Retry-After` on 503, `cache-control: no-store`.
 */
export function errorAnswer(err: ConsulLbError, opts: AnswerOptions = {}): Answer {
  const status = err.statusCode
  const body = opts.json
    ? `${JSON.stringify({ error: err.message, code: err.code, status })}\n`
    : `${status} ${err.message} (${err.code})\n`
  const headers = [
    'content-type',
    opts.json ? 'application/json' : 'text/plain; charset=utf-8',
    'content-length',
    String(Buffer.byteLength(body)),
    'cache-control',
    'no-store',
    // The body echoes parts of the request (host, path): never let a browser sniff it into HTML.
    'x-content-type-options',
    'nosniff',
    'x-consul-lb-error',
    err.code,
  ]
  if (status === 503 && opts.retryAfterS !== undefined && opts.retryAfterS > 0)
    headers.push('retry-after', String(opts.retryAfterS))
  const close = opts.close === true
  if (close) headers.push('connection', 'close')
  return { status, headers, body, close }
}

/** `Accept` asks for JSON. */
export function wantsJson(accept: string | undefined): boolean {
  return accept?.includes('json') === true
}

/** The answer as the bytes of an HTTP/1.1 response (for a raw socket); `head`: the request was HEAD, no body. */
export function answerBytes(a: Answer, head = false): string {
  const text = responseHead(a.status, STATUS_CODES[a.status] ?? 'Error', a.headers)
  return head ? text : text + a.body
}

/** An HTTP/1.1 status line and header block from a flat [name, value, …] list, blank line included. */
export function responseHead(status: number, reason: string, headers: readonly string[]): string {
  let text = `HTTP/1.1 ${status} ${reason}\r\n`
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`
  return `${text}\r\n`
}

/** Writes the answer through node:http (a response already under way is cut instead: nothing else is honest). */
export function writeAnswer(res: ServerResponse, a: Answer, head: boolean): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  res.writeHead(a.status, a.headers)
  res.end(head ? undefined : a.body)
}
