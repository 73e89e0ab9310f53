/**
 * `npm run bench:profile`: consul-lb (1 worker) under wrk load (c=50, 100 B) with `node --cpu-prof`, then a summary
 * of the profile: self time by function (ours first), and the share of time in our code, undici, node:http and the
 * rest. Writes bench/results/profile.md; the raw .cpuprofile stays in bench/results/tmp/ (git-ignored) for a
 * flame view in Chrome DevTools or speedscope.
 *
 *   npm run bench:profile -- --duration 15 --cli /tmp/experiment/dist/cli.js
 *   npm run bench:profile -- --data-plane classic     (the pass-through data plane is profiled by default)
 *   node --import tsx bench/profile.ts --from bench/results/tmp/cpuprof-…/….cpuprofile
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { freePort } from '../test/helpers/ports.js'
import { waitServing } from './contenders.js'
import { runWrk, SCENARIOS, writeWrkScripts, wrkBinary } from './load.js'
import { killAllTrackedSync, spawnConsulLb, stopTracked } from './procs.js'
import { ROOT, type Stack, serveArgs, startStack } from './stack.js'

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    /** Another build of the CLI (an experiment in a copy of dist/), to compare profiles. */
    cli: { type: 'string', default: join(ROOT, 'dist', 'cli.js') },
    out: { type: 'string', default: join(ROOT, 'bench', 'results', 'profile.md') },
    top: { type: 'string', default: '30' },
    /** The data plane profiled (passthrough or classic). */
    'data-plane': { type: 'string', default: 'passthrough' },
    /** Summarise an existing .cpuprofile instead of running the load. */
    from: { type: 'string' },
  },
})

process.on('exit', killAllTrackedSync)
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.on(sig, () => {
    killAllTrackedSync()
    process.exit(130)
  })

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
}
interface CpuProfile {
  nodes: ProfileNode[]
  samples: number[]
  timeDeltas: number[]
  startTime: number
  endTime: number
}

type Category =
  | 'consul-lb'
  | 'llhttp (WebAssembly)'
  | 'undici'
  | 'node:http'
  | 'node (other JS)'
  | 'prom-client'
  | 'other deps'
  | 'native / V8 builtins'
  | 'GC'
  | 'idle'
  | 'program'

function categorise(f: CallFrame): Category {
  const u = f.url
  if (f.functionName === '(idle)') return 'idle'
  if (f.functionName === '(garbage collector)') return 'GC'
  if (f.functionName === '(program)') return 'program'
  // The pass-through data plane's parser: wasm functions (and the wasm↔JS call stubs).
  if (u.startsWith('wasm://') || f.functionName.startsWith('wasm-')) return 'llhttp (WebAssembly)'
  if (u.includes('/node_modules/undici/')) return 'undici'
  if (u.includes('/node_modules/prom-client/')) return 'prom-client'
  if (u.includes('/node_modules/')) return 'other deps'
  if (u.includes('/dist/') || u.includes('/src/')) return 'consul-lb'
  if (/^node:(_http_|http)/.test(u)) return 'node:http'
  if (u.startsWith('node:')) return 'node (other JS)'
  return 'native / V8 builtins'
}

function where(f: CallFrame): string {
  if (!f.url) return ''
  const u = f.url.replace(/^file:\/\//, '')
  const short = u.includes('/node_modules/')
    ? u.slice(u.lastIndexOf('/node_modules/') + 14)
    : u.startsWith('/')
      ? relative(ROOT, u)
      : u
  return `${short}:${f.lineNumber + 1}`
}

export function summariseProfile(p: CpuProfile, top: number): string {
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const selfUs = new Map<number, number>()
  for (let i = 0; i < p.samples.length; i++)
    selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0))
  const fn = new Map<string, { f: CallFrame; us: number; cat: Category }>()
  const cats = new Map<Category, number>()
  let busy = 0
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame
    const cat = categorise(f)
    cats.set(cat, (cats.get(cat) ?? 0) + us)
    if (cat === 'idle') continue
    busy += us
    const key = `${f.functionName}@${f.url}:${f.lineNumber}`
    const e = fn.get(key) ?? { f, us: 0, cat }
    e.us += us
    fn.set(key, e)
  }
  // Native frames (writev, writeLatin1String: the socket writes) charged to the JS code that called them.
  const parent = new Map<number, number>()
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const owners = new Map<string, number>()
  for (const [id, us] of selfUs) {
    let n = byId.get(id)!
    const own = categorise(n.callFrame)
    if (own === 'idle') continue
    let label: string = own
    if (own === 'native / V8 builtins') {
      while (n.callFrame.url === '' && parent.has(n.id)) n = byId.get(parent.get(n.id)!)!
      const callerCat = categorise(n.callFrame)
      label =
        n.callFrame.url === ''
          ? own
          : `${callerCat === 'node (other JS)' ? 'node streams / net' : callerCat} (native calls, e.g. socket writes)`
      if (callerCat === 'node (other JS)' || callerCat === 'node:http') {
        // Walk further up to see whether a stream write was started by undici (upstream) or node:http (client).
        let m = n
        while (parent.has(m.id) && !['undici', 'node:http', 'consul-lb'].includes(categorise(m.callFrame)))
          m = byId.get(parent.get(m.id)!)!
        label = `native calls under ${categorise(m.callFrame)} (socket writes ${categorise(m.callFrame) === 'undici' ? 'to the upstream' : 'to the client'})`
      }
    }
    owners.set(label, (owners.get(label) ?? 0) + us)
  }
  const pct = (us: number): string => `${((us / busy) * 100).toFixed(1)} %`
  const lines = ['| where the time went (self time, idle excluded) | share |', '|---|---:|']
  for (const [c, us] of [...cats].filter(([c]) => c !== 'idle').sort((a, b) => b[1] - a[1]))
    lines.push(`| ${c} | ${pct(us)} |`)
  lines.push('', '| the same, native time charged to its JS caller | share |', '|---|---:|')
  for (const [c, us] of [...owners].sort((a, b) => b[1] - a[1])) lines.push(`| ${c} | ${pct(us)} |`)
  lines.push('', `Busy ${(busy / 1e6).toFixed(2)} s of ${((p.endTime - p.startTime) / 1e6).toFixed(2)} s profiled.`, '')
  const sorted = [...fn.values()].sort((a, b) => b.us - a.us)
  lines.push(`Top ${top} functions by self time:`, '', '| self | function | where | category |', '|---:|---|---|---|')
  for (const e of sorted.slice(0, top))
    lines.push(`| ${pct(e.us)} | ${e.f.functionName || '(anonymous)'} | ${where(e.f)} | ${e.cat} |`)
  lines.push('', 'Our code (consul-lb) by self time:', '', '| self | function | where |', '|---:|---|---|')
  for (const e of sorted.filter((x) => x.cat === 'consul-lb').slice(0, top))
    lines.push(`| ${pct(e.us)} | ${e.f.functionName || '(anonymous)'} | ${where(e.f)} |`)
  return `${lines.join('\n')}\n`
}

async function main(): Promise<void> {
  if (args.from) {
    process.stdout.write(summariseProfile(JSON.parse(readFileSync(args.from, 'utf8')) as CpuProfile, Number(args.top)))
    return
  }
  const wrk = wrkBinary()
  if (!wrk) throw new Error('wrk is required for the profile run (apt-get install wrk)')
  const tmp = join(ROOT, 'bench', 'results', 'tmp')
  const profDir = join(tmp, `cpuprof-${Date.now()}`)
  mkdirSync(profDir, { recursive: true })
  const scripts = writeWrkScripts(join(profDir, 'wrk'))
  const sc = SCENARIOS.find((s) => s.id === 'c50-small')!
  let stack: Stack | null = null
  try {
    stack = await startStack()
    const port = await freePort()
    const cli = resolve(args.cli)
    const d = spawnConsulLb(cli, [...serveArgs(port, stack.consul.dnsAddr), '--data-plane', args['data-plane']], {
      nodeOptions: ['--cpu-prof', `--cpu-prof-dir=${profDir}`],
    })
    const url = `http://127.0.0.1:${port}`
    await waitServing(url, d, 'consul-lb')
    await runWrk(wrk, scripts.get(sc.id)!, url, sc, 3, 1)
    const r = await runWrk(wrk, scripts.get(sc.id)!, url, sc, Number(args.duration), 1)
    // SIGTERM: the CLI closes and exits normally, which is when --cpu-prof writes its file.
    await stopTracked(d.proc, 15_000)
    const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'))
    if (!file) throw new Error(`no .cpuprofile written in ${profDir}:\n${d.output()}`)
    const prof = JSON.parse(readFileSync(join(profDir, file), 'utf8')) as CpuProfile
    const md = [
      '# consul-lb CPU profile',
      '',
      `\`node --cpu-prof\` of \`${relative(ROOT, cli)} serve --data-plane ${args['data-plane']}\` (1 worker) under wrk c=${sc.connections}, ${args.duration} s, 100 B responses: ` +
        `${Math.round(r.rps).toLocaleString('en-US')} req/s, p99 ${r.p99Us} µs, ${r.errors} errors (profiler on: figures are lower than in the bench). ` +
        `Raw profile: ${relative(ROOT, join(profDir, file))} (open in Chrome DevTools or speedscope).`,
      '',
      summariseProfile(prof, Number(args.top)),
    ].join('\n')
    writeFileSync(args.out, md)
    process.stdout.write(md)
  } finally {
    await stack?.cleanup()
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:profile failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
  process.exitCode = 1
})
