import type { IncomingMessage } from 'node:http'

/**
 * The request headers the proxy itself needs, read from rawHeaders in one pass: touching `req.headers` would make
 * Node build its whole lower-cased headers object for every request.
 */
export interface RequestHead {
  host: string | undefined
  contentLength: string | undefined
  chunked: boolean
  connection: string | undefined
}

export function readHead(req: IncomingMessage): RequestHead {
  const raw = req.rawHeaders
  let host: string | undefined
  let contentLength: string | undefined
  let chunked = false
  let connection: string | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    switch (name.length) {
      case 4:
        if (host === undefined && (name === 'Host' || name.toLowerCase() === 'host')) host = raw[i + 1]
        break
      case 10:
        if (name === 'Connection' || name.toLowerCase() === 'connection')
          connection = connection === undefined ? raw[i + 1] : `${connection}, ${raw[i + 1]}`
        break
      case 14:
        if (name === 'Content-Length' || name.toLowerCase() === 'content-length') contentLength = raw[i + 1]
        break
      case 17:
        if (name === 'Transfer-Encoding' || name.toLowerCase() === 'transfer-encoding') chunked = true
        break
    }
  }
  return { host, contentLength, chunked, connection }
}
