import { spawn } from 'node:child_process'
import { resolve } from 'node:path'
import t from 'tap'
import { startBackend } from './helpers/backends.js'
import { startConsul } from './helpers/consul.js'

t.test(
  'after close() nothing keeps the process alive: timers, DNS sockets, upstream pools and listeners are released',
  async (t) => {
    const consul = await startConsul(t)
    const b = await startBackend('close-1', '127.0.0.1', 0, t)
    await consul.register({ ID: b.id, Name: 'close', Address: b.host, Port: b.port })
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', resolve(import.meta.dirname, 'fixtures', 'close-exits.ts'), consul.dnsAddr, String(b.port)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d
    })
    child.stderr.on('data', (d: Buffer) => {
      out += d
    })
    let closedAt = 0
    child.stdout.on('data', () => {
      if (!closedAt && out.includes('closed')) closedAt = Date.now()
    })
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000)
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)))
    clearTimeout(killer)
    t.match(out, /closed 200/, 'served a request, then closed')
    t.equal(code, 0, `exited on its own (${out.trim()})`)
    t.ok(closedAt > 0 && Date.now() - closedAt < 3000, `exited ${Date.now() - closedAt} ms after close()`)
  },
)
