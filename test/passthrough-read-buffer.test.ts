import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect, createServer as createTcpServer, Socket } from 'node:net'
import t, { type Test } from 'tap'
import { adopt, lend, ReadBuffer } from '../src/passthrough/read-buffer.js'
import { type ConsulAgent, startConsul } from './helpers/consul.js'
import { startTestProxy } from './helpers/proxy.js'

/**
 * The pass-through data plane reads every socket into a buffer of its own and lends views of it to the writes it
 * makes (src/passthrough/read-buffer.ts). A write that does not complete at once keeps pointing into that buffer, so
 * the next read must go elsewhere. The first test drives a ReadBuffer by hand against a peer that reads nothing, the
 * one case where a reuse is certain to show (on loopback, the data plane's pauses on backpressure make it rare, so
 * an end-to-end test alone could not fail). The others move megabytes of random bytes end to end through the new
 * read path where every write waits (a client that reads slowly, an instance that reads slowly, a tunnel both ways)
 * and compare digests.
 */

const BIG = 6 * 1024 * 1024

/** Deterministic pseudo-random bytes (xorshift), so a corrupted copy cannot match by chance. */
function randomBytes(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    b[i] = x & 0xff
  }
  return b
}
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** Calls `answer` with each request's body (Content-Length framed) as `c` reads it whole, and its index. */
function eachRequest(c: Socket, answer: (body: Buffer, index: number) => void): void {
  let buf = Buffer.alloc(0)
  let n = 0
  c.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d])
    for (;;) {
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return
      const len = Number(/content-length: *(\d+)/i.exec(buf.toString('latin1', 0, end))?.[1] ?? 0)
      if (buf.length < end + 4 + len) return
      const body = buf.subarray(end + 4, end + 4 + len)
      buf = buf.subarray(end + 4 + len)
      answer(body, n++)
    }
  })
  c.on('error', () => {})
}

let consul: ConsulAgent
t.before(async () => {
  consul = await startConsul(t)
})

let n = 0
async function listen(server: Server | ReturnType<typeof createTcpServer>, t: Test): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    ;(server as Server).closeAllConnections?.()
    server.close()
  })
  return (server.address() as { port: number }).port
}
async function serviceOn(port: number, t: Test, settings: Record<string, unknown> = {}) {
  const name = `rb${++n}`
  await consul.register({ ID: `${name}-1`, Name: name, Address: '127.0.0.1', Port: port })
  const p = await startTestProxy(t, consul, { dataPlane: 'passthrough', routes: [`/=${name}`], ...settings })
  return p
}

t.test('a read buffer lent to a write still pending is given away; the next read goes to a fresh one', async (t) => {
  // A peer that reads nothing until told: the writer's kernel buffer fills and its writes stay queued.
  let peer: Socket | null = null
  const server = createTcpServer((c) => {
    c.pause()
    peer = c
  })
  await listen(server, t)
  const w = connect((server.address() as { port: number }).port, '127.0.0.1')
  t.teardown(() => w.destroy())
  await new Promise((resolve) => w.once('connect', resolve))
  const rb = new ReadBuffer((view) => {
    w.write(view)
    lend(w)
  })
  // What net does for each read: fill the buffer it was given, call back, ask for the next buffer.
  const sent: Buffer[] = []
  let swaps = 0
  let buf = rb.onread.buffer()
  for (let i = 0; i < 400 && swaps < 3; i++) {
    const n = 1000 + ((i * 7919) % 60000)
    buf.fill(i & 0xff, 0, n)
    sent.push(Buffer.alloc(n, i & 0xff))
    rb.onread.callback(n, buf)
    const next = rb.onread.buffer()
    if (next !== buf) {
      t.ok(w.writableLength > 0, 'given away only while a write is pending')
      swaps++
    }
    buf = next
  }
  t.ok(swaps > 0, 'writes backed up and the buffer was given away')
  const want = Buffer.concat(sent)
  w.end()
  const got = await new Promise<Buffer>((resolve) => {
    const parts: Buffer[] = []
    peer!.on('data', (b: Buffer) => parts.push(b))
    peer!.on('end', () => resolve(Buffer.concat(parts)))
    peer!.resume()
  })
  t.equal(got.length, want.length, 'every byte')
  t.equal(sha(got), sha(want), 'no pending write saw its bytes overwritten by a later read')
})

t.test('a socket without a handle to move is kept as it is (reads then come as data events)', async (t) => {
  const s = new Socket()
  t.teardown(() => s.destroy())
  const r = adopt(s, new ReadBuffer(() => {}), true)
  t.equal(r.adopted, false)
  t.equal(r.socket, s, 'the same socket')
})

/**
 * Reads from `s` (pausing 20 ms after every 128 KiB, so the proxy's writes back up) until `done(total, start)` says
 * so, where `start` is the first bytes read (up to 4 KiB); resolves with everything read.
 */
function readSlowly(s: Socket, done: (total: number, start: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = []
    let got = 0
    let start = Buffer.alloc(0)
    let sincePause = 0
    const onData = (b: Buffer): void => {
      parts.push(b)
      got += b.length
      if (start.length < 4096) start = Buffer.concat([start, b]).subarray(0, 4096)
      if (done(got, start)) {
        s.off('data', onData)
        s.off('close', onClose)
        s.pause()
        resolve(Buffer.concat(parts))
        return
      }
      sincePause += b.length
      if (sincePause >= 128 * 1024) {
        sincePause = 0
        s.pause()
        setTimeout(() => s.resume(), 20)
      }
    }
    const onClose = (): void => reject(new Error(`closed after ${got} bytes`))
    s.on('data', onData)
    s.once('close', onClose)
    s.resume()
  })
}

/** Done once a head and `len` bytes after it are in. */
const answerOf =
  (len: number) =>
  (total: number, start: Buffer): boolean => {
    const end = start.indexOf('\r\n\r\n')
    return end !== -1 && total >= end + 4 + len
  }

t.test('large answers to a client that reads slowly arrive intact, twice on one connection', async (t) => {
  const payloads = [randomBytes(BIG, 7), randomBytes(BIG + 12345, 11)]
  let i = 0
  const backend = createServer((_req: IncomingMessage, res: ServerResponse) => {
    const body = payloads[i++ % 2]!
    res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' })
    res.end(body)
  })
  const p = await serviceOn(await listen(backend, t), t)
  const s = connect(p.port, '127.0.0.1')
  s.on('error', () => {})
  t.teardown(() => s.destroy())
  for (const body of payloads) {
    s.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n')
    const got = await readSlowly(s, answerOf(body.length))
    const head = got.indexOf('\r\n\r\n')
    t.match(got.toString('latin1', 0, head), /^HTTP\/1\.1 200 /, 'an answer')
    const rest = got.subarray(head + 4)
    t.equal(rest.length, body.length, 'every byte, and nothing more')
    t.equal(sha(rest), sha(body), 'the bytes the instance sent')
  }
})

t.test('a large upload to an instance that reads slowly arrives intact', async (t) => {
  const body = randomBytes(BIG, 23)
  const backend = createServer((req: IncomingMessage, res: ServerResponse) => {
    const h = createHash('sha256')
    let len = 0
    req.on('data', (b: Buffer) => {
      h.update(b)
      len += b.length
      req.pause()
      setTimeout(() => req.resume(), 2)
    })
    req.on('end', () => {
      const out = `${len} ${h.digest('hex')}`
      res.writeHead(200, { 'content-length': out.length })
      res.end(out)
    })
  })
  const p = await serviceOn(await listen(backend, t), t)
  const res = await fetch(`http://127.0.0.1:${p.port}/up`, {
    method: 'POST',
    body: body,
    headers: { 'content-type': 'application/octet-stream' },
  })
  t.equal(res.status, 200)
  t.equal(await res.text(), `${body.length} ${sha(body)}`, 'the instance read every byte the client sent')
})

t.test('a tunnel carries megabytes both ways intact when each side reads slowly', async (t) => {
  // An instance that accepts the upgrade, then echoes what it reads, pausing as it goes.
  const backend = createTcpServer((c) => {
    let head = Buffer.alloc(0)
    const onHead = (b: Buffer) => {
      head = Buffer.concat([head, b])
      const end = head.indexOf('\r\n\r\n')
      if (end === -1) return
      c.off('data', onHead)
      c.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n')
      const rest = head.subarray(end + 4)
      if (rest.length > 0) c.write(rest)
      let since = 0
      c.on('data', (d: Buffer) => {
        if (!c.write(d)) c.pause()
        since += d.length
        if (since >= 256 * 1024) {
          since = 0
          c.pause()
          setTimeout(() => c.resume(), 10)
        }
      })
      c.on('drain', () => c.resume())
    }
    c.on('data', onHead)
    c.on('error', () => {})
  })
  const p = await serviceOn(await listen(backend, t), t)
  const s = connect(p.port, '127.0.0.1')
  s.on('error', () => {})
  t.teardown(() => s.destroy())
  s.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n')
  const head = await readSlowly(s, answerOf(0))
  t.match(head.toString('latin1'), /^HTTP\/1\.1 101 /, 'switched')
  t.equal(head.length, head.indexOf('\r\n\r\n') + 4, 'nothing before the client sent')
  const data = randomBytes(4 * 1024 * 1024, 31)
  const echoed = readSlowly(s, (total) => total >= data.length)
  for (let at = 0; at < data.length; at += 256 * 1024) s.write(data.subarray(at, at + 256 * 1024))
  const got = await echoed
  t.equal(got.length, data.length, 'every byte came back')
  t.equal(sha(got), sha(data), 'the bytes sent, through the tunnel and back')
})

t.test(
  'a body read whole and sent while the instance reads nothing is not overwritten by pipelined bytes',
  async (t) => {
    // The body (up to --request-buffer-bytes) is read whole, then sent on a pooled connection with its last read's
    // bytes still in the read buffer. The instance reads nothing for a while after its first answer, so that write
    // stays pending while the client pipelines its next request. (Here the write backs up past the high-water mark, so
    // the client's reads pause until it drains; a write left pending below that mark is the first test's case, which
    // is why Exchange.send lends the buffer too.)
    const body = randomBytes(14 * 1024 * 1024, 47)
    const backend = createTcpServer((c) =>
      eachRequest(c, (got, answered) => {
        const out = got.length > 0 ? `${got.length} ${sha(got)}` : `plain ${answered}`
        c.write(`HTTP/1.1 200 OK\r\nContent-Length: ${out.length}\r\n\r\n${out}`)
        if (answered === 0) {
          // After the first answer: deaf for a while (the proxy's next write to this connection backs up).
          c.pause()
          setTimeout(() => c.resume(), 700)
        }
      }),
    )
    const p = await serviceOn(await listen(backend, t), t, { requestBufferBytes: 16 * 1024 * 1024 })
    const s = connect(p.port, '127.0.0.1')
    s.on('error', () => {})
    t.teardown(() => s.destroy())
    // A first request leaves a keep-alive connection in the instance's pool.
    s.write('GET /warm HTTP/1.1\r\nHost: a\r\n\r\n')
    const warm = await readSlowly(s, (_total, start) => start.toString('latin1').includes('plain 0'))
    t.match(warm.toString('latin1'), /plain 0$/, 'a pooled connection')
    s.write(`POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`)
    s.write(body)
    await new Promise((resolve) => setTimeout(resolve, 300))
    s.write(`GET /next HTTP/1.1\r\nHost: a\r\nX-Pad: ${'p'.repeat(8000)}\r\n\r\n`)
    const got = await readSlowly(s, (_total, start) => /plain 2$/.test(start.toString('latin1')))
    const text = got.toString('latin1')
    t.ok(text.includes(`\r\n\r\n${body.length} ${sha(body)}`), 'the instance got the body the client sent')
    t.match(text, /plain 2$/, 'and then the pipelined request')
  },
)

/**
 * Counts pause() and resume() on the proxy's own client sockets (those whose local port is `port`) while `fn` runs.
 * net.Socket#pause and #resume are what stop and restart reading (each a change of the socket's epoll interest).
 */
async function countPauses(port: number, fn: () => Promise<void>): Promise<{ pauses: number; resumes: number }> {
  const proto = Socket.prototype as unknown as { pause: () => Socket; resume: () => Socket }
  const { pause, resume } = proto
  const seen = { pauses: 0, resumes: 0 }
  proto.pause = function (this: Socket) {
    if (this.localPort === port) seen.pauses++
    return pause.call(this)
  }
  proto.resume = function (this: Socket) {
    if (this.localPort === port) seen.resumes++
    return resume.call(this)
  }
  try {
    await fn()
  } finally {
    proto.pause = pause
    proto.resume = resume
  }
  return seen
}

/** An instance that reads each request whole (Content-Length framed) and answers with its body's length and digest. */
function digestBackend(deafMs = 0) {
  return createTcpServer((c) => {
    eachRequest(c, (got) => {
      const out = `${got.length} ${sha(got)}`
      c.write(`HTTP/1.1 200 OK\r\nContent-Length: ${out.length}\r\n\r\n${out}`)
    })
    if (deafMs > 0) {
      // Reads nothing at first: what the proxy writes to it backs up.
      c.pause()
      setTimeout(() => c.resume(), deafMs)
    }
  })
}

/** Sends `count` POSTs of `body` one after the other on one connection; resolves with the answers' bodies. */
async function postInTurn(port: number, body: Buffer, count: number, t: Test): Promise<string[]> {
  const s = connect(port, '127.0.0.1')
  s.on('error', () => {})
  t.teardown(() => s.destroy())
  const answers: string[] = []
  for (let i = 0; i < count; i++) {
    // Head and body in one write, as load generators and most clients send a small upload.
    s.write(
      Buffer.concat([Buffer.from(`POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`), body]),
    )
    const got = await readSlowly(s, (_total, start) => {
      const text = start.toString('latin1')
      const end = text.indexOf('\r\n\r\n')
      const len = Number(/content-length: *(\d+)/i.exec(text)?.[1] ?? -1)
      return end !== -1 && len >= 0 && text.length >= end + 4 + len
    })
    answers.push(got.toString('latin1', got.indexOf('\r\n\r\n') + 4))
  }
  return answers
}

t.test("a request body the instance's socket takes at once does not pause the client's reads", async (t) => {
  // write() answers false for any write of 16 KiB or more, even one the kernel took whole; pausing on that answer
  // stopped and restarted the client's reading on every such request (writeLent).
  const body = randomBytes(16 * 1024, 53)
  const p = await serviceOn(await listen(digestBackend(), t), t)
  const count = 20
  let answers: string[] = []
  const seen = await countPauses(p.port, async () => {
    answers = await postInTurn(p.port, body, count, t)
  })
  t.same(answers, Array(count).fill(`${body.length} ${sha(body)}`), 'every body arrived intact')
  // A write the loopback kernel could not take at once would pause rightly; on an idle connection that is rare.
  t.ok(seen.pauses <= 2, `reading paused ${seen.pauses} times over ${count} requests (it was once per request)`)
})

t.test("a request body that backs up at the instance pauses the client's reads until it drains", async (t) => {
  const body = randomBytes(8 * 1024 * 1024, 59)
  const p = await serviceOn(await listen(digestBackend(500), t), t)
  let answers: string[] = []
  const seen = await countPauses(p.port, async () => {
    answers = await postInTurn(p.port, body, 1, t)
  })
  t.same(answers, [`${body.length} ${sha(body)}`], 'the body arrived intact')
  t.ok(seen.pauses >= 1, `reading paused while the instance read nothing (${seen.pauses} times)`)
  t.ok(seen.resumes >= seen.pauses, `and resumed each time (${seen.resumes} resumes)`)
})
