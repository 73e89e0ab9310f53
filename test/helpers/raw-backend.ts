import { connect, createServer, type Server, type Socket } from 'node:net'

/**
 * A backend that speaks HTTP by hand, for tests that assert bytes: it records every byte each connection received
 * and answers with what `reply` returns for the bytes of the current request so far (null: wait for more). Answers
 * go out exactly as returned (chunk sizes, trailers, a missing Content-Length, a 101), optionally split into pieces
 * written `gapMs` apart.
 */
export interface RawBackend {
  port: number
  /** Bytes received, per connection, in order of connection. */
  received: Buffer[]
  connections: number
  server: Server
  close(): Promise<void>
}

export type RawReply = { bytes: Buffer | string; pieces?: number; gapMs?: number; close?: boolean } | null

export async function startRawBackend(
  reply: (request: Buffer, conn: number) => RawReply,
  t: { teardown(fn: () => unknown): void },
): Promise<RawBackend> {
  const sockets = new Set<Socket>()
  const b: RawBackend = {
    port: 0,
    received: [],
    connections: 0,
    server: createServer((s) => {
      const conn = b.connections++
      sockets.add(s)
      b.received[conn] = Buffer.alloc(0)
      let pending = Buffer.alloc(0)
      s.on('error', () => {})
      s.on('close', () => sockets.delete(s))
      s.on('data', (d: Buffer) => {
        b.received[conn] = Buffer.concat([b.received[conn]!, d])
        pending = Buffer.concat([pending, d])
        const r = reply(pending, conn)
        if (r === null) return
        pending = Buffer.alloc(0)
        void send(s, r)
      })
    }),
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((r) => b.server.close(() => r()))
    },
  }
  await new Promise<void>((r) => b.server.listen(0, '127.0.0.1', () => r()))
  b.port = (b.server.address() as { port: number }).port
  t.teardown(() => b.close())
  return b
}

async function send(s: Socket, r: NonNullable<RawReply>): Promise<void> {
  const bytes = Buffer.from(r.bytes)
  const pieces = r.pieces ?? 1
  const size = Math.ceil(bytes.length / pieces)
  for (let i = 0; i < bytes.length; i += size) {
    if (s.destroyed) return
    s.write(bytes.subarray(i, i + size))
    if (r.gapMs) await new Promise((res) => setTimeout(res, r.gapMs))
  }
  if (r.close) s.end()
}

/** A request is complete when its head ended and `Content-Length` bytes (or the chunked terminator) followed. */
export function requestComplete(buf: Buffer): boolean {
  const end = buf.indexOf('\r\n\r\n')
  if (end === -1) return false
  const head = buf.subarray(0, end).toString('latin1').toLowerCase()
  const cl = /\r\ncontent-length: *(\d+)/.exec(head)
  if (cl) return buf.length >= end + 4 + Number(cl[1])
  if (/\r\ntransfer-encoding: *chunked/.test(head)) return buf.subarray(end + 4).includes('0\r\n\r\n')
  return true
}

/** Sends raw bytes to 127.0.0.1:port (in pieces `gapMs` apart if asked) and collects what comes back until close or `ms`. */
export function rawExchange(
  port: number,
  bytes: string | Buffer,
  opts: { ms?: number; pieces?: number; gapMs?: number; until?: (got: Buffer) => boolean } = {},
): Promise<{ got: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    let got = Buffer.alloc(0)
    let closed = false
    const done = (): void => {
      clearTimeout(timer)
      s.destroy()
      resolve({ got, closed })
    }
    const timer = setTimeout(done, opts.ms ?? 2000)
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      if (opts.until?.(got)) done()
    })
    s.on('error', () => {})
    s.on('close', () => {
      closed = true
      done()
    })
    s.on('connect', async () => {
      const b = Buffer.from(bytes)
      const pieces = opts.pieces ?? 1
      const size = Math.max(1, Math.ceil(b.length / pieces))
      for (let i = 0; i < b.length; i += size) {
        if (s.destroyed) return
        s.write(b.subarray(i, i + size))
        if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs))
      }
    })
  })
}
