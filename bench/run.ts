/**
 * `npm run bench`: consul-lb against direct, nginx (static upstream, and resolver mode from our emitter) and HAProxy,
 * in interleaved rounds on the same machine and backends; then convergence figures. Writes bench/results/latest.{json,md,svg}.
 *
 *   npm run bench                      full run (8 contenders × 5 scenarios × 3 rounds × 5 s, about 14 min on 2 cores)
 *   npm run bench -- --quick           1 round × 2 s, for trying the harness
 *   npm run bench -- --rounds 5 --duration 10 --only consul-lb,nginx-upstream --scenarios c50-small
 *   npm run bench -- --no-convergence --no-autocannon --out /tmp/bench
 *   npm run bench -- --only consul-lb,consul-lb-exp --variant exp=/tmp/exp/dist/cli.js --out /tmp/ab   (A/B of a patch)
 *   npm run bench -- --node 24         consul-lb also on Node 24 (scripts/ensure-node24.sh), as contenders
 *                                      consul-lb-node24 and consul-lb-w2-node24
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, release, totalmem } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { type Contender, contenderSpecs, haproxyBinary, type Runtime } from './contenders.js'
import { type ConvergenceResult, measureConvergence } from './convergence.js'
import { type LoadResult, runAutocannon, runWrk, SCENARIOS, type Scenario, writeWrkScripts, wrkBinary } from './load.js'
import { killAllTrackedSync, sampleTree, sleep } from './procs.js'
import { type BenchReport, checkTargets, type Machine, type Measurement, markdown, summarise, svg } from './report.js'
import { ROOT, type Stack, startStack } from './stack.js'

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    duration: { type: 'string', default: '5' },
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    scenarios: { type: 'string' },
    'wrk-threads': { type: 'string', default: '1' },
    'haproxy-threads': { type: 'string', default: '1' },
    'autocannon-scenarios': { type: 'string', default: 'c50-small' },
    'no-autocannon': { type: 'boolean', default: false },
    'no-convergence': { type: 'boolean', default: false },
    out: { type: 'string', default: join(ROOT, 'bench', 'results') },
    /**
     * ID=PATH of another dist/cli.js (a patched copy), measured as contender consul-lb-ID; repeatable. Started as that
     * build ships (its ../bin/consul-lb when it has one, else `node PATH`: a copy of dist/ alone runs on V8's sizing).
     */
    variant: { type: 'string', multiple: true, default: [] },
    /** Another Node.js major to run consul-lb on as well (24: Debian testing's, see scripts/ensure-node24.sh). */
    node: { type: 'string', multiple: true, default: [] },
    help: { type: 'boolean', default: false },
  },
})

if (args.help) {
  process.stdout.write(
    `${readFileSync(new URL(import.meta.url), 'utf8')
      .split('*/')[0]!
      .replace(/^\/\*\*?|^ \* ?/gm, '')}\n`,
  )
  process.exit(0)
}

const rounds = args.quick ? 1 : positiveInt(args.rounds, '--rounds')
const durationS = args.quick ? 2 : positiveInt(args.duration, '--duration')
const wrkThreads = positiveInt(args['wrk-threads'], '--wrk-threads')
const cores = availableParallelism()
const scenarios = args.scenarios ? SCENARIOS.filter((s) => args.scenarios!.split(',').includes(s.id)) : SCENARIOS
const acScenarios = args['no-autocannon'] ? [] : args['autocannon-scenarios'].split(',')
const outDir = args.out
// Only this run's wrk scripts: bench/results/tmp/ also keeps bench:profile's raw profiles.
const tmpDir = join(outDir, 'tmp', `wrk-${process.pid}`)

/** The 1, 5 and 15 min load averages: other work on a shared machine shows up here. */
function loadavg(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
}

function positiveInt(v: string, name: string): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`bench: ${name} must be a positive integer (got ${v})\n`)
    process.exit(2)
  }
  return n
}

// Children are stopped by PID on every way out: normal end (finally), exceptions, Ctrl-C, SIGTERM.
process.on('exit', killAllTrackedSync)
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.on(sig, () => {
    killAllTrackedSync()
    process.exit(130)
  })

const isTty = process.stderr.isTTY
function progress(done: number, total: number, startedAt: number, what: string): void {
  const width = 24
  const filled = Math.round((done / total) * width)
  const elapsed = (Date.now() - startedAt) / 1000
  const eta = done > 0 ? Math.round((elapsed / done) * (total - done)) : 0
  const line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${fmtS(elapsed)} elapsed, ~${fmtS(eta)} left · ${what}`
  process.stderr.write(isTty ? `\r\x1b[K${line}` : `${line}\n`)
}
const note = (msg: string): void => {
  process.stderr.write(`${isTty ? '\r\x1b[K' : ''}bench: ${msg}\n`)
}
const fmtS = (s: number): string =>
  s >= 60 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`

function version(cmd: string, flag: string): string | null {
  try {
    const out = execFileSync(cmd, [flag], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    return out.split('\n')[0]!.trim()
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string }
    const text = `${e.stdout ?? ''}${e.stderr ?? ''}`.split('\n')[0]?.trim()
    return text || null
  }
}

/** `--node 24`: the wrapper that runs a command on Node 24 (fetched once into the cache by the project's script). */
function runtimesFromArgs(): Runtime[] {
  return args.node.map((major) => {
    if (major !== '24') {
      process.stderr.write(
        `bench: --node ${major}: only 24 is scripted (the bench itself runs on ${process.version})\n`,
      )
      process.exit(2)
    }
    const launcher = execFileSync('bash', [join(ROOT, 'scripts', 'ensure-node24.sh')], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim()
    const version = execFileSync(launcher, ['node', '--version'], { encoding: 'utf8' }).trim()
    return { id: `node${major}`, label: `Node ${version.replace(/^v/, '')}`, launcher }
  })
}

function machine(
  nginxBin: string,
  wrk: string | null,
  haproxy: string | null,
  loadavgBefore: string,
  runtimes: Runtime[],
): Machine {
  const cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? 'unknown CPU'
  // nginx prints its version on stderr.
  const nginx =
    execFileSync(nginxBin, ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim() ||
    execFileSync('sh', ['-c', '"$0" -v 2>&1', nginxBin], { encoding: 'utf8' }).trim()
  return {
    cpu,
    cores,
    loadavgBefore,
    loadavgAfter: loadavg(),
    memGb: totalmem() / 2 ** 30,
    kernel: `Linux ${release()}`,
    node: process.versions.node,
    otherNodes: runtimes.map((r) => r.label.replace(/^Node /, '')),
    nginx: nginx.replace('nginx version: ', ''),
    haproxy: haproxy ? (version(haproxy, '-v')?.replace(/ - https.*$/, '') ?? null) : null,
    wrk: wrk ? (version(wrk, '-v')?.replace(/ \[.*$/, '') ?? 'wrk') : null,
  }
}

async function measure(
  c: Contender,
  s: Scenario,
  tool: 'wrk' | 'autocannon',
  round: number,
  wrk: string | null,
  scripts: Map<string, string>,
): Promise<Measurement> {
  const before = c.pid === null ? null : sampleTree(c.pid)
  const r: LoadResult =
    tool === 'wrk'
      ? await runWrk(wrk!, scripts.get(s.id)!, c.url, s, durationS, wrkThreads)
      : await runAutocannon(c.url, s, durationS)
  const after = c.pid === null ? null : sampleTree(c.pid)
  return {
    round,
    scenario: s.id,
    contender: c.id,
    tool: r.tool,
    rps: r.rps,
    p50Us: r.p50Us,
    p99Us: r.p99Us,
    errors: r.errors,
    requests: r.requests,
    cpuUsPerReq: before && after && r.requests > 0 ? ((after.cpuS - before.cpuS) * 1e6) / r.requests : null,
    rssMb: after ? after.rssKb / 1024 : null,
    maxProcRssMb: after ? after.maxRssKb / 1024 : null,
  }
}

async function main(): Promise<void> {
  const startedAt = new Date()
  const loadBefore = loadavg()
  const wrk = wrkBinary()
  const skipped: string[] = []
  if (!wrk) skipped.push('wrk: not installed (apt-get install wrk as root); autocannon produced every figure')
  const variants = args.variant.map((v) => {
    const eq = v.indexOf('=')
    if (eq <= 0) {
      process.stderr.write(`bench: --variant expects ID=PATH (got ${v})\n`)
      process.exit(2)
    }
    return { id: v.slice(0, eq), cli: v.slice(eq + 1) }
  })
  const runtimes = runtimesFromArgs()
  const { specs: allSpecs, skipped: specSkips } = contenderSpecs(
    cores,
    positiveInt(args['haproxy-threads'], '--haproxy-threads'),
    variants,
    runtimes,
  )
  skipped.push(...specSkips)
  const specs = args.only ? allSpecs.filter((s) => args.only!.split(',').includes(s.id)) : allSpecs
  mkdirSync(tmpDir, { recursive: true })
  const scripts = writeWrkScripts(tmpDir)

  let stack: Stack | null = null
  const running: Contender[] = []
  const measurements: Measurement[] = []
  let convergence: ConvergenceResult | null = null
  try {
    note('starting Consul and three nginx backends')
    stack = await startStack()
    for (const spec of specs) {
      note(`starting ${spec.label}`)
      try {
        running.push(await spec.start(stack))
      } catch (err) {
        skipped.push(`${spec.id}: failed to start (${String(err).split('\n')[0]})`)
        note(`skipping ${spec.id}: ${String(err)}`)
      }
    }
    // Warm-up: JIT, connection pools and DNS caches of every contender, not measured.
    for (const c of running)
      await (wrk
        ? runWrk(wrk, scripts.get('c50-small')!, c.url, SCENARIOS[1]!, 2, wrkThreads)
        : runAutocannon(c.url, SCENARIOS[1]!, 2))

    const plan: { round: number; s: Scenario; c: Contender; tool: 'wrk' | 'autocannon' }[] = []
    for (let round = 1; round <= rounds; round++) {
      for (const s of scenarios) {
        // Interleaved: every contender once per scenario per round (A B C … A B C …), so drift hits all alike.
        for (const c of running) {
          if (wrk) plan.push({ round, s, c, tool: 'wrk' })
          if (!wrk || acScenarios.includes(s.id)) plan.push({ round, s, c, tool: 'autocannon' })
        }
      }
    }
    const t0 = Date.now()
    for (const [i, p] of plan.entries()) {
      progress(i, plan.length, t0, `round ${p.round}/${rounds} ${p.s.id} ${p.c.id} (${p.tool})`)
      measurements.push(await measure(p.c, p.s, p.tool, p.round, wrk, scripts))
      await sleep(200)
    }
    progress(plan.length, plan.length, t0, 'load rounds done')
    if (isTty) process.stderr.write('\n')
    for (const c of running.splice(0)) await c.stop()

    if (!args['no-convergence'] && (!args.only || args.only.split(',').includes('consul-lb'))) {
      note('convergence (about 30 s)')
      convergence = await measureConvergence(stack, note)
    }
  } finally {
    for (const c of running) await c.stop().catch((err: unknown) => note(`stopping ${c.id}: ${String(err)}`))
    await stack?.cleanup()
    rmSync(tmpDir, { recursive: true, force: true })
  }

  const contenders = specs
    .filter((s) => measurements.some((m) => m.contender === s.id))
    .map((s) => ({ id: s.id, label: s.label }))
  const summary = summarise(measurements, contenders)
  const report: BenchReport = {
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: machine(stack!.nginxBin, wrk, haproxyBinary(), loadBefore, runtimes),
    settings: { rounds, durationS, wrkThreads, autocannonScenarios: acScenarios },
    contenders,
    skipped,
    measurements,
    summary,
    convergence,
    targets: checkTargets(summary, convergence, cores),
  }
  mkdirSync(outDir, { recursive: true })
  writeFileSync(join(outDir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`)
  const md = markdown(report)
  writeFileSync(join(outDir, 'latest.md'), md)
  writeFileSync(join(outDir, 'latest.svg'), svg(report))
  process.stdout.write(md)
  note(`results in ${outDir}/latest.{json,md,svg}`)
}

main().catch((err: unknown) => {
  note(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
  process.exitCode = 1
})
