import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import ts from 'typescript'
import { renderNginxHttp } from '../src/nginx/render.js'
import { parseRoute } from '../src/routes/route.js'
import { dnsOf, renderOptions } from '../test/helpers/nginx.js'
import { freePort } from '../test/helpers/ports.js'
import { type Spawned, sleep, spawnConsulLb, spawnTracked, stopTracked } from './procs.js'
import { NGINX_KEEPALIVE, ROOT, SERVICE, type Stack, serveArgs, startNginxDaemon, waitListening } from './stack.js'

/**
 * The contenders, each a process (tree) listening on 127.0.0.1 in front of the same three backends. Configs are
 * written by the bench so a reader sees exactly what was measured.
 */

export interface Contender {
  id: string
  label: string
  /** Base URL (no trailing slash). */
  url: string
  /** Root PID of the process tree measured for RSS / CPU; null for direct. */
  pid: number | null
  /** Which reference this one is not: direct has no proxy cost to measure. */
  isProxy: boolean
  stop(): Promise<void>
}

export interface ContenderSpec {
  id: string
  label: string
  start(stack: Stack): Promise<Contender>
}

/** A contender listening on a free loopback port: `start` receives the stack and that port. */
function onFreePort(id: string, label: string, start: (s: Stack, port: number) => Promise<Contender>): ContenderSpec {
  return { id, label, start: async (s) => start(s, await freePort()) }
}

/** The proxy_pass block every nginx contender shares (what `consul-lb nginx` writes, minus the address). */
export const PROXY_HEADERS = [
  'proxy_http_version 1.1;',
  'proxy_set_header Host $host;',
  'proxy_set_header X-Real-IP $remote_addr;',
  'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
  'proxy_set_header X-Forwarded-Proto $scheme;',
  'proxy_set_header Connection "";',
  'proxy_next_upstream error timeout;',
]

function direct(): ContenderSpec {
  return {
    id: 'direct',
    label: 'direct (one backend)',
    start: async (s) => {
      const b = s.backends[0]!
      return {
        id: 'direct',
        label: 'direct (one backend)',
        url: `http://${b.host}:${b.port}`,
        pid: null,
        isProxy: false,
        stop: async () => {},
      }
    },
  }
}

/** Another Node.js than the bench's own: `launcher` runs a command with that `node` first on PATH. */
export interface Runtime {
  id: string
  label: string
  launcher: string
}

/**
 * consul-lb on a data plane (`classic`: the ids `consul-lb`, `consul-lb-w2`; `passthrough`: `consul-lb-passthrough`,
 * `consul-lb-passthrough-w2`), optionally another build (`variant`) or another Node.js (`runtime`).
 */
function consulLb(
  workers: number,
  variant?: { id: string; cli: string },
  runtime?: Runtime,
  dataPlane: 'classic' | 'passthrough' = 'classic',
): ContenderSpec {
  const suffix = runtime ? ` on ${runtime.label}` : ''
  const plane = dataPlane === 'passthrough' ? '-passthrough' : ''
  const planeLabel = dataPlane === 'passthrough' ? ' --data-plane passthrough' : ''
  const id = variant
    ? `consul-lb-${variant.id}`
    : `consul-lb${plane}${workers === 1 ? '' : `-w${workers}`}${runtime ? `-${runtime.id}` : ''}`
  const label = variant
    ? `consul-lb ${variant.id} (1 worker, its build's default data plane)`
    : workers === 1
      ? `consul-lb${planeLabel} (1 worker)${suffix}`
      : `consul-lb${planeLabel} (--workers ${workers})${suffix}`
  return onFreePort(id, label, async (s, port) => {
    const cli = variant?.cli ?? join(ROOT, 'dist', 'cli.js')
    if (!existsSync(cli)) throw new Error('dist/cli.js missing: run `npm run build` (npm run bench does)')
    // Started as the build ships it (its launcher, with the V8 options the product runs with: spawnConsulLb).
    const d = spawnConsulLb(
      cli,
      [
        ...serveArgs(port, s.consul.dnsAddr),
        '--workers',
        String(workers),
        // Each plane named (pass-through is the default since 27f0297); a --variant runs its build's default, so that
        // builds older than --data-plane (classic only) still start.
        ...(variant ? [] : ['--data-plane', dataPlane]),
      ],
      { runtimeLauncher: runtime?.launcher },
    )
    const url = `http://127.0.0.1:${port}`
    await waitServing(url, d, label)
    return { id, label, url, pid: d.proc.pid!, isProxy: true, stop: () => stopTracked(d.proc, 12_000) }
  })
}

/**
 * bench/<script>.ts as plain JavaScript, for `node` without a loader: under `--import tsx` a reference runs with tsx's
 * loader thread beside it, which adds about 17 MB of RSS (measured on the TCP relay: 73 against 56 MB at c=50) and
 * nothing else. Types are only stripped (TypeScript's transpileModule, one file, no bundling); written under
 * node_modules/.cache so that its imports resolve to the project's node_modules.
 */
function plainScript(script: string): string {
  const out = join(ROOT, 'node_modules', '.cache', 'consul-lb-bench', script.replace(/\.ts$/, '.mjs'))
  const { outputText } = ts.transpileModule(readFileSync(join(ROOT, 'bench', script), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false },
    fileName: script,
  })
  mkdirSync(join(out, '..'), { recursive: true })
  writeFileSync(out, outputText)
  return out
}

/** A reference proxy of our own in bench/ over the three backends (static list, no discovery), run as plain JS. */
function staticNodeProxy(id: string, label: string, script: string): ContenderSpec {
  return onFreePort(id, label, async (s, port) => {
    const d = spawnTracked(process.execPath, [
      plainScript(script),
      '--listen',
      `127.0.0.1:${port}`,
      '--upstreams',
      s.backends.map((b) => `${b.host}:${b.port}`).join(','),
    ])
    const url = `http://127.0.0.1:${port}`
    await waitServing(url, d, label)
    return { id, label, url, pid: d.proc.pid!, isProxy: true, stop: () => stopTracked(d.proc) }
  })
}

/** bench/minimal-proxy.ts: the plain node:http + undici dispatch pattern, the floor of what consul-lb builds on. */
function nodeMinimal(): ContenderSpec {
  return staticNodeProxy('node-minimal', 'minimal node:http + undici proxy (static)', 'minimal-proxy.ts')
}

/** bench/tcp-relay.ts: net.Socket relaying bytes without parsing them, the ceiling of a Node data plane. */
function tcpRelay(): ContenderSpec {
  return staticNodeProxy('node-tcp-relay', 'Node TCP relay, no HTTP parsing (reference)', 'tcp-relay.ts')
}

function nginxUpstream(workers: number): ContenderSpec {
  const id = workers === 1 ? 'nginx-upstream' : `nginx-upstream-w${workers}`
  const label = workers === 1 ? 'nginx upstream+keepalive' : `nginx upstream+keepalive (${workers} workers)`
  return onFreePort(id, label, async (s, port) => {
    // What consul-template renders: the instances written into a static upstream, connections kept alive.
    const body = `${[
      ...NGINX_KEEPALIVE,
      `upstream ${SERVICE}_static {`,
      ...s.backends.map((b) => `    server ${b.host}:${b.port};`),
      '    keepalive 64;',
      '}',
      'server {',
      `    listen 127.0.0.1:${port};`,
      '    server_name _;',
      '    location / {',
      `        proxy_pass http://${SERVICE}_static;`,
      ...PROXY_HEADERS.map((l) => `        ${l}`),
      '    }',
      '}',
    ].join('\n')}\n`
    return await nginxContender(s, id, label, body, port, workers)
  })
}

function nginxResolver(): ContenderSpec {
  const id = 'nginx-resolver'
  const label = 'nginx resolver mode (our emitter)'
  return onFreePort(id, label, async (s, port) => {
    // What `consul-lb nginx` writes with its defaults (the tests' renderOptions()).
    const site = renderNginxHttp(
      renderOptions({
        routes: [parseRoute(`/=${SERVICE}:${s.fixedPort}`)],
        dns: [dnsOf(s.consul.dnsAddr)],
        listen: `127.0.0.1:${port}`,
      }),
    )
    const body = [...NGINX_KEEPALIVE, site].join('\n')
    return await nginxContender(s, id, label, body, port, 1)
  })
}

async function nginxContender(
  s: Stack,
  id: string,
  label: string,
  body: string,
  port: number,
  workers: number,
): Promise<Contender> {
  const { daemon, dir } = await startNginxDaemon(s.nginxBin, id, body, port, '127.0.0.1', workers)
  const url = `http://127.0.0.1:${port}`
  const stop = async (): Promise<void> => {
    await stopTracked(daemon.proc)
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    await waitServing(url, daemon, label)
  } catch (err) {
    await stop()
    throw err
  }
  return { id, label, url, pid: daemon.proc.pid!, isProxy: true, stop }
}

/** HAProxy from Debian; installed with apt-get when missing and we are root, else skipped with a message. */
export function haproxyBinary(): string | null {
  const find = (): string | null => {
    for (const p of ['/usr/sbin/haproxy', '/usr/bin/haproxy']) if (existsSync(p)) return p
    return null
  }
  const found = find()
  if (found || process.getuid?.() !== 0) return found
  try {
    process.stderr.write('bench: installing haproxy with apt-get\n')
    execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'haproxy'], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      timeout: 10 * 60_000,
    })
  } catch {
    /* reported as a skipped contender below */
  }
  return find()
}

function haproxy(bin: string, threads: number): ContenderSpec {
  const id = 'haproxy'
  const label = `HAProxy server-template + DNS (${threads} thread${threads === 1 ? '' : 's'})`
  return onFreePort(id, label, async (s, port) => {
    const dir = mkdtempSync(join(tmpdir(), 'consul-lb-bench-haproxy-'))
    const cfg = `${[
      'global',
      `    nbthread ${threads}`,
      '    maxconn 4096',
      'defaults',
      '    mode http',
      '    option http-keep-alive',
      '    option forwardfor',
      '    http-reuse always',
      '    timeout connect 2s',
      '    timeout client 60s',
      '    timeout server 60s',
      '    timeout http-keep-alive 75s',
      // SRV answers for three instances with their A records exceed 512 B.
      'resolvers consul',
      `    nameserver consul ${s.consul.dnsAddr}`,
      '    accepted_payload_size 8192',
      '    hold valid 1s',
      '    timeout resolve 1s',
      '    timeout retry 1s',
      'frontend fe',
      `    bind 127.0.0.1:${port}`,
      '    default_backend be',
      'backend be',
      '    balance roundrobin',
      `    server-template ${SERVICE} 3 _${SERVICE}._tcp.service.consul resolvers consul resolve-prefer ipv4 init-addr none`,
    ].join('\n')}\n`
    writeFileSync(join(dir, 'haproxy.cfg'), cfg)
    const d = spawnTracked(bin, ['-db', '-f', join(dir, 'haproxy.cfg')])
    const stop = async (): Promise<void> => {
      await stopTracked(d.proc)
      rmSync(dir, { recursive: true, force: true })
    }
    const url = `http://127.0.0.1:${port}`
    try {
      await waitListening('127.0.0.1', port, d, label)
      await waitServing(url, d, label)
    } catch (err) {
      await stop()
      throw err
    }
    return { id, label, url, pid: d.proc.pid!, isProxy: true, stop }
  })
}

/**
 * Waits until `url` answers 200 ten times in a row (DNS-fed contenders start with no address), within 30 s.
 * Requests go out one at a time with a per-request timeout.
 */
export async function waitServing(url: string, d: Spawned, name: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let okInARow = 0
  let last = ''
  while (Date.now() < deadline && okInARow < 10) {
    if (d.proc.exitCode !== null || d.proc.signalCode !== null)
      throw new Error(`${name} exited (${d.proc.exitCode ?? d.proc.signalCode}):\n${d.output()}`)
    try {
      const r = await fetch(`${url}/`, { signal: AbortSignal.timeout(2000) })
      await r.arrayBuffer()
      okInARow = r.status === 200 ? okInARow + 1 : 0
      last = `status ${r.status}`
    } catch (err) {
      okInARow = 0
      last = String(err)
    }
    if (okInARow === 0) await sleep(100)
  }
  if (okInARow < 10)
    throw new Error(`${name} did not serve ${url} within ${timeoutMs} ms (last: ${last}):\n${d.output()}`)
}

/**
 * All contenders in run order; HAProxy only where installed (`skipped` says why not); variants and other runtimes
 * after consul-lb's.
 */
export function contenderSpecs(
  cores: number,
  haproxyThreads: number,
  variants: { id: string; cli: string }[] = [],
  runtimes: Runtime[] = [],
): { specs: ContenderSpec[]; skipped: string[] } {
  // With one core the multi-worker contenders would duplicate the single-worker ones.
  const specs =
    cores > 1
      ? [
          direct(),
          consulLb(1, undefined, undefined, 'passthrough'),
          consulLb(cores, undefined, undefined, 'passthrough'),
          consulLb(1),
          consulLb(cores),
          nodeMinimal(),
          tcpRelay(),
          nginxUpstream(1),
          nginxUpstream(cores),
          nginxResolver(),
        ]
      : [
          direct(),
          consulLb(1, undefined, undefined, 'passthrough'),
          consulLb(1),
          nodeMinimal(),
          tcpRelay(),
          nginxUpstream(1),
          nginxResolver(),
        ]
  // Experiments: another build of the CLI (a patched copy of dist/) measured beside the real one.
  for (const v of variants) specs.push(consulLb(1, v))
  // The same build on another Node.js (--node 24): what the newer runtime gives.
  for (const r of runtimes) {
    specs.push(consulLb(1, undefined, r, 'passthrough'), consulLb(1, undefined, r))
    if (cores > 1) specs.push(consulLb(cores, undefined, r, 'passthrough'), consulLb(cores, undefined, r))
  }
  const skipped: string[] = []
  const bin = haproxyBinary()
  if (bin) specs.push(haproxy(bin, haproxyThreads))
  else skipped.push('haproxy: not installed (apt-get install haproxy as root to include it)')
  return { specs, skipped }
}
