import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import autocannon from 'autocannon'

/**
 * Load generators. wrk (C, one epoll loop per thread) costs far less CPU per request than autocannon, which matters
 * when generator and proxy share two cores, and it measures latency in microseconds; autocannon (programmatic API,
 * in this process) is the cross-check and reports latency in whole milliseconds. Every run is bounded in time.
 */

export interface Scenario {
  id: string
  label: string
  connections: number
  path: string
  method: 'GET' | 'POST'
  bodyBytes: number
  /** Latency scenario: p50 and added latency matter more than req/s. */
  isLatency: boolean
}

export const POST_BYTES = 16 * 1024

export const SCENARIOS: Scenario[] = [
  {
    id: 'c1-small',
    label: 'c=1, 100 B (latency)',
    connections: 1,
    path: '/',
    method: 'GET',
    bodyBytes: 0,
    isLatency: true,
  },
  { id: 'c50-small', label: 'c=50, 100 B', connections: 50, path: '/', method: 'GET', bodyBytes: 0, isLatency: false },
  {
    id: 'c256-small',
    label: 'c=256, 100 B',
    connections: 256,
    path: '/',
    method: 'GET',
    bodyBytes: 0,
    isLatency: false,
  },
  {
    id: 'c50-64k',
    label: 'c=50, 64 KiB',
    connections: 50,
    path: '/64k',
    method: 'GET',
    bodyBytes: 0,
    isLatency: false,
  },
  {
    id: 'c50-post16k',
    label: 'c=50, POST 16 KiB',
    connections: 50,
    path: '/',
    method: 'POST',
    bodyBytes: POST_BYTES,
    isLatency: false,
  },
]

export type Tool = 'wrk' | 'autocannon'

export interface LoadResult {
  tool: Tool
  requests: number
  durationS: number
  rps: number
  p50Us: number
  p99Us: number
  /** Socket errors, timeouts and non-2xx answers. */
  errors: number
}

/** wrk's path, installing it with apt-get when missing and we are root; null when it cannot be had. */
export function wrkBinary(): string | null {
  const find = (): string | null => ['/usr/bin/wrk', '/usr/local/bin/wrk'].find((p) => existsSync(p)) ?? null
  const found = find()
  if (found || process.getuid?.() !== 0) return found
  try {
    process.stderr.write('bench: installing wrk with apt-get\n')
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'wrk'], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      timeout: 10 * 60_000,
    })
  } catch {
    /* reported by the caller: autocannon only */
  }
  return find()
}

/** wrk's Lua hook: the method and body of the scenario, and a one-line JSON summary that the bench parses. */
function wrkScript(s: Scenario): string {
  const lines: string[] = []
  if (s.method === 'POST') {
    lines.push(
      'wrk.method = "POST"',
      `wrk.body = string.rep("a", ${s.bodyBytes})`,
      'wrk.headers["Content-Type"] = "application/octet-stream"',
    )
  }
  lines.push(
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format("WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}\\n",',
    '    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))',
    'end',
  )
  return `${lines.join('\n')}\n`
}

export function writeWrkScripts(dir: string): Map<string, string> {
  mkdirSync(dir, { recursive: true })
  const out = new Map<string, string>()
  for (const s of SCENARIOS) {
    const file = join(dir, `${s.id}.lua`)
    writeFileSync(file, wrkScript(s))
    out.set(s.id, file)
  }
  return out
}

export function runWrk(
  bin: string,
  script: string,
  url: string,
  s: Scenario,
  durationS: number,
  threads: number,
): Promise<LoadResult> {
  const t = Math.max(1, Math.min(threads, s.connections))
  const args = [
    '-t',
    String(t),
    '-c',
    String(s.connections),
    '-d',
    `${durationS}s`,
    '--timeout',
    '5s',
    '-s',
    script,
    `${url}${s.path}`,
  ]
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.on('data', (b: Buffer) => {
      out += b.toString()
    })
    p.stderr.on('data', (b: Buffer) => {
      out += b.toString()
    })
    // wrk stops itself after -d; this only catches a wedged run.
    const killer = setTimeout(() => p.kill('SIGKILL'), (durationS + 20) * 1000)
    p.once('error', (err) => {
      clearTimeout(killer)
      reject(err)
    })
    p.once('exit', (code) => {
      clearTimeout(killer)
      const line = out.split('\n').find((l) => l.startsWith('WRKJSON '))
      if (code !== 0 || !line) {
        reject(new Error(`wrk ${args.join(' ')} failed (${code}):\n${out}`))
        return
      }
      const j = JSON.parse(line.slice(8)) as {
        requests: number
        duration_us: number
        errors: number
        p50_us: number
        p99_us: number
      }
      const durationS = j.duration_us / 1e6
      resolve({
        tool: 'wrk',
        requests: j.requests,
        durationS,
        rps: j.requests / durationS,
        p50Us: j.p50_us,
        p99Us: j.p99_us,
        errors: j.errors,
      })
    })
  })
}

export async function runAutocannon(url: string, s: Scenario, durationS: number): Promise<LoadResult> {
  const r = await autocannon({
    url: `${url}${s.path}`,
    connections: s.connections,
    duration: durationS,
    timeout: 5,
    method: s.method,
    ...(s.method === 'POST'
      ? { body: Buffer.alloc(s.bodyBytes, 97), headers: { 'content-type': 'application/octet-stream' } }
      : {}),
  })
  const total = r.requests.total
  return {
    tool: 'autocannon',
    requests: total,
    durationS: r.duration,
    rps: total / r.duration,
    p50Us: r.latency.p50 * 1000,
    p99Us: r.latency.p99 * 1000,
    errors: r.errors + r.timeouts + r.non2xx,
  }
}
