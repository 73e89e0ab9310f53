/**
 * Hop-by-hop headers (RFC 9110 §7.6.1) are meant for one connection and are never forwarded, in either direction.
 * Header names arrive in their original case from rawHeaders; the length check first keeps the common case cheap.
 */
// `expect` is answered by this listener (Node sends the 100 Continue) and undici refuses to forward it;
// `http2-settings` belongs to an h2c upgrade of this connection (RFC 7540 §3.2.1).
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

/** Names listed in a Connection header are hop-by-hop too ("Connection: close, x-foo"). */
export function connectionTokens(value: string | undefined): Set<string> | null {
  // The values nearly every peer sends name no header: skip the split (the profile showed it on every response).
  if (!value || value === 'keep-alive' || value === 'close' || value === 'Keep-Alive' || value === 'Close') return null
  let set: Set<string> | null = null
  for (const t of value.split(',')) {
    const n = t.trim().toLowerCase()
    if (n === '' || n === 'close' || n === 'keep-alive') continue
    if (set === null) set = new Set()
    set.add(n)
  }
  return set
}
