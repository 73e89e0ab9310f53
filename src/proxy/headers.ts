/**
 * Header rewriting between client and instance, as pure functions over flat [name, value, …] lists (what node:http's
 * rawHeaders and undici's dispatch use). Hop-by-hop headers (RFC 9110 §7.6.1) are meant for one connection and never
 * forwarded, in either direction, nor is any header a Connection field names. Names arrive in their original case;
 * a length check first keeps the common case cheap.
 */

// `expect` is answered by this listener (the proxy decides, then sends 100 Continue itself) and undici refuses to
// forward it; `http2-settings` belongs to an h2c upgrade of this connection (RFC 9113 §3.2.1).
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'http2-settings',
])
const HOP_LENGTHS = new Set([...HOP_BY_HOP].map((h) => h.length))

export function isHopByHop(name: string): boolean {
  return HOP_LENGTHS.has(name.length) && HOP_BY_HOP.has(name.toLowerCase())
}

/**
 * Adds the header names listed in a Connection value ("close, x-foo") to `into` (created on first use); returns it.
 * `close`, `keep-alive` and `upgrade` name no end-to-end header worth a set entry: the values nearly every peer sends
 * skip the split (the profile showed it on every response).
 */
export function connectionTokens(value: string | undefined, into: Set<string> | null = null): Set<string> | null {
  if (!value || value === 'keep-alive' || value === 'close' || value === 'Keep-Alive' || value === 'Close') return into
  let set = into
  for (const t of value.split(',')) {
    const n = t.trim().toLowerCase()
    if (n === '' || n === 'close' || n === 'keep-alive') continue
    if (set === null) set = new Set()
    set.add(n)
  }
  return set
}

const XFF = 'x-forwarded-for'
const FORWARDED = 'forwarded'
const XFP = 'x-forwarded-proto'
const XFH = 'x-forwarded-host'

export interface ForwardRequest {
  /** The client's address (appended to X-Forwarded-For). */
  clientAddress: string
  /** The Connection header value(s) of the request, joined. */
  connection: string | undefined
  /** The Host the request is for: the Host header, or the authority of an absolute-form target. */
  host: string | undefined
  /** Replace the Host header with `host` (an absolute-form target: RFC 9112 §3.2.2 says its authority wins). */
  replaceHost: boolean
  /** For an upgrade: the Upgrade value to forward (with `Connection: upgrade`); null for a plain request. */
  upgrade: string | null
}

/**
 * Request headers for the instance: hop-by-hop ones dropped (an upgrade keeps `Upgrade` and sends
 * `Connection: upgrade`), Host kept (or set from an absolute-form target), X-Forwarded-For appended to,
 * X-Forwarded-Proto and X-Forwarded-Host set (this listener is the edge: a client's own values are not trusted). A
 * `Forwarded` field (RFC 7239) a client sent gets this hop's element appended, so its last element is always ours.
 */
export function forwardRequestHeaders(raw: readonly string[], f: ForwardRequest): string[] {
  const out: string[] = []
  let xff: string | null = null
  let forwarded: string | null = null
  let h2Settings = false
  const tokens = connectionTokens(f.connection)
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const len = name.length
    if (isHopByHop(name)) {
      // An h2c upgrade needs its HTTP2-Settings, named in Connection (RFC 9113 §3.2.1, RFC 7540 §3.2.1).
      if (f.upgrade !== null && len === 14 && name.toLowerCase() === 'http2-settings') {
        out.push(name, raw[i + 1]!)
        h2Settings = true
      }
      continue
    }
    if (len === 15 && name.toLowerCase() === XFF) {
      xff = xff === null ? raw[i + 1]! : `${xff}, ${raw[i + 1]}`
      continue
    }
    if ((len === 17 && name.toLowerCase() === XFP) || (len === 16 && name.toLowerCase() === XFH)) continue
    if (len === 9 && name.toLowerCase() === FORWARDED) {
      forwarded = forwarded === null ? raw[i + 1]! : `${forwarded}, ${raw[i + 1]}`
      continue
    }
    if (len === 4 && f.replaceHost && name.toLowerCase() === 'host') continue
    if (tokens?.has(name.toLowerCase())) continue
    out.push(name, raw[i + 1]!)
  }
  if (f.replaceHost && f.host !== undefined) out.push('host', f.host)
  if (f.upgrade !== null)
    out.push('connection', h2Settings ? 'upgrade, http2-settings' : 'upgrade', 'upgrade', f.upgrade)
  out.push(XFF, xff === null ? f.clientAddress : `${xff}, ${f.clientAddress}`, XFP, 'http')
  if (f.host !== undefined) out.push(XFH, f.host)
  if (forwarded !== null) out.push(FORWARDED, `${forwarded}, ${forwardedElement(f.clientAddress, f.host)}`)
  return out
}

/** This hop's RFC 7239 element; values quoted (an IPv6 address goes in brackets, §6). */
export function forwardedElement(address: string, host: string | undefined): string {
  const node = address.includes(':') ? `"[${address}]"` : `"${address}"`
  return `for=${node};proto=http${host === undefined ? '' : `;host="${host}"`}`
}

/**
 * Response headers for the client, from the instance's raw headers (Buffers from undici, strings from node:http):
 * hop-by-hop ones dropped and every header named by any of the Connection fields (there may be several). Kept on
 * purpose: `Upgrade` on a 426 (RFC 9110 §15.5.22 requires it; it then travels with `Connection: upgrade`, §7.8),
 * and on a 101 in a tunnel. Dropped: `Content-Length` on a 204 (RFC 9110 §8.6: never sent with 1xx or 204).
 */
export function forwardResponseHeaders(raw: readonly (Buffer | string)[], status: number): string[] {
  const out: string[] = []
  let tokens: Set<string> | null = null
  const keepUpgrade = status === 426 || status === 101
  const noLength = status === 204
  let upgrade = false
  for (let i = 0; i < raw.length; i += 2) {
    const r = raw[i]!
    const name = typeof r === 'string' ? r : r.toString('latin1')
    if (isHopByHop(name)) {
      const lower = name.toLowerCase()
      if (lower === 'connection') tokens = connectionTokens(latin1(raw[i + 1]!), tokens)
      else if (keepUpgrade && lower === 'upgrade') {
        out.push(name, latin1(raw[i + 1]!))
        upgrade = true
      }
      continue
    }
    if (noLength && name.length === 14 && name.toLowerCase() === 'content-length') continue
    out.push(name, latin1(raw[i + 1]!))
  }
  if (tokens !== null) {
    for (let i = out.length - 2; i >= 0; i -= 2) {
      const n = out[i]!.toLowerCase()
      if (tokens.has(n) && !(upgrade && n === 'upgrade')) out.splice(i, 2)
    }
  }
  if (upgrade) out.push('connection', 'upgrade')
  return out
}

function latin1(v: Buffer | string): string {
  return typeof v === 'string' ? v : v.toString('latin1')
}

/**
 * Makes a response from forwardResponseHeaders end its connection: one Connection field saying so, keeping the
 * `upgrade` option a 426 carries (`close, upgrade`).
 */
export function withClose(headers: string[]): void {
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] === 'connection') {
      headers[i + 1] = `close, ${headers[i + 1]}`
      return
    }
  }
  headers.push('connection', 'close')
}
