/**
 * The parser decision of the pass-through data plane, measured: Node's own llhttp binding (`_http_common`'s
 * HTTPParser, what node:http uses) against the WebAssembly build of llhttp that undici ships, through the data
 * plane's own wrapper (src/passthrough/llhttp.ts: offsets, pause at head end and message end). Parses a typical
 * request head and a typical small answer a million times each, three rounds, and prints ns per message.
 *
 *   node --import tsx bench/parsers.ts            (on Node 24: scripts/with-node24.sh node --import tsx bench/parsers.ts)
 */
import { createRequire } from 'node:module'
import { Framing, HttpParser } from '../src/passthrough/llhttp.js'

const require = createRequire(import.meta.url)
// Node's binding: the same class node:http's server and client use (internal API, differs between versions).
const { HTTPParser } = require('node:_http_common') as {
  HTTPParser: {
    new (): {
      initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
      execute(b: Buffer): number | Error
      [k: number]: unknown
    }
    REQUEST: number
    RESPONSE: number
    kOnHeadersComplete: number
    kOnBody: number
    kOnMessageComplete: number
    kOnExecute: number
  }
}

const REQ = Buffer.from(
  'GET /api/items?page=2 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n',
)
const RES = Buffer.from(
  `HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 25 Nov 2026 18:48:13 GMT\r\nContent-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n${'x'.repeat(100)}`,
)
const N = 1_000_000

function time(fn: () => void): number {
  for (let i = 0; i < 50_000; i++) fn()
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < N; i++) fn()
  return Number(process.hrtime.bigint() - t0) / N
}

function nodeBinding(type: number, buf: Buffer): () => void {
  const p = new HTTPParser()
  p.initialize(type, {}, 0, 0)
  p[HTTPParser.kOnHeadersComplete] = () => 0
  p[HTTPParser.kOnBody] = () => {}
  p[HTTPParser.kOnMessageComplete] = () => {}
  p[HTTPParser.kOnExecute] = () => {}
  return () => {
    p.execute(buf)
  }
}

function wasm(kind: 'request' | 'response', buf: Buffer): () => void {
  const p = new HttpParser(kind)
  return () => {
    p.next()
    const n = p.execute(buf, 0, buf.length, 0)
    if (p.framing() === Framing.Length) p.skipLengthBody()
    if (n <= 0) throw new Error('parse failed')
  }
}

const rows: [string, number[], number[]][] = [
  ['Node binding (_http_common HTTPParser)', [], []],
  ['llhttp WebAssembly (undici build, src/passthrough/llhttp.ts)', [], []],
]
for (let round = 0; round < 3; round++) {
  rows[0]![1].push(time(nodeBinding(HTTPParser.REQUEST, REQ)))
  rows[0]![2].push(time(nodeBinding(HTTPParser.RESPONSE, RES)))
  rows[1]![1].push(time(wasm('request', REQ)))
  rows[1]![2].push(time(wasm('response', RES)))
}
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[1]!
process.stdout.write(
  `Node ${process.versions.node}; ns per message, median of 3 rounds of ${N.toLocaleString('en-US')}\n\n| parser | request head | answer (head + 100 B) |\n|---|---:|---:|\n`,
)
for (const [name, req, res] of rows)
  process.stdout.write(`| ${name} | ${med(req).toFixed(0)} | ${med(res).toFixed(0)} |\n`)
