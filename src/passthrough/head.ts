import { forwardedElement } from '../proxy/headers.js'
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
  TransferEncoding,
  ContentLength,
  Forwarded,
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

/** The header names the rewrite acts on, indexed by length: a name is compared only with those of its length. */
const NAMES_BY_LENGTH: (readonly (readonly [string, Name])[])[] = (() => {
  const table: [string, Name][][] = []
  for (const entry of [
    ['te', Name.Te],
    ['host', Name.Host],
    ['expect', Name.Expect],
    ['accept', Name.Accept],
    ['upgrade', Name.Upgrade],
    ['trailer', Name.Trailer],
    ['forwarded', Name.Forwarded],
    ['connection', Name.Connection],
    ['keep-alive', Name.KeepAlive],
    ['http2-settings', Name.Http2Settings],
    ['content-length', Name.ContentLength],
    ['x-forwarded-for', Name.XForwardedFor],
    ['proxy-connection', Name.ProxyConnection],
    ['x-forwarded-host', Name.XForwardedHost],
    ['x-forwarded-proto', Name.XForwardedProto],
    ['transfer-encoding', Name.TransferEncoding],
    ['proxy-authenticate', Name.ProxyAuthenticate],
    ['proxy-authorization', Name.ProxyAuthorization],
  ] as [string, Name][]) {
    const sameLength = table[entry[0].length] ?? []
    sameLength.push(entry)
    table[entry[0].length] = sameLength
  }
  return table
})()

export function classifyName(buf: Uint8Array, start: number, len: number): Name {
  const candidates = NAMES_BY_LENGTH[len]
  if (candidates !== undefined)
    for (let i = 0; i < candidates.length; i++) if (bytesEqual(buf, start, candidates[i]![0])) return candidates[i]![1]
  return Name.Other
}

/**
 * Lower-case names listed in Connection values ("Connection: close, x-foo"): hop-by-hop too. Null when the values
 * name no header (close, keep-alive, upgrade: what nearly every peer sends), without splitting anything.
 */
export function connectionTokens(values: string | null): Set<string> | null {
  if (values === null || values === 'keep-alive' || values === 'close') return null
  let set: Set<string> | null = null
  for (const t of values.split(',')) {
    const n = t.trim().toLowerCase()
    if (n === '' || n === 'close' || n === 'keep-alive' || n === 'upgrade') continue
    if (set === null) set = new Set()
    set.add(n)
  }
  return set
}

/** A Connection value that is exactly `keep-alive` or `close` (any case): it names no header, nothing to split. */
function namesNoHeader(buf: Uint8Array, start: number, len: number): boolean {
  return (len === 10 && bytesEqual(buf, start, 'keep-alive')) || (len === 5 && bytesEqual(buf, start, 'close'))
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
  /** The Host the request is for (the header, or an absolute-form target's authority), for X-Forwarded-Host. */
  host: string | undefined
  /** Replace the Host header with `host` (an absolute-form target: RFC 9112 §3.2.2 says its authority wins). */
  replaceHost: boolean
  /** For an upgrade: the Upgrade value to forward (with `Connection: upgrade`); null for a plain request. */
  upgrade: string | null
}

/** Facts about a request head the data plane reads once, while classifying its headers (values joined by ", "). */
export class RequestFacts {
  host: string | undefined = undefined
  /** Host field lines seen (RFC 9112 §3.2: more than one is a 400). */
  hostCount = 0
  hasExpect = false
  connection: string | undefined = undefined
  transferEncoding: string | undefined = undefined
  upgrade: string | undefined = undefined
  xff: string | null = null
  /** RFC 7239 Forwarded values joined (null: none sent): this hop's element is appended. */
  forwarded: string | null = null
  accept: string | undefined = undefined
  /** Header classes, one per header, reused by the rewrite. */
  names = new Uint8Array(32)
  count = 0

  /** The head starts at `head[at]` (spans are relative to it). */
  read(head: Buffer, at: number, p: HttpParser): void {
    this.host = undefined
    this.hostCount = 0
    this.hasExpect = false
    this.connection = undefined
    this.transferEncoding = undefined
    this.upgrade = undefined
    this.xff = null
    this.forwarded = null
    this.accept = undefined
    const s = p.spans
    const n = (p.spanCount - 2) >> 2
    if (n > this.names.length) this.names = new Uint8Array(n * 2)
    this.count = n
    for (let h = 0, i = 2; h < n; h++, i += 4) {
      const name = classifyName(head, at + s[i]!, s[i + 1]!)
      this.names[h] = name
      if (name === Name.Other) continue
      const vs = at + s[i + 2]!
      const ve = vs + s[i + 3]!
      switch (name) {
        case Name.Host:
          if (this.hostCount++ === 0) this.host = head.toString('latin1', vs, ve)
          break
        case Name.Connection:
          this.connection = join(this.connection, head.toString('latin1', vs, ve))
          break
        case Name.TransferEncoding:
          this.transferEncoding = join(this.transferEncoding, head.toString('latin1', vs, ve))
          break
        case Name.Upgrade:
          this.upgrade = head.toString('latin1', vs, ve)
          break
        case Name.XForwardedFor:
          this.xff =
            this.xff === null ? head.toString('latin1', vs, ve) : `${this.xff}, ${head.toString('latin1', vs, ve)}`
          break
        case Name.Forwarded:
          this.forwarded =
            this.forwarded === null
              ? head.toString('latin1', vs, ve)
              : `${this.forwarded}, ${head.toString('latin1', vs, ve)}`
          break
        case Name.Expect:
          this.hasExpect = true
          break
        case Name.Accept:
          if (this.accept === undefined) this.accept = head.toString('latin1', vs, ve)
          break
      }
    }
  }
}

function join(a: string | undefined, b: string): string {
  return a === undefined ? b : `${a}, ${b}`
}

/**
 * The request head for the instance, in one buffer, from one pass over the client's bytes: request line (with the
 * routed path when it differs), every end-to-end header copied as sent (runs of kept lines in one copy), hop-by-hop
 * and Connection-listed ones left out, X-Forwarded-For appended to, X-Forwarded-Proto and -Host set (this listener
 * is the edge), a client's Forwarded field gets this hop's element. The same rules as proxy/headers.ts
 * forwardRequestHeaders, but for Transfer-Encoding, which stays:
 * a chunked body passes through as it came. An upgrade keeps `Upgrade` (and an h2c HTTP2-Settings) and sends
 * `Connection: upgrade`. `headEnd` is the offset just past the blank line.
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
  const tokens = connectionTokens(facts.connection ?? null)
  const n = facts.count
  let h2Settings = false
  if (rw.upgrade !== null) for (let h = 0; h < n; h++) if (facts.names[h] === Name.Http2Settings) h2Settings = true
  let extra = ''
  if (rw.replaceHost && rw.host !== undefined) extra += `host: ${rw.host}\r\n`
  if (rw.upgrade !== null)
    extra += `connection: ${h2Settings ? 'upgrade, http2-settings' : 'upgrade'}\r\nupgrade: ${rw.upgrade}\r\n`
  extra += `x-forwarded-for: ${facts.xff === null ? rw.clientAddress : `${facts.xff}, ${rw.clientAddress}`}\r\n`
  extra += 'x-forwarded-proto: http\r\n'
  if (rw.host !== undefined) extra += `x-forwarded-host: ${rw.host}\r\n`
  if (facts.forwarded !== null)
    extra += `forwarded: ${facts.forwarded}, ${forwardedElement(rw.clientAddress, rw.host)}\r\n`
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
  for (let h = 0, i = 2; h < n; h++, i += 4) {
    const name = facts.names[h]! as Name
    let drop: boolean
    switch (name) {
      case Name.Other:
        drop = tokens?.has(head.toString('latin1', at + s[i]!, at + s[i]! + s[i + 1]!).toLowerCase()) === true
        break
      case Name.XForwardedFor:
      case Name.XForwardedProto:
      case Name.XForwardedHost:
      case Name.Forwarded:
        drop = true
        break
      case Name.Host:
        drop = rw.replaceHost
        break
      case Name.Http2Settings:
        drop = rw.upgrade === null
        break
      case Name.Accept:
      case Name.TransferEncoding:
      case Name.ContentLength:
        drop = false
        break
      default:
        drop = true // hop-by-hop
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

/** What the response rewrite needs to know. */
export interface ResponseRewrite {
  status: number
  /** The client connection ends after this answer: say `connection: close`. */
  close: boolean
  /** An HTTP/1.0 client kept alive must be told so (`connection: keep-alive`). */
  keepAlive10: boolean
}

/**
 * Rewrites a response head in place, with the rules of proxy/headers.ts forwardResponseHeaders: hop-by-hop and
 * Connection-listed lines go (but Transfer-Encoding, which frames the body that passes through as it came); a 101 or
 * 426 keeps `Upgrade` and says `connection: upgrade` (RFC 9110 §7.8, §15.5.22); a 204 loses any Content-Length
 * (RFC 9110 §8.6). Removed lines are closed up by moving the bytes before them forward over the gap, so the head
 * ends where it ended and the body bytes after it never move. Returns the new start of the head in `buf` (the answer
 * to write is `buf[start, …)`). A Connection line of ours goes into the room the removed lines left, or, when there
 * is none, into a copy of the head (rare): a Buffer is returned then, and the body still starts at `headEnd` in `buf`.
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
  const keepUpgrade = rw.status === 101 || rw.status === 426
  let tokens: Set<string> | null = null
  let upgradeKept = false
  // Pass 1 (cheap): Connection-listed names, and whether an Upgrade line stays.
  for (let h = 0, i = 2; h < n; h++, i += 4) {
    const len = s[i + 1]!
    if (len !== 10 && len !== 7) continue
    const name = classifyName(buf, headStart + s[i]!, len)
    if (name === Name.Connection) {
      // Nearly every instance answers `Connection: keep-alive`: read on the bytes, no string made.
      const vs = headStart + s[i + 2]!
      const vl = s[i + 3]!
      if (namesNoHeader(buf, vs, vl)) continue
      const t = connectionTokens(buf.toString('latin1', vs, vs + vl))
      if (t !== null) {
        if (tokens === null) tokens = t
        else for (const x of t) tokens.add(x)
      }
    } else if (name === Name.Upgrade && keepUpgrade) upgradeKept = true
  }
  // Pass 2: remove lines from the last to the first. Walking backwards, `end` is where the text not yet placed ends
  // and `tail` where placed text begins (the blank line and everything after it never move).
  let start = headStart
  let end = headEnd - 2
  let tail = headEnd - 2
  let removedAny = false
  for (let h = n - 1, i = 2 + h * 4; h >= 0; h--, i -= 4) {
    const ns = headStart + s[i]!
    const name = classifyName(buf, ns, s[i + 1]!)
    let drop: boolean
    if (name === Name.Other) drop = tokens?.has(buf.toString('latin1', ns, ns + s[i + 1]!).toLowerCase()) === true
    else if (name === Name.Upgrade) drop = !keepUpgrade
    else if (name === Name.ContentLength) drop = rw.status === 204
    else drop = isHopByHopName(name)
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
  const value = upgradeKept
    ? rw.close
      ? 'upgrade, close'
      : 'upgrade'
    : rw.close
      ? 'close'
      : rw.keepAlive10
        ? 'keep-alive'
        : null
  if (value === null) return start
  const line = connectionLine(value)
  const statusLen = lineEnd(buf, start) - start
  if (start - headStart >= line.length) {
    // The status line moves back over the gap; our line goes right after it.
    buf.copyWithin(start - line.length, start, start + statusLen)
    line.copy(buf, start - line.length + statusLen)
    return start - line.length
  }
  const out = Buffer.allocUnsafe(headEnd - start + line.length)
  buf.copy(out, 0, start, start + statusLen)
  line.copy(out, statusLen)
  buf.copy(out, statusLen + line.length, start + statusLen, headEnd)
  return out
}

const CONNECTION_LINES = new Map(
  ['close', 'keep-alive', 'upgrade', 'upgrade, close'].map((v) => [v, Buffer.from(`connection: ${v}\r\n`, 'latin1')]),
)

function connectionLine(value: string): Buffer {
  return CONNECTION_LINES.get(value)!
}
