import type { IncomingMessage } from 'node:http'
import { ClientRequestError } from '../errors.js'
import { isHostValue } from './path.js'

/**
 * The request headers the proxy itself needs, read from rawHeaders in one pass: touching `req.headers` would make
 * Node build its whole lower-cased headers object for every request.
 */
export interface RequestHead {
  host: string | undefined
  /** Host field lines seen (RFC 9112 §3.2: more than one is a 400). */
  hostCount: number
  contentLength: string | undefined
  /** Transfer-Encoding value(s), joined. */
  transferEncoding: string | undefined
  /** Connection value(s), joined. */
  connection: string | undefined
  upgrade: string | undefined
}

export function readHead(req: IncomingMessage): RequestHead {
  const raw = req.rawHeaders
  let host: string | undefined
  let hostCount = 0
  let contentLength: string | undefined
  let transferEncoding: string | undefined
  let connection: string | undefined
  let upgrade: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    switch (name.length) {
      case 4:
        if (name === 'Host' || name.toLowerCase() === 'host') {
          if (hostCount++ === 0) host = raw[i + 1]
        }
        break
      case 7:
        if (name === 'Upgrade' || name.toLowerCase() === 'upgrade') upgrade = raw[i + 1]
        break
      case 10:
        if (name === 'Connection' || name.toLowerCase() === 'connection')
          connection = connection === undefined ? raw[i + 1] : `${connection}, ${raw[i + 1]}`
        break
      case 14:
        if (name === 'Content-Length' || name.toLowerCase() === 'content-length') contentLength = raw[i + 1]
        break
      case 17:
        if (name === 'Transfer-Encoding' || name.toLowerCase() === 'transfer-encoding')
          transferEncoding = transferEncoding === undefined ? raw[i + 1] : `${transferEncoding}, ${raw[i + 1]}`
        break
    }
  }
  return { host, hostCount, contentLength, transferEncoding, connection, upgrade }
}

/**
 * Header fields Node keeps (server maxHeadersCount): it drops the rest silently, framing headers included, so a
 * request that reaches the limit is refused rather than forwarded without what it said.
 */
export const MAX_HEADER_FIELDS = 2000

/**
 * What HTTP/1.1 requires of a request that Node's parser (llhttp) lets through; null when the request may go on.
 * llhttp already refuses Content-Length with Transfer-Encoding, differing or repeated Content-Length, bad chunk
 * framing, obs-fold, bare LF and whitespace before a colon.
 */
export function requestProblem(req: IncomingMessage, head: RequestHead): ClientRequestError | null {
  if (req.httpVersionMajor !== 1)
    return new ClientRequestError('CLB_HTTP_VERSION', `HTTP/${req.httpVersion} is not supported; use HTTP/1.1`)
  // nginx refuses TRACE too: a backend echoing the request would hand cookies and credentials back to a script.
  if (req.method === 'TRACE') return new ClientRequestError('CLB_NOT_IMPLEMENTED', 'TRACE is not forwarded')
  if (req.rawHeaders.length >= 2 * MAX_HEADER_FIELDS)
    return new ClientRequestError('CLB_HEADERS_TOO_LARGE', `${MAX_HEADER_FIELDS} header fields or more`)
  if (head.hostCount > 1)
    return new ClientRequestError('CLB_BAD_REQUEST', 'more than one Host header field (RFC 9112 §3.2)')
  if (head.host === undefined ? req.httpVersionMinor === 1 : !isHostValue(head.host))
    return new ClientRequestError(
      'CLB_BAD_REQUEST',
      head.host === undefined ? 'an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)' : 'invalid Host header',
    )
  const te = head.transferEncoding
  if (te !== undefined) {
    // RFC 9112 §6.1: a chunked HTTP/1.0 message cannot be framed reliably; treat it as faulty.
    if (req.httpVersionMinor === 0)
      return new ClientRequestError('CLB_BAD_REQUEST', 'Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)')
    if (te !== 'chunked') return codingProblem(te)
  }
  return null
}

/**
 * RFC 9112 §6.3: chunked must be the final coding, else the body length is unknowable (400, and close); §6.1: chunked
 * at most once. Any other coding before it is one the proxy cannot forward faithfully (undici re-chunks the body
 * and would drop the label): 501, as nginx answers.
 */
export function codingProblem(te: string): ClientRequestError | null {
  const codings = te.split(',').map((c) => c.trim().toLowerCase())
  const chunked = codings.filter((c) => c === 'chunked').length
  if (codings[codings.length - 1] !== 'chunked' || chunked > 1)
    return new ClientRequestError(
      'CLB_BAD_REQUEST',
      `Transfer-Encoding "${te}": chunked must come once, last (RFC 9112 §6.3)`,
    )
  if (codings.length > 1)
    return new ClientRequestError(
      'CLB_NOT_IMPLEMENTED',
      `transfer coding "${te}" is not supported; only chunked is (RFC 9112 §6.1)`,
    )
  return null
}
