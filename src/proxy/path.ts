import { ClientRequestError } from '../errors.js'

/**
 * Request-target normalisation: routes match on the normalised path and the normalised path is what goes upstream,
 * so a path cannot leave the route it matched (`/public/../flag` routes as `/flag`, like nginx).
 *
 * - RFC 3986 §6.2.2: percent-encoded unreserved characters are decoded (`%2e` → `.`, `%7E` → `~`), other escapes
 *   get upper-case hex; a malformed escape or an encoded NUL is refused.
 * - RFC 3986 §5.2.4 remove_dot_segments on the decoded path; a leading `//` collapses to `/` (a path that starts with
 *   `//` reads as a network-path reference to many URL parsers). Other empty segments are kept.
 * - Encoded slashes and backslashes (`%2F`, `%5C`) are data, not separators, and stay encoded; so do raw backslashes.
 *   But a backend may decode them, or treat `\` as `/` (WHATWG URL does), or strip `;params` before resolving dots
 *   (Tomcat's `..;/`): a segment that would then become `.` or `..` is refused rather than guessed at.
 * - The query is kept byte for byte; a fragment (never valid in a request target) is dropped.
 *
 * Pure functions: the request path calls them once per request, and the common path (no `%`, no `\`, no segment
 * starting with `.`, no `#`, no leading `//`) returns its input without allocating.
 */

const BAD = (why: string): ClientRequestError => new ClientRequestError('CLB_BAD_PATH', why)

/** An origin-form target (`/path?query`) → its normalised form, or the reason it is refused. */
export function normalizeOriginForm(target: string): string | ClientRequestError {
  const n = target.length
  if (n > 1 && target.charCodeAt(1) === 47 /* // */) return normalizeSlow(target)
  for (let i = 1; i < n; i++) {
    const c = target.charCodeAt(i)
    if (c === 63 /* ? */) return target.indexOf('#', i) === -1 ? target : normalizeSlow(target)
    if (c === 37 /* % */ || c === 92 /* \ */ || c === 35 /* # */) return normalizeSlow(target)
    if (c === 46 /* . */ && target.charCodeAt(i - 1) === 47) return normalizeSlow(target)
  }
  return target
}

/** An absolute-form target (`http://host[:port]/path?q`, RFC 9112 §3.2.2): its authority and normalised path. */
export function parseAbsoluteForm(target: string): { authority: string; path: string } | ClientRequestError {
  const scheme = /^https?:\/\//i.exec(target)
  if (scheme === null) return BAD('only http and https absolute-form targets are accepted')
  const start = scheme[0].length
  let end = start
  while (end < target.length) {
    const c = target.charCodeAt(end)
    if (c === 47 || c === 63 || c === 35) break
    end++
  }
  const authority = target.slice(start, end)
  if (authority.length === 0) return BAD('absolute-form target without a host')
  if (authority.includes('@')) return BAD('user information in the request target is refused (RFC 9110 §4.2.4)')
  if (!isHostValue(authority)) return BAD(`invalid host in the request target: "${authority}"`)
  let rest = target.slice(end)
  if (rest.length === 0 || rest.charCodeAt(0) !== 47) rest = `/${rest}`
  const path = normalizeOriginForm(rest)
  if (typeof path !== 'string') return path
  return { authority, path }
}

/**
 * A Host header or URI authority: reg-name / IPv4 / `[IPv6]`, optional `:port` (RFC 9110 §7.2, RFC 3986 §3.2.2).
 * Checked by hand: it runs on every request.
 */
export function isHostValue(v: string): boolean {
  const n = v.length
  if (n === 0 || n > 1024) return false
  let i = 0
  if (v.charCodeAt(0) === 91 /* [ */) {
    const close = v.indexOf(']')
    if (close < 2) return false
    for (let k = 1; k < close; k++) {
      const c = v.charCodeAt(k)
      if (!((isHex(c) || c === 58 /* : */ || c === 46) /* . */)) return false
    }
    i = close + 1
  } else {
    for (; i < n; i++) {
      const c = v.charCodeAt(i)
      if (c === 58) break
      if (!isRegNameChar(c)) return false
    }
  }
  if (i === n) return true
  if (v.charCodeAt(i) !== 58) return false
  for (let k = i + 1; k < n; k++) {
    const c = v.charCodeAt(k)
    if (c < 48 || c > 57) return false
  }
  return true
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 70) || (c >= 97 && c <= 102)
}

/** unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2 reg-name). */
function isRegNameChar(c: number): boolean {
  // % ! $ & ' ( ) * + , ; =
  return isUnreserved(c) || c === 37 || c === 33 || c === 36 || (c >= 38 && c <= 44) || c === 59 || c === 61
}

/** ALPHA / DIGIT / "-" / "." / "_" / "~" (RFC 3986 §2.3). */
function isUnreserved(c: number): boolean {
  return (
    (c >= 97 && c <= 122) ||
    (c >= 65 && c <= 90) ||
    (c >= 48 && c <= 57) ||
    c === 45 ||
    c === 46 ||
    c === 95 ||
    c === 126
  )
}

function normalizeSlow(target: string): string | ClientRequestError {
  let end = target.indexOf('#')
  if (end === -1) end = target.length
  let q = target.indexOf('?')
  if (q === -1 || q > end) q = end
  const segments = target.slice(0, q).split('/')
  const out: string[] = []
  const last = segments.length - 1
  for (let k = 1; k <= last; k++) {
    const seg = decodeUnreserved(segments[k]!)
    if (typeof seg !== 'string') return seg
    if (seg === '.' || seg === '..') {
      if (seg === '..') out.pop()
      if (k === last) out.push('')
      continue
    }
    if (hidesDotSegment(seg)) return BAD('a dot segment hidden behind an encoded slash, a backslash or ";" is refused')
    out.push(seg)
  }
  // Removing dot segments can leave a leading empty segment (`/a/..//x`): a path never starts with `//`.
  while (out.length > 1 && out[0] === '') out.shift()
  return `/${out.join('/')}${target.slice(q, end)}`
}

/** Decodes escapes of unreserved characters, upper-cases the hex of the others; refuses malformed ones and `%00`. */
function decodeUnreserved(seg: string): string | ClientRequestError {
  if (seg.indexOf('%') === -1) return seg
  let out = ''
  let from = 0
  for (let i = seg.indexOf('%'); i !== -1; i = seg.indexOf('%', i + 1)) {
    const h = seg.charCodeAt(i + 1)
    const l = seg.charCodeAt(i + 2)
    if (!isHex(h) || !isHex(l)) return BAD('malformed percent-encoding in the path')
    const v = Number.parseInt(seg.slice(i + 1, i + 3), 16)
    if (v === 0) return BAD('an encoded NUL in the path is refused')
    out += seg.slice(from, i)
    out += isUnreserved(v) ? String.fromCharCode(v) : `%${seg.slice(i + 1, i + 3).toUpperCase()}`
    from = i + 3
  }
  return out + seg.slice(from)
}

/**
 * Whether a segment that is not itself a dot segment would become one for a backend that splits on `%2F`, `%5C` or
 * `\`, or cuts `;params` first.
 */
function hidesDotSegment(seg: string): boolean {
  if (seg.charCodeAt(0) !== 46 && seg.indexOf('%2F') === -1 && seg.indexOf('%5C') === -1 && seg.indexOf('\\') === -1)
    return false
  for (const piece of seg.split(/%2F|%5C|\\/)) {
    const semi = piece.indexOf(';')
    const p = semi === -1 ? piece : piece.slice(0, semi)
    if (p === '.' || p === '..') return true
  }
  return false
}
