import type { ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startBackend } from './helpers/backends.js'
import { sleep, startConsul } from './helpers/consul.js'
import { countBackends } from './helpers/http.js'
import { startServe } from './helpers/serve.js'
import { tempDir } from './helpers/tmp.js'

/**
 * `consul-lb serve` loads undici and yaml only when it uses them (src/lazy.ts): each costs the process memory for
 * as long as it runs. A `--require` probe in the served process answers SIGUSR2 with the packages whose entry module
 * is loaded so far (both are CommonJS, so an `import` of either lands in require.cache too). The pass-through plane's
 * parser is undici's llhttp build (lib/llhttp/), which loads without undici's entry.
 */
const PROBE = `const entries = { undici: '/node_modules/undici/index.js', yaml: '/node_modules/yaml/dist/index.js' }
process.on('SIGUSR2', () => {
  const loaded = Object.keys(entries).filter((p) => Object.keys(require.cache).some((k) => k.endsWith(entries[p])))
  process.stderr.write('LOADED ' + JSON.stringify(loaded) + '\\n')
})
`

async function loadedPackages(s: { proc: ChildProcess; output: () => string }): Promise<string[]> {
  const before = s.output().length
  s.proc.kill('SIGUSR2')
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    const m = /LOADED (\[[^\]]*\])/.exec(s.output().slice(Math.max(0, before - 200)))
    if (m) return JSON.parse(m[1]!) as string[]
    await sleep(50)
  }
  throw new Error(`the probe did not answer: ${s.output()}`)
}

t.test('serve loads undici only for the classic plane, yaml only for a YAML config file', async (t) => {
  const dir = tempDir(t, 'clb-lazy-')
  const probe = join(dir, 'probe.cjs')
  writeFileSync(probe, PROBE)
  const env = { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${probe}`.trim() }
  const consul = await startConsul(t)
  const b = await startBackend('lazy-1', '127.0.0.1', 0, t)
  await consul.register({ ID: b.id, Name: 'lazy', Address: b.host, Port: b.port })
  const yamlFile = join(dir, 'lb.yaml')
  writeFileSync(yamlFile, 'logLevel: warn\n')
  const jsonFile = join(dir, 'lb.json')
  writeFileSync(jsonFile, '{"logLevel": "warn"}\n')

  const cases: [string, string[], string[]][] = [
    ['pass-through plane, JSON config', ['--config', jsonFile], []],
    ['pass-through plane, YAML config', ['--config', yamlFile], ['yaml']],
    ['classic plane', ['--data-plane', 'classic', '--log-level', 'warn'], ['undici']],
  ]
  for (const [name, args, want] of cases) {
    const s = await startServe(t, ['--dns', consul.dnsAddr, '--route', '/=lazy', ...args], env)
    const r = await countBackends(s.port, 6, {}, '/')
    t.same(r.counts, { 'lazy-1': 6 }, `${name}: requests served`)
    t.same(await loadedPackages(s), want, `${name}: loaded ${want.length === 0 ? 'neither' : want.join(', ')}`)
    s.proc.kill('SIGTERM')
    t.equal(await s.exited, 0, `${name}: SIGTERM → exit 0`)
  }
})
