import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect } from 'node:net'
import t from 'tap'
import { type ConsulAgent, startConsul } from './helpers/consul.js'
import { startTestProxy } from './helpers/proxy.js'

/**
 * Differential test: the same randomised request streams (methods, Content-Length and chunked bodies of random
 * sizes, pipelined batches, heads and bodies split into random pieces written with pauses, clients that abort) go
 * to the backend directly, through the classic data plane and through the pass-through one; the randomised answers
 * (status, headers, Content-Length or chunked bodies written in random pieces, HEAD, 204, 304) come back the same
 * way. What the backend received (method, path, test headers, body bytes) and what each client got (status, test
 * headers, body bytes) must be identical on all three paths. Seeds are fixed: a failure names its seed.
 */

/** A small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

interface Seen {
  method: string
  url: string
  test: string
  /** Length and SHA-1 of the body bytes (a failure prints a line, not 70 kB). */
  body: string
}

function digest(b: Buffer | string): string {
  return `${b.length}:${createHash('sha1').update(b).digest('hex').slice(0, 16)}`
}

/** By test id: node:http starts pipelined requests at once, so the classic plane may forward them in another order. */
function byTest(list: Seen[] | undefined): Seen[] | undefined {
  return list && [...list].sort((a, b) => a.test.localeCompare(b.test))
}

/** The answer a request asks for, from its `x-answer` header: `status;size;chunked;pieces`. */
function answer(req: IncomingMessage, res: ServerResponse): void {
  const [status, size, chunked, pieces] = String(req.headers['x-answer']).split(';').map(Number) as [
    number,
    number,
    number,
    number,
  ]
  const body = Buffer.from(Buffer.alloc(size, 0).map((_, i) => 97 + ((i * 7 + size) % 26)))
  const headers: Record<string, string | number> = { 'x-test-answer': `${status}-${size}` }
  const noBody = status === 204 || status === 304 || req.method === 'HEAD'
  if (!chunked || noBody) headers['content-length'] = status === 204 ? 0 : size
  res.writeHead(status, headers)
  if (noBody) {
    res.end()
    return
  }
  const step = Math.max(1, Math.ceil(size / pieces))
  let at = 0
  const next = (): void => {
    if (res.destroyed) return
    if (at >= size) {
      res.end()
      return
    }
    res.write(body.subarray(at, at + step))
    at += step
    setImmediate(next)
  }
  next()
}

interface Got {
  status: number
  test: string
  body: string
}

/** Parses a stream of HTTP/1.1 answers (Content-Length, chunked, no body for HEAD/204/304); null if incomplete. */
function parseAnswers(buf: Buffer, heads: boolean[]): Got[] | null {
  const out: Got[] = []
  let at = 0
  for (const isHead of heads) {
    const end = buf.indexOf('\r\n\r\n', at)
    if (end === -1) return null
    const head = buf.toString('latin1', at, end)
    const status = Number(head.slice(9, 12))
    if (status === 100) throw new Error('no 100 Continue was asked for')
    const test = /\r\nx-test-answer: *([^\r]*)/i.exec(head)?.[1] ?? ''
    let p = end + 4
    let body = ''
    if (!(isHead || status === 204 || status === 304)) {
      const cl = /\r\ncontent-length: *(\d+)/i.exec(head)
      if (cl) {
        if (buf.length < p + Number(cl[1])) return null
        body = buf.toString('latin1', p, p + Number(cl[1]))
        p += Number(cl[1])
      } else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
        for (;;) {
          const le = buf.indexOf('\r\n', p)
          if (le === -1) return null
          const n = Number.parseInt(buf.toString('latin1', p, le), 16)
          if (n === 0) {
            // Node's server sends no trailers: the last chunk is `0\r\n\r\n`.
            if (buf.length < le + 4) return null
            p = le + 4
            break
          }
          if (buf.length < le + 2 + n + 2) return null
          body += buf.toString('latin1', le + 2, le + 2 + n)
          p = le + 2 + n + 2
        }
      }
    }
    out.push({ status, test, body: digest(Buffer.from(body, 'latin1')) })
    at = p
  }
  return out
}

interface Plan {
  bytes: Buffer[]
  heads: boolean[]
  abortAfter: number | null
}

/** One connection's requests: each a method, path, answer spec and body, written as pieces; pipelined in batches. */
function plan(seed: number): Plan {
  const r = rng(seed)
  const count = 3 + Math.floor(r() * 6)
  const parts: Buffer[] = []
  const heads: boolean[] = []
  for (let i = 0; i < count; i++) {
    const method = ['GET', 'POST', 'PUT', 'HEAD', 'DELETE'][Math.floor(r() * 5)]!
    const status = [200, 200, 200, 201, 404, 500, 204, 304][Math.floor(r() * 8)]!
    const size = Math.floor(r() ** 2 * 70_000)
    const answerSpec = `${status};${size};${r() < 0.5 ? 1 : 0};${1 + Math.floor(r() * 6)}`
    const hasBody = method === 'POST' || method === 'PUT'
    const bodySize = hasBody ? Math.floor(r() ** 2 * 40_000) : 0
    const body = Buffer.from(Buffer.alloc(bodySize, 0).map((_, k) => 65 + ((k + seed) % 26)))
    const chunked = hasBody && r() < 0.5
    let head = `${method} /d/${seed}/${i}?q=${Math.floor(r() * 1000)} HTTP/1.1\r\nHost: diff.example\r\nX-Answer: ${answerSpec}\r\nX-Test: ${seed}-${i}\r\n`
    if (hasBody) head += chunked ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${bodySize}\r\n`
    parts.push(Buffer.from(`${head}\r\n`, 'latin1'))
    if (hasBody && chunked) {
      let at = 0
      while (at < bodySize) {
        const n = Math.min(bodySize - at, 1 + Math.floor(r() * 9000))
        parts.push(Buffer.from(`${n.toString(16)}\r\n`), body.subarray(at, at + n), Buffer.from('\r\n'))
        at += n
      }
      parts.push(Buffer.from('0\r\n\r\n'))
    } else if (hasBody) parts.push(body)
    heads.push(method === 'HEAD')
  }
  // Re-split the whole stream at random points: heads and bodies cut anywhere, several requests per write.
  const all = Buffer.concat(parts)
  const bytes: Buffer[] = []
  let at = 0
  while (at < all.length) {
    const n = r() < 0.2 ? 1 + Math.floor(r() * 40) : 1 + Math.floor(r() * 30_000)
    bytes.push(all.subarray(at, at + n))
    at += n
  }
  return { bytes, heads, abortAfter: r() < 0.15 ? Math.floor(bytes.length / 2) : null }
}

/** Plays a plan on one connection; resolves with the answers (null for an aborted plan). */
function play(port: number, p: Plan, what: string): Promise<Got[] | null> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1')
    let got = Buffer.alloc(0)
    const timer = setTimeout(() => {
      s.destroy()
      reject(
        new Error(
          `${what}: no complete answer stream within 20 s (${got.length} bytes: ${JSON.stringify(got.toString('latin1', 0, 300))})`,
        ),
      )
    }, 20_000)
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      const answers = parseAnswers(got, p.heads)
      if (answers !== null) {
        clearTimeout(timer)
        s.end()
        resolve(answers)
      }
    })
    s.on('error', () => {})
    s.on('connect', async () => {
      for (let i = 0; i < p.bytes.length; i++) {
        if (p.abortAfter === i) {
          clearTimeout(timer)
          s.destroy()
          resolve(null)
          return
        }
        if (s.destroyed) return
        s.write(p.bytes[i]!)
        if (i % 3 === 0) await new Promise((r) => setTimeout(r, 1))
      }
    })
  })
}

let consul: ConsulAgent
t.before(async () => {
  consul = await startConsul(t)
})

t.test('randomised streams: direct, classic and pass-through agree at the backend and at the client', async (t) => {
  const seen = new Map<string, Seen[]>()
  let current = 'direct'
  const backend = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const key = `${current}:${String(req.headers['x-test']).split('-')[0]}`
      let list = seen.get(key)
      if (list === undefined) {
        list = []
        seen.set(key, list)
      }
      list.push({
        method: req.method!,
        url: req.url!,
        test: String(req.headers['x-test']),
        body: digest(Buffer.concat(chunks)),
      })
      answer(req, res)
    })
    req.on('error', () => {})
  })
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    backend.closeAllConnections()
    backend.close()
  })
  const port = (backend.address() as { port: number }).port
  await consul.register({ ID: 'diff-1', Name: 'diff', Address: '127.0.0.1', Port: port })
  const classic = await startTestProxy(t, consul, { dataPlane: 'classic', routes: ['/=diff'] })
  const passthrough = await startTestProxy(t, consul, { dataPlane: 'passthrough', routes: ['/=diff'] })
  const paths: [string, number][] = [
    ['direct', port],
    ['classic', classic.port],
    ['passthrough', passthrough.port],
  ]
  const seeds = Array.from({ length: 40 }, (_, i) => 1000 + i)
  let compared = 0
  for (const seed of seeds) {
    const p = plan(seed)
    const results = new Map<string, Got[] | null>()
    for (const [name, at] of paths) {
      current = name
      results.set(name, await play(at, p, `seed ${seed} ${name}`))
    }
    // Aborted plans: which requests made it through depends on timing; only that nothing hangs or leaks counts.
    if (p.abortAfter !== null) continue
    compared++
    t.same(results.get('classic'), results.get('direct'), `seed ${seed}: classic answers as direct`)
    t.same(results.get('passthrough'), results.get('direct'), `seed ${seed}: pass-through answers as direct`)
    const direct = seen.get(`direct:${seed}`)
    t.ok(direct !== undefined && direct.length === p.heads.length, `seed ${seed}: the backend saw every request`)
    t.same(byTest(seen.get(`classic:${seed}`)), byTest(direct), `seed ${seed}: classic forwarded what direct received`)
    t.same(
      seen.get(`passthrough:${seed}`),
      direct,
      `seed ${seed}: pass-through forwarded what direct received, in order`,
    )
  }
  t.ok(compared >= 25, `${compared} streams compared`)
  await new Promise((r) => setTimeout(r, 300))
  t.equal(passthrough.proxy.upstreams.slotsInUse(), 0, 'every pass-through instance slot came back')
  t.equal(classic.proxy.upstreams.slotsInUse(), 0, 'every classic instance slot came back')
})
