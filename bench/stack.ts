import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { wrapFullConfig } from '../src/nginx/render.js'
import { type ConsulAgent, startConsul } from '../test/helpers/consul.js'
import { freePortOn } from '../test/helpers/nginx.js'
import { freePort } from '../test/helpers/ports.js'
import { type Spawned, sleep, spawnTracked, stopTracked } from './procs.js'

/**
 * What every contender shares: one Consul dev agent and three nginx backends that answer from memory (`return 200`),
 * so the backend is never what is measured. Backend i listens on 127.0.0.(2+i) twice: on its own port (registered
 * in Consul, read from SRV by consul-lb and HAProxy) and on one port common to all three (nginx's resolver mode
 * reads A records, which carry no port, so its route names that fixed port).
 */

export const ROOT = resolve(import.meta.dirname, '..')
export const SERVICE = 'web'

/**
 * `consul-lb serve` as the bench runs it: on `port`, no admin listener, every path routed to SERVICE through Consul
 * DNS at `dnsAddr` (TTL floor 1 s, the default), warnings only.
 */
export function serveArgs(port: number, dnsAddr: string): string[] {
  return [
    'serve',
    '--listen',
    `127.0.0.1:${port}`,
    '--admin',
    'off',
    '--dns',
    dnsAddr,
    '--route',
    `/=${SERVICE}`,
    '--log-level',
    'warn',
  ]
}
/** ≈100 B response body (the "small" scenarios). */
export const SMALL_BODY =
  'consul-lb bench: a small response body of about one hundred bytes, served from nginx memory.\n'.padEnd(100, '.')
export const BIG_BYTES = 64 * 1024

export interface Backend {
  id: string
  host: string
  port: number
  fixedPort: number
  daemon: Spawned
  dir: string
}

export interface Stack {
  consul: ConsulAgent
  backends: Backend[]
  /** The port every backend also listens on (nginx resolver mode). */
  fixedPort: number
  nginxBin: string
  cleanup(): Promise<void>
}

/** Debian's nginx (installed by scripts/ensure-nginx.sh when missing). */
export function nginxBinary(): string {
  return execFileSync('bash', [join(ROOT, 'scripts', 'ensure-nginx.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 10 * 60_000,
  }).trim()
}

/**
 * Settings every nginx in the bench shares. Client keep-alive: 1.22 closes a connection after 1000 requests by
 * default. Body buffer: the default (8 KiB on x86-64) sends a 16 KiB POST body to a temporary file first, which cut
 * nginx's POST throughput to a sixth in a trial run; a user proxying uploads raises it, so the reference does too.
 */
export const NGINX_KEEPALIVE = [
  'keepalive_requests 1000000;',
  'keepalive_timeout 75s;',
  'client_body_buffer_size 64k;',
  'client_max_body_size 1m;',
]

/**
 * Starts an nginx master in the foreground with its own prefix folder; `httpBody` goes inside `http {}`.
 * Resolves once `port` accepts connections.
 */
export async function startNginxDaemon(
  bin: string,
  name: string,
  httpBody: string,
  port: number,
  host: string,
  workers = 1,
): Promise<{ daemon: Spawned; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), `consul-lb-bench-${name}-`))
  const user = process.getuid?.() === 0 ? { user: 'root' } : {}
  writeFileSync(
    join(dir, 'nginx.conf'),
    wrapFullConfig(httpBody.replaceAll('@DIR@', dir), {
      prefixDir: dir,
      accessLog: false,
      workerProcesses: workers,
      ...user,
    }),
  )
  writeFileSync(join(dir, '64k.bin'), Buffer.alloc(BIG_BYTES, 97))
  const daemon = spawnTracked(bin, ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'])
  try {
    await waitListening(host, port, daemon, name)
  } catch (err) {
    await stopTracked(daemon.proc)
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  return { daemon, dir }
}

export async function waitListening(
  host: string,
  port: number,
  d: Spawned,
  name: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (d.proc.exitCode !== null || d.proc.signalCode !== null)
      throw new Error(`${name} exited (${d.proc.exitCode ?? d.proc.signalCode}):\n${d.output()}`)
    if (await canConnect(host, port)) return
    await sleep(50)
  }
  throw new Error(`${name} did not listen on ${host}:${port} within ${timeoutMs} ms:\n${d.output()}`)
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = connect(port, host)
    s.once('connect', () => {
      s.destroy()
      r(true)
    })
    s.once('error', () => r(false))
  })
}

function backendConfig(host: string, port: number, fixedPort: number): string {
  return `${[
    ...NGINX_KEEPALIVE,
    'server {',
    `    listen ${host}:${port};`,
    `    listen ${host}:${fixedPort};`,
    '    default_type text/plain;',
    `    location = /64k { alias @DIR@/64k.bin; default_type application/octet-stream; }`,
    // `return` discards a request body (ngx_http_send_response): a POST costs the backend only the read.
    `    location / { return 200 '${SMALL_BODY}'; }`,
    '}',
  ].join('\n')}\n`
}

/** Consul, three nginx backends, registered as SERVICE with HTTP checks; stop with cleanup() (also on failure). */
export async function startStack(): Promise<Stack> {
  const nginxBin = nginxBinary()
  const backends: Backend[] = []
  let consul: ConsulAgent | null = null
  const cleanup = async (): Promise<void> => {
    for (const b of backends) {
      await stopTracked(b.daemon.proc)
      rmSync(b.dir, { recursive: true, force: true })
    }
    backends.length = 0
    await consul?.stop()
    if (consul) rmSync(consul.dir, { recursive: true, force: true })
    consul = null
  }
  try {
    consul = await startConsul(undefined)
    const hosts = ['127.0.0.2', '127.0.0.3', '127.0.0.4']
    const fixedPort = await freePortOn(hosts)
    for (const [i, host] of hosts.entries()) {
      const port = await freePort(host)
      const { daemon, dir } = await startNginxDaemon(
        nginxBin,
        `backend${i}`,
        backendConfig(host, port, fixedPort),
        port,
        host,
      )
      backends.push({ id: `${SERVICE}-${i}`, host, port, fixedPort, daemon, dir })
    }
    for (const b of backends) {
      await consul.register({
        ID: b.id,
        Name: SERVICE,
        Address: b.host,
        Port: b.port,
        Check: { HTTP: `http://${b.host}:${b.port}/health`, Interval: '2s', Timeout: '1s' },
      })
    }
    await consul.waitPassing(SERVICE, backends.length, 30_000)
    const c = consul
    return { consul: c, backends, fixedPort, nginxBin, cleanup }
  } catch (err) {
    await cleanup()
    throw err
  }
}
