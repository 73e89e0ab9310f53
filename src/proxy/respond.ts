import type { IncomingMessage, ServerResponse } from 'node:http'

/**
 * Error answers users can read: a short text body (JSON when the client asks for it), the stable code in
 * `x-consul-lb-error`, and `Retry-After` where waiting helps.
 */
export function sendError(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  code: string,
  message: string,
  retryAfterS?: number,
): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const wantsJson = (req.headers.accept ?? '').includes('json')
  const body = wantsJson ? `${JSON.stringify({ error: message, code, status })}\n` : `${status} ${message} (${code})\n`
  const headers: Record<string, string | number> = {
    'content-type': wantsJson ? 'application/json' : 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-consul-lb-error': code,
  }
  if (retryAfterS !== undefined && retryAfterS > 0) headers['retry-after'] = retryAfterS
  // A request body we did not read would be parsed as the next request: close such connections.
  if (!req.complete && (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined))
    headers.connection = 'close'
  res.writeHead(status, headers)
  res.end(req.method === 'HEAD' ? undefined : body)
}
