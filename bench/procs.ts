import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'

/**
 * Processes the bench starts, and what it reads about them from /proc. Every child is tracked here so that a
 * failure or Ctrl-C still stops them (by PID, never by name), and RSS / CPU are summed over a contender's process
 * tree (nginx master + workers, the consul-lb cluster primary + workers).
 */

const children = new Set<ChildProcess>()

export interface Spawned {
  proc: ChildProcess
  output: () => string
}

/** Spawns a child whose last `keepChars` of output are kept for error messages; it is killed if the bench exits. */
export function spawnTracked(
  bin: string,
  args: string[],
  opts: { keepChars?: number; env?: NodeJS.ProcessEnv } = {},
): Spawned {
  const keepChars = opts.keepChars ?? 20_000
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) })
  children.add(proc)
  proc.once('exit', () => children.delete(proc))
  let output = ''
  const keep = (b: Buffer) => {
    output = (output + b.toString()).slice(-keepChars)
  }
  proc.stdout!.on('data', keep)
  proc.stderr!.on('data', keep)
  return { proc, output: () => output }
}

/**
 * `consul-lb ARGS` as the build whose dist/cli.js is `cli` ships: through the package's launcher (bin/consul-lb,
 * which starts Node with the V8 options the product runs with) when the build has one, else `node cli` (builds from
 * before the launcher). Either way on this bench's Node, or on `runtimeLauncher`'s (`--node 24`), which puts its own
 * first on PATH. `nodeOptions` (e.g. --cpu-prof, which NODE_OPTIONS refuses) go on Node's command line after the
 * launcher's own (its `defaults=` line, or CONSUL_LB_NODE_OPTIONS when set). The launcher execs, so the PID spawned
 * is the proxy's own.
 */
export function spawnConsulLb(
  cli: string,
  args: string[],
  opts: { runtimeLauncher?: string | undefined; nodeOptions?: string[] } = {},
): Spawned {
  const launcher = join(dirname(dirname(cli)), 'bin', 'consul-lb')
  const extra = opts.nodeOptions ?? []
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH}` }
  let command: string[]
  if (existsSync(launcher)) {
    command = [launcher, ...args]
    if (extra.length > 0) env.CONSUL_LB_NODE_OPTIONS = [launcherOptions(launcher), ...extra].join(' ').trim()
  } else command = ['node', ...extra, cli, ...args]
  const [bin, ...rest] = opts.runtimeLauncher ? [opts.runtimeLauncher, ...command] : command
  return spawnTracked(bin!, rest, { env })
}

/** The V8 options a launcher starts Node with: CONSUL_LB_NODE_OPTIONS when set, else its `defaults='…'` line. */
function launcherOptions(launcher: string): string {
  if (process.env.CONSUL_LB_NODE_OPTIONS !== undefined) return process.env.CONSUL_LB_NODE_OPTIONS
  const m = /^defaults='([^']*)'$/m.exec(readFileSync(launcher, 'utf8'))
  if (m === null) throw new Error(`${launcher}: no defaults='…' line to add node options to`)
  return m[1]!
}

/** SIGTERM by PID, SIGKILL after `graceMs`; resolves once it has exited (the tests' helper). */
export { stopChild as stopTracked } from '../test/helpers/process.js'

/** Last resort on exit (synchronous): SIGKILL what is still running, each by its own PID. */
export function killAllTrackedSync(): void {
  for (const p of children) {
    if (p.exitCode === null && p.signalCode === null && p.pid !== undefined) {
      try {
        process.kill(p.pid, 'SIGKILL')
      } catch {
        /* already gone between the check and the kill */
      }
    }
  }
}

/** The PIDs of `root` and all its descendants, from the ppid field of /proc/<pid>/stat. */
export function processTree(root: number): number[] {
  const parentOf = new Map<number, number>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const stat = readStat(Number(name))
    if (stat !== null) parentOf.set(Number(name), stat.ppid)
  }
  const out = [root]
  for (let i = 0; i < out.length; i++) {
    for (const [pid, ppid] of parentOf) if (ppid === out[i] && !out.includes(pid)) out.push(pid)
  }
  return out.filter((p) => parentOf.has(p))
}

interface Stat {
  ppid: number
  ticks: number
}

/** /proc/<pid>/stat: the command name may hold spaces and parentheses, so fields are counted after the last ')'. */
function readStat(pid: number): Stat | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return null
  }
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ')
  // After the name: state(0) ppid(1) … utime(11) stime(12)
  return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) }
}

function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : 0
  } catch {
    return 0
  }
}

/** CLK_TCK on Linux x86-64 (`getconf CLK_TCK`); utime and stime are counted in these. */
const TICKS_PER_S = 100

export interface TreeSample {
  pids: number[]
  cpuS: number
  rssKb: number
  maxRssKb: number
  hwmKb: number
}

/** CPU seconds used so far (own utime + stime of every live process of the tree) and resident memory now. */
export function sampleTree(root: number): TreeSample {
  const pids = processTree(root)
  let ticks = 0
  let rssKb = 0
  let maxRssKb = 0
  let hwmKb = 0
  for (const p of pids) {
    ticks += readStat(p)?.ticks ?? 0
    const rss = statusKb(p, 'VmRSS')
    rssKb += rss
    maxRssKb = Math.max(maxRssKb, rss)
    hwmKb = Math.max(hwmKb, statusKb(p, 'VmHWM'))
  }
  return { pids, cpuS: ticks / TICKS_PER_S, rssKb, maxRssKb, hwmKb }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
