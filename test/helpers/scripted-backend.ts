import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * A backend that speaks exactly the bytes a test scripts, on raw TCP: nothing is added, normalised or refused, so a
 * test can answer with what a broken or hostile server would send (304 with a length, two Connection fields, bare
 * LF, a 101 for a protocol nobody asked for, a body cut short) and see every byte the proxy sent it.
 */

/** One request as the backend received it (a minimal HTTP/1.1 reader: head, then Content-Length or chunked body). */
export interface ReceivedRequest {
  /** `GET /x HTTP/1.1` */
  line: string
  method: string
  target: string
  /** Lower-cased names; several fields of one name joined by ", ". */
  headers: Record<string, string>
  body: string
  /** The raw bytes of head and body. */
  raw: string
}

export class ScriptedConnection {
  readonly socket: Socket
  /** Everything received on this connection so far (latin1). */
  received = ''
  /** Offset in `received` of the first byte not yet returned by nextRequest(). */
  private consumed = 0
  private waiters: (() => void)[] = []
  private ended = false
  readonly closed: Promise<void>

  constructor(socket: Socket) {
    this.socket = socket
    socket.setNoDelay(true)
    socket.on('data', (b: Buffer) => {
      this.received += b.toString('latin1')
      this.wake()
    })
    socket.on('error', () => {
      /* the proxy may reset: what was received is what counts */
    })
    this.closed = new Promise((r) =>
      socket.once('close', () => {
        this.ended = true
        this.wake()
        r()
      }),
    )
    socket.once('end', () => {
      this.ended = true
      this.wake()
    })
  }

  private wake(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  private changed(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs)
      this.waiters.push(() => {
        clearTimeout(timer)
        resolve(true)
      })
    })
  }

  /** The next complete request on this connection, or null if the connection ends (or `timeoutMs` passes) first. */
  async nextRequest(timeoutMs = 10_000): Promise<ReceivedRequest | null> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const r = parseRequest(this.received, this.consumed)
      if (r !== null) {
        this.consumed = r.end
        return r.request
      }
      if (this.ended || Date.now() >= deadline) return null
      await this.changed(deadline - Date.now())
    }
  }

  /** Waits until the received bytes match `re` (or the connection ends, or the time is up); returns whether they do. */
  async waitFor(re: RegExp, timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!re.test(this.received)) {
      if (this.ended || Date.now() >= deadline) return re.test(this.received)
      await this.changed(deadline - Date.now())
    }
    return true
  }

  write(bytes: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes)
  }

  end(bytes?: string): void {
    if (bytes !== undefined) this.write(bytes)
    this.socket.end()
  }

  destroy(): void {
    this.socket.destroy()
  }

  reset(): void {
    this.socket.resetAndDestroy()
  }
}

export interface ScriptedBackend {
  host: string
  port: number
  connections: ScriptedConnection[]
  /** Every byte received, connection after connection. */
  received(): string
  /** Request lines of every complete request received, in order. */
  requestLines(): string[]
  close(): Promise<void>
}

export type Script = (c: ScriptedConnection) => void | Promise<void>

/** Starts a scripted backend on 127.0.0.1:0; `script` runs once per accepted connection. Closed in teardown. */
export async function startScriptedBackend(
  t: { teardown(fn: () => unknown): void },
  script: Script,
): Promise<ScriptedBackend> {
  const connections: ScriptedConnection[] = []
  const server: Server = createServer((socket) => {
    const c = new ScriptedConnection(socket)
    connections.push(c)
    Promise.resolve()
      .then(() => script(c))
      .catch(() => c.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const b: ScriptedBackend = {
    host: '127.0.0.1',
    port: (server.address() as { port: number }).port,
    connections,
    received: () => connections.map((c) => c.received).join(''),
    requestLines: () => {
      const out: string[] = []
      for (const c of connections) {
        let at = 0
        for (let r = parseRequest(c.received, at); r !== null; r = parseRequest(c.received, at)) {
          out.push(r.request.line)
          at = r.end
        }
      }
      return out
    },
    close: async () => {
      for (const c of connections) c.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
  t.teardown(() => b.close())
  return b
}

/** A script that answers every request of the connection with `answer(request)`, until the connection ends. */
export function answerEach(answer: (r: ReceivedRequest, c: ScriptedConnection) => string | null): Script {
  return async (c) => {
    for (let r = await c.nextRequest(60_000); r !== null; r = await c.nextRequest(60_000)) {
      const bytes = answer(r, c)
      if (bytes !== null) c.write(bytes)
    }
  }
}

/** An HTTP/1.1 response with a Content-Length body. */
export function response(status: string, body = '', headers: string[] = []): string {
  return `HTTP/1.1 ${status}\r\n${headers.map((h) => `${h}\r\n`).join('')}content-length: ${Buffer.byteLength(body, 'latin1')}\r\n\r\n${body}`
}

function parseRequest(text: string, from: number): { request: ReceivedRequest; end: number } | null {
  const headEnd = text.indexOf('\r\n\r\n', from)
  if (headEnd === -1) return null
  const headText = text.slice(from, headEnd)
  const [line = '', ...fields] = headText.split('\r\n')
  const headers: Record<string, string> = {}
  for (const f of fields) {
    const colon = f.indexOf(':')
    if (colon === -1) continue
    const name = f.slice(0, colon).trim().toLowerCase()
    const value = f.slice(colon + 1).trim()
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
  }
  let end = headEnd + 4
  let body = ''
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    for (;;) {
      const lineEnd = text.indexOf('\r\n', end)
      if (lineEnd === -1) return null
      const size = Number.parseInt(text.slice(end, lineEnd), 16)
      if (Number.isNaN(size)) return null
      if (size === 0) {
        const trailerEnd = text.indexOf('\r\n\r\n', lineEnd)
        if (trailerEnd === -1) return null
        end = trailerEnd + 4
        break
      }
      if (text.length < lineEnd + 2 + size + 2) return null
      body += text.slice(lineEnd + 2, lineEnd + 2 + size)
      end = lineEnd + 2 + size + 2
    }
  } else if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length'])
    if (text.length < end + n) return null
    body = text.slice(end, end + n)
    end += n
  }
  const [method = '', target = ''] = line.split(' ')
  return { request: { line, method, target, headers, body, raw: text.slice(from, end) }, end }
}

/**
 * A raw client connection to the proxy, half-open like an attacker's: it keeps its side open (and may keep writing)
 * after the proxy's FIN, so only the proxy can release the connection. Writes when the test says, records everything
 * that comes back, when the proxy ended its side (`endedAt`) and when the connection was gone (`closedAt`: reset, or
 * the test destroyed it).
 */
export class RawClient {
  readonly socket: Socket
  received = ''
  endedAt = 0
  closedAt = 0
  private waiters: (() => void)[] = []
  readonly connected: Promise<void>

  constructor(port: number) {
    this.socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    this.socket.setNoDelay(true)
    this.connected = new Promise((r) => this.socket.once('connect', () => r()))
    this.socket.on('data', (b: Buffer) => {
      this.received += b.toString('latin1')
      this.wake()
    })
    this.socket.on('error', () => {
      /* a reset is an answer too: closedAt records it */
    })
    this.socket.once('end', () => {
      this.endedAt = Date.now()
      this.wake()
    })
    this.socket.once('close', () => {
      this.closedAt = Date.now()
      if (this.endedAt === 0) this.endedAt = this.closedAt
      this.wake()
    })
  }

  private wake(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  private changed(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs)
      this.waiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }

  write(bytes: string | Buffer): boolean {
    if (this.socket.destroyed || !this.socket.writable) return false
    this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes)
    return true
  }

  /** The proxy ended the connection (FIN or reset). */
  get isClosed(): boolean {
    return this.endedAt !== 0
  }

  /** Waits until what came back matches `re`, the proxy ends the connection, or `timeoutMs` passes. */
  async waitFor(re: RegExp, timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!re.test(this.received)) {
      if (this.isClosed || Date.now() >= deadline) return re.test(this.received)
      await this.changed(deadline - Date.now())
    }
    return true
  }

  /** Waits for the proxy to end the connection; returns whether it did within `timeoutMs`. */
  async waitClosed(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!this.isClosed && Date.now() < deadline) await this.changed(deadline - Date.now())
    return this.isClosed
  }

  destroy(): void {
    this.socket.destroy()
  }
}

/** Sends `bytes` on a new connection and returns what came back once the proxy closed it or `ms` passed. */
export async function rawRequest(port: number, bytes: string, ms = 3000): Promise<{ text: string; closed: boolean }> {
  const c = new RawClient(port)
  await c.connected
  c.write(bytes)
  const closed = await c.waitClosed(ms)
  c.destroy()
  return { text: c.received, closed }
}
