import { STATUS_CODES } from 'node:http'

/**
 * The bytes of an answer the load balancer gives itself (no route, no instance, the instance failed, a malformed
 * request): a short text body, or JSON when the client's Accept asks for it, the stable code in `x-consul-lb-error`,
 * `Retry-After` where waiting helps, and `connection: close` when the connection ends after it. The same answers
 * as the classic data plane sends (proxy/respond.ts), built as one buffer.
 */
export function errorAnswer(
  status: number,
  code: string | null,
  message: string,
  opts: { accept: string | null; isHead: boolean; close: boolean; retryAfterS?: number },
): Buffer {
  const wantsJson = opts.accept?.includes('json') === true
  const body =
    code === null
      ? ''
      : wantsJson
        ? `${JSON.stringify({ error: message, code, status })}\n`
        : `${status} ${message} (${code})\n`
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n`
  if (code !== null) {
    head += `content-type: ${wantsJson ? 'application/json' : 'text/plain; charset=utf-8'}\r\ncache-control: no-store\r\nx-consul-lb-error: ${code}\r\n`
  }
  head += `content-length: ${Buffer.byteLength(body)}\r\n`
  if (opts.retryAfterS !== undefined && opts.retryAfterS > 0) head += `retry-after: ${opts.retryAfterS}\r\n`
  if (opts.close) head += 'connection: close\r\n'
  head += `date: ${new Date().toUTCString()}\r\n\r\n`
  return Buffer.from(opts.isHead ? head : head + body, 'utf8')
}
