import type { HttpParser } from './llhttp.js'

/**
 * Header names the data plane acts on, looked up on the raw bytes of a head (never as strings): a switch on the
 * name's length, then a case-insensitive byte compare. Hop-by-hop headers (RFC 9110 §7.6.1) are meant for one
 * connection; `expect` is answered by this listener, `http2-settings` belongs to an h2c upgrade of this connection.
 * Transfer-Encoding is not dropped: bodies pass through with their framing (RFC 9112 §6.1), chunked stays chunked.
 */
export enum Name {
  Other = 0,
  Host,
  Connection,
  KeepAlive,
  ProxyConnection,
  Te,
  Trailer,
  Upgrade,
  Expect,
  Http2Settings,
  ProxyAuthenticate,
  ProxyAuthorization,
  XForwardedFor,
  XForwardedProto,
  XForwardedHost,
  Accept,
}

/** True for the names a proxy never forwards (as a header of its own, before Connection-listed names). */
export function isHopByHopName(n: Name): boolean {
  return n >= Name.Connection && n <= Name.ProxyAuthorization
}

/** `lower` must be lower case; letters in `buf` compare case-insensitively. */
function bytesEqual(buf: Uint8Array, start: number, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    const c = buf[start + i]!
    if ((c >= 65 && c <= 90 ? c | 0x20 : c) !== lower.charCodeAt(i)) return false
  }
  return true
}

export function classifyName(buf: Uint8Array, start: number, len: number): Name {
  switch (len) {
    case 2:
      return bytesEqual(buf, start, 'te') ? Name.Te : Name.Other
    case 4:
      return bytesEqual(buf, start, 'host') ? Name.Host : Name.Other
    case 6:
      return bytesEqual(buf, start, 'expect')
        ? Name.Expect
        : bytesEqual(buf, start, 'accept')
          ? Name.Accept
          : Name.Other
    case 7:
      return bytesEqual(buf, start, 'upgrade')
        ? Name.Upgrade
        : bytesEqual(buf, start, 'trailer')
          ? Name.Trailer
          : Name.Other
    case 10:
      return bytesEqual(buf, start, 'connection')
        ? Name.Connection
        : bytesEqual(buf, start, 'keep-alive')
          ? Name.KeepAlive
          : Name.Other
    case 14:
      return bytesEqual(buf, start, 'http2-settings') ? Name.Http2Settings : Name.Other
    case 15:
      return bytesEqual(buf, start, 'x-forwarded-for') ? Name.XForwardedFor : Name.Other
    case 16:
      return bytesEqual(buf, start, 'proxy-connection')
        ? Name.ProxyConnection
        : bytesEqual(buf, start, 'x-forwarded-host')
          ? Name.XForwardedHost
          : Name.Other
    case 17:
      return bytesEqual(buf, start, 'x-forwarded-proto') ? Name.XForwardedProto : Name.Other
    case 18:
      return bytesEqual(buf, start, 'proxy-authenticate') ? Name.ProxyAuthenticate : Name.Other
    case 19:
      return bytesEqual(buf, start, 'proxy-authorization') ? Name.ProxyAuthorization : Name.Other
    default:
      return Name.Other
  }
}

/**
 * Lower-case names listed in Connection values ("Connection: close, x-foo"): hop-by-hop too. Null when the values
 * name no header (close, keep-alive, upgrade: what nearly every peer sends), without splitting anything.
 */
export function connectionTokens(values: string | null): Set<string> | null {
  if (values === null) return null
  let set: Set<string> | null = null
  for (const t of values.split(',')) {
    const n = t.trim().toLowerCase()
    if (n === '' || n === 'close' || n === 'keep-alive' || n === 'upgrade') continue
    if (set === null) set = new Set()
    set.add(n)
  }
  return set
}

/** Index just past the CRLF that ends the header line whose value ends at `valueEnd`. */
function lineEnd(buf: Uint8Array, valueEnd: number): number {
  let i = valueEnd
  while (buf[i] !== 10) i++
  return i + 1
}

/** What the request rewrite needs to know that routing decided. */
export interface RequestRewrite {
  /** The target to send (path and query), or null to keep the client's bytes as they are. */
  path: string | null
  /** The client's address, for X-Forwarded-For. */
  clientAddress: string
  /** The original Host value, for X-Forwarded-Host (null: none sent). */
  host: string | null
  /** Keep Connection/Upgrade (a WebSocket or other upgrade handshake, which the instance must see). */
  isUpgrade: boolean
}

/** Facts about a request head the data plane reads once, while classifying its headers. */
export class RequestFacts {
  host: string | null = null
  hasExpect = false
  /** Connection values joined (null: none), for Connection-listed names. */
  connection: string | null = null
  xff: string | null = null
  accept: string | null = null
  duplicateHost = false
  /** Header classes, one per header, reused by the rewrite. */
  names = new Uint8Array(32)
  count = 0

  /** The head starts at `head[at]` (spans are relative to it). */
  read(head: Buffer, at: number, p: HttpParser): void {
    this.duplicateHost = false
    this.host = null
    this.hasExpect = false
    this.connection = null
    this.xff = null
    this.accept = null
    const s = p.spans
    const n = (p.spanCount - 2) >> 2
    if (n > this.names.length) this.names = new Uint8Array(n * 2)
    this.count = n
    const buf = head
    for (let h = 0, i = 2; h < n; h++, i += 4) {
      const name = classifyName(head, at + s[i]!, s[i + 1]!)
      this.names[h] = name
      if (name === Name.Other) continue
      const vs = at + s[i + 2]!
      const ve = vs + s[i + 3]!
      switch (name) {
        case Name.Host:
          // RFC 9112 §3.2: more than one Host is a 400; the caller checks `duplicateHost`.
          if (this.host === null) this.host = buf.toString('latin1', vs, ve)
          else this.duplicateHost = true
          break
        case Name.Connection:
          this.connection =
            this.connection === null
              ? buf.toString('latin1', vs, ve)
              : `${this.connection}, ${buf.toString('latin1', vs, ve)}`
          break
        case Name.XForwardedFor:
          this.xff =
            this.xff === null ? buf.toString('latin1', vs, ve) : `${this.xff}, ${buf.toString('latin1', vs, ve)}`
          break
        case Name.Expect:
          this.hasExpect = true
          break
        case Name.Accept:
          if (this.accept === null) this.accept = buf.toString('latin1', vs, ve)
          break
      }
    }
  }
}

/**
 * The request head for the instance, in one buffer, from one pass over the client's bytes: request line (with the
 * routed path when it differs), every end-to-end header copied as sent (runs of kept lines in one copy), hop-by-hop
 * and Connection-listed ones left out, X-Forwarded-For appended to, X-Forwarded-Proto and -Host set (this listener
 * is the edge). `headEnd` is the offset just past the blank line.
 */
export function rewriteRequestHead(
  head: Buffer,
  at: number,
  headEnd: number,
  p: HttpParser,
  facts: RequestFacts,
  rw: RequestRewrite,
): Buffer {
  const s = p.spans
  const tokens = connectionTokens(facts.connection)
  const xff = facts.xff === null ? rw.clientAddress : `${facts.xff}, ${rw.clientAddress}`
  let extra = `x-forwarded-for: ${xff}\r\nx-forwarded-proto: http\r\n`
  if (rw.host !== null) extra += `x-forwarded-host: ${rw.host}\r\n`
  const urlStart = at + s[0]!
  const urlEnd = urlStart + s[1]!
  // Upper bound: the head itself, a longer path, the added lines (latin1: one byte per character).
  const max = headEnd - at + (rw.path === null ? 0 : rw.path.length) + extra.length + 2
  const out = Buffer.allocUnsafe(max)
  let w = 0
  if (rw.path !== null) {
    w = head.copy(out, 0, at, urlStart)
    w += out.write(rw.path, w, 'latin1')
  }
  // `runStart`: start of the run of input bytes to copy as they are (request line tail, kept headers).
  let runStart = rw.path === null ? at : urlEnd
  const n = facts.count
  for (let h = 0, i = 2; h < n; h++, i += 4) {
    const name = facts.names[h]! as Name
    let drop =
      name === Name.XForwardedFor ||
      name === Name.XForwardedProto ||
      name === Name.XForwardedHost ||
      (isHopByHopName(name) && !(rw.isUpgrade && (name === Name.Connection || name === Name.Upgrade)))
    if (!drop && tokens !== null && name !== Name.Host) {
      drop = tokens.has(head.toString('latin1', at + s[i]!, at + s[i]! + s[i + 1]!).toLowerCase())
    }
    if (!drop) continue
    const lineStart = at + s[i]!
    if (lineStart > runStart) w += head.copy(out, w, runStart, lineStart)
    runStart = lineEnd(head, at + s[i + 2]! + s[i + 3]!)
  }
  // The kept tail up to (not including) the blank line, then our lines, then the blank line.
  const tailEnd = headEnd - 2
  if (tailEnd > runStart) w += head.copy(out, w, runStart, tailEnd)
  w += out.write(extra, w, 'latin1')
  out[w++] = 13
  out[w++] = 10
  return out.subarray(0, w)
}

/** Hop-by-hop lines of a response head, and whether the caller must add a Connection line of its own. */
export interface ResponseRewrite {
  /** `connection: close` (the client connection ends after this answer) or `connection: keep-alive` (HTTP/1.0). */
  connection: 'close' | 'keep-alive' | null
  /** A 101: Connection and Upgrade stay (the client must see the switch). */
  isUpgrade: boolean
}

const CONNECTION_CLOSE = Buffer.from('connection: close\r\n', 'latin1')
const CONNECTION_KEEP_ALIVE = Buffer.from('connection: keep-alive\r\n', 'latin1')

/**
 * Rewrites a response head in place: hop-by-hop and Connection-listed lines are removed by moving the lines before
 * them forward over the gap, so the head ends where it ended and the body bytes after it never move. Returns the
 * new start of the head in `buf` (the answer to write is `buf[start, …)`). A Connection line of ours goes into the
 * room the removed lines left, or, when there is none, into a copy of the head (rare: a close we decide on an
 * answer that had no hop-by-hop line): a Buffer is returned then, and the body still starts at `headEnd` in `buf`.
 */
export function rewriteResponseHead(
  buf: Buffer,
  headStart: number,
  headEnd: number,
  p: HttpParser,
  rw: ResponseRewrite,
): number | Buffer {
  const s = p.spans
  const n = (p.spanCount - 2) >> 2
  let tokens: Set<string> | null = null
  // Pass 1 (cheap, usually finds nothing but Connection/Keep-Alive): Connection-listed names.
  for (let h = 0, i = 2; h < n; h++, i += 4) {
    if (s[i + 1] === 10 && classifyName(buf, headStart + s[i]!, 10) === Name.Connection) {
      const v = buf.toString('latin1', headStart + s[i + 2]!, headStart + s[i + 2]! + s[i + 3]!)
      const t = connectionTokens(v)
      if (t !== null) {
        if (tokens === null) tokens = t
        else for (const x of t) tokens.add(x)
      }
    }
  }
  // Pass 2: remove lines from the last to the first, moving the bytes before each removed line forward.
  let start = headStart
  // Walking backwards: `end` is where the not-yet-placed text ends, `tail` where placed text begins (the blank line
  // and everything after it never move).
  let end = headEnd - 2
  let removedAny = false
  let tail = headEnd - 2
  for (let h = n - 1, i = 2 + h * 4; h >= 0; h--, i -= 4) {
    const ns = headStart + s[i]!
    const name = classifyName(buf, ns, s[i + 1]!)
    let drop = isHopByHopName(name) && !(rw.isUpgrade && (name === Name.Connection || name === Name.Upgrade))
    if (!drop && tokens !== null && name === Name.Other)
      drop = tokens.has(buf.toString('latin1', ns, ns + s[i + 1]!).toLowerCase())
    if (!drop) continue
    removedAny = true
    const le = lineEnd(buf, headStart + s[i + 2]! + s[i + 3]!)
    // Kept bytes between this line's end and `end` slide to finish at `tail`.
    const keep = end - le
    if (keep > 0 && tail !== end) buf.copyWithin(tail - keep, le, end)
    tail -= keep
    end = ns
  }
  if (removedAny) {
    // Everything before the first removed line slides too.
    const keep = end - start
    if (keep > 0) buf.copyWithin(tail - keep, start, end)
    start = tail - keep
  }
  if (rw.connection === null) return start
  const line = rw.connection === 'close' ? CONNECTION_CLOSE : CONNECTION_KEEP_ALIVE
  const room = start - headStart
  if (room >= line.length) {
    // Status line moves back over the gap; our line goes right after it.
    const statusEnd = lineEnd(buf, start) - start
    buf.copyWithin(start - line.length, start, start + statusEnd)
    line.copy(buf, start - line.length + statusEnd)
    return start - line.length
  }
  const statusLen = lineEnd(buf, start) - start
  const out = Buffer.allocUnsafe(headEnd - start + line.length)
  buf.copy(out, 0, start, start + statusLen)
  line.copy(out, statusLen)
  buf.copy(out, statusLen + line.length, start + statusLen, headEnd)
  return out
}
