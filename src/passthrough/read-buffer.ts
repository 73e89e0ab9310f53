import { Socket, type SocketConstructorOpts } from 'node:net'

/**
 * Socket reads into a buffer of the socket's own (net's `onread`), instead of a new 64 KiB ArrayBuffer per read that
 * the garbage collector must then find: with large answers those allocations ran V8's full collector most of the
 * time (its external-memory limit), and even small exchanges paid for the allocation, the readable-stream machinery
 * and the 'data' event. The bytes handed to `take` are a view of that buffer, valid until the callback returns:
 *
 * - whoever keeps bytes past the read (a head split over reads, pipelined requests, a held body) copies them;
 * - bytes written to a socket are lent (`lend`): when a write does not complete at once (the kernel's send buffer is
 *   full, or the socket is corked), the socket's queue still points into the buffer, so once the read is handled the
 *   buffer is given to that write and the next read goes into a fresh one (`settle`). Only slow readers cost an
 *   allocation, never the steady flow.
 *
 * Pages are resident only once written, so an idle connection's buffer costs what its largest read touched. The
 * buffer is 128 KiB, glibc's mmap threshold, which bin/consul-lb keeps fixed there: each buffer is then a mapping of
 * its own, and a closed connection's pages go back to the system instead of staying in the heap. (A 64 KiB answer
 * with its head also fits in one read.)
 */
export const READ_BUFFER_BYTES = 128 * 1024

/** More sockets than this written in one read: the buffer is given away without looking (never in practice). */
const MAX_LENT = 16
/** Sockets written with borrowed bytes during the read being handled (reads never nest: one list serves all). */
const lent: (Socket | null)[] = new Array<Socket | null>(MAX_LENT).fill(null)
/** Sockets in `lent` (a count, not the array's length: setting an array's length is a call into the runtime). */
let lentCount = 0
let lentOverflow = false

/** `s` was just written with bytes that may be a read buffer's: it is checked when that read is settled. */
export function lend(s: Socket): void {
  const n = lentCount
  if (n > 0 && lent[n - 1] === s) return
  if (n < MAX_LENT) lent[lentCount++] = s
  else lentOverflow = true
}

/**
 * Writes bytes that may be a read buffer's (they are lent, see `lend`) and says whether the writer may go on: false
 * only when bytes still wait in the socket's queue past its high-water mark, so that 'drain' follows. Not write()'s
 * own answer, which is false for any write of 16 KiB or more even when the kernel took it whole at once: pausing the
 * reader on that cost a stop and a restart of reading (two epoll_ctl calls and the stream's pause and resume) per
 * request with a 16 KiB body.
 */
export function writeLent(s: Socket, b: Uint8Array): boolean {
  const ok = s.write(b)
  lend(s)
  return ok || s.writableLength === 0
}

/** net's `onread` option, as `Socket` and `connect` take it. */
export interface OnRead {
  buffer: () => Buffer
  callback: (bytesRead: number, buf: Buffer) => boolean
}

export class ReadBuffer {
  private buf: Buffer
  private readonly take: (bytes: Buffer) => void
  readonly onread: OnRead

  /** `take` handles each read's bytes (a view of this buffer). */
  constructor(take: (bytes: Buffer) => void) {
    this.buf = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES)
    this.take = take
    this.onread = { buffer: this.next, callback: this.onRead }
  }

  /** net asks after every read which buffer the next one goes to. */
  private readonly next = (): Buffer => this.buf

  private readonly onRead = (n: number, buf: Buffer): boolean => {
    lentCount = 0
    lentOverflow = false
    try {
      this.take(buf.subarray(0, n))
    } finally {
      this.settle()
    }
    return true
  }

  /** A write still pending points into the buffer: it keeps it, and reads go to a new one. */
  private settle(): void {
    let kept = lentOverflow
    for (let i = 0; i < lentCount; i++) {
      if (!kept && lent[i]!.writableLength > 0) kept = true
      lent[i] = null
    }
    lentCount = 0
    lentOverflow = false
    if (kept) this.buf = Buffer.allocUnsafeSlow(READ_BUFFER_BYTES)
  }
}

/**
 * Re-makes a socket a net.Server accepted as one that reads into `reader`: net.Server offers no `onread`, so its
 * handle moves to a new Socket that has it, and the accepted one, left without a handle, is destroyed (the server
 * stops counting it; the data plane tracks its own connections). Called from the 'connection' event, before any read
 * can happen (reads come in a later poll phase). Where a Node.js version does not allow this (no `_handle`), the
 * accepted socket is returned as it is and reads arrive as 'data' events. (Not `pauseOnConnect`: measured, it made
 * bursts of new connections wait longer in the accept queue.)
 */
export function adopt(
  accepted: Socket,
  reader: ReadBuffer,
  allowHalfOpen: boolean,
): { socket: Socket; adopted: boolean } {
  const a = accepted as unknown as { _handle: object | null }
  const handle = a._handle
  if (handle === null || handle === undefined) return { socket: accepted, adopted: false }
  a._handle = null
  accepted.destroy()
  const opts = { handle, allowHalfOpen, readable: true, writable: true, onread: reader.onread }
  return { socket: new Socket(opts as SocketConstructorOpts), adopted: true }
}
