import { type ChildProcess, execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { loadNginxConfig, type NginxConfig } from '../../src/config/nginx.js'
import type { DnsServer } from '../../src/config/serve.js'
import { type RenderOptions, wrapFullConfig } from '../../src/nginx/render.js'
import { freePort } from './ports.js'
import { spawnLogged, stopChild } from './process.js'

/**
 * Real nginx masters for tests: Debian's 1.22 (scripts/ensure-nginx.sh) and 1.30 from Debian testing
 * (scripts/ensure-nginx130.sh, cached under ~/.cache/consul-lb/nginx-1.30). Each runs in the foreground with its
 * own prefix folder (pid, temp files, config), listens on a free loopback port, is signalled by PID only, and is
 * stopped and its folder removed in teardown even when the test fails.
 */

const ROOT = resolve(import.meta.dirname, '..', '..')
const binaries = new Map<string, string>()

export type NginxRelease = '1.22' | '1.30'

export function nginxBinary(release: NginxRelease): string {
  const cached = binaries.get(release)
  if (cached) return cached
  const script = release === '1.22' ? 'ensure-nginx.sh' : 'ensure-nginx130.sh'
  const bin = execFileSync('bash', [join(ROOT, 'scripts', script)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 10 * 60_000,
  }).trim()
  binaries.set(release, bin)
  return bin
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export class NginxProcess {
  readonly dir: string
  readonly port: number
  readonly bin: string
  /** The file the main config includes: tests (or the catalog watcher) write the emitted http-context text here. */
  readonly sitePath: string
  private proc: ChildProcess | null = null
  private output: () => string = () => ''

  constructor(bin: string, dir: string, port: number) {
    this.bin = bin
    this.dir = dir
    this.port = port
    this.sitePath = join(dir, 'site.conf')
  }

  get pid(): number {
    if (!this.proc?.pid) throw new Error('nginx is not running')
    return this.proc.pid
  }

  get log(): string {
    return this.output()
  }
  get isRunning(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null
  }

  async start(): Promise<void> {
    // As root nginx would hand its workers to `nobody`, who cannot read a private temp folder.
    const user = process.getuid?.() === 0 ? { user: 'root' } : {}
    writeFileSync(
      join(this.dir, 'nginx.conf'),
      wrapFullConfig(`include ${this.sitePath};\n`, {
        prefixDir: this.dir,
        accessLog: false,
        workerProcesses: 1,
        ...user,
      }),
    )
    const { proc, output } = spawnLogged(this.bin, [
      '-p',
      `${this.dir}/`,
      '-c',
      join(this.dir, 'nginx.conf'),
      '-g',
      'daemon off; error_log stderr notice;',
    ])
    this.proc = proc
    this.output = output
    const deadline = Date.now() + 15_000
    while (Date.now() < deadline) {
      if (!this.isRunning) throw new Error(`nginx exited (${proc.exitCode ?? proc.signalCode}):\n${this.output()}`)
      if (await canConnect(this.port)) return
      await sleep(50)
    }
    await this.stop()
    throw new Error(`nginx did not listen on ${this.port} within 15 s:\n${this.output()}`)
  }

  /** SIGHUP by PID: the master re-reads the config and replaces its workers. */
  reload(): void {
    process.kill(this.pid, 'SIGHUP')
  }

  async stop(): Promise<void> {
    await stopChild(this.proc)
    this.proc = null
  }

  /** One GET through nginx with the given Host (fetch() would drop it); resolves status and body (the backend's id). */
  get(path = '/', host = 'localhost'): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        { host: '127.0.0.1', port: this.port, path, headers: { host }, agent: false, timeout: 10_000 },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }))
          res.on('error', reject)
        },
      )
      req.on('timeout', () => req.destroy(new Error(`GET ${path} through nginx timed out`)))
      req.on('error', reject)
      req.end()
    })
  }
}

/**
 * Starts an nginx master whose main config includes `sitePath`; `site` is written there first (typically the
 * emitter's output with `listen 127.0.0.1:<port>`; `render(port)` gets the chosen port).
 */
export async function startNginx(
  t: Teardown,
  release: NginxRelease,
  render: (port: number, dir: string) => string,
): Promise<NginxProcess> {
  const bin = nginxBinary(release)
  const dir = mkdtempSync(join(tmpdir(), 'consul-lb-nginx-'))
  let lastErr: unknown
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    const nginx = new NginxProcess(bin, dir, port)
    writeFileSync(nginx.sitePath, render(port, dir))
    try {
      await nginx.start()
      t.teardown(async () => {
        await nginx.stop()
        rmSync(dir, { recursive: true, force: true })
      })
      return nginx
    } catch (err) {
      lastErr = err // most likely the port was taken between freePort() and nginx's bind
      await nginx.stop()
    }
  }
  rmSync(dir, { recursive: true, force: true })
  throw lastErr
}

/**
 * A port free on every given loopback address at once (resolver-mode backends share one port: A records carry none).
 */
export async function freePortOn(hosts: readonly string[]): Promise<number> {
  for (let attempt = 0; attempt < 30; attempt++) {
    const port = await freePort(hosts[0])
    let ok = true
    for (const h of hosts) {
      if (!(await canBind(h, port))) {
        ok = false
        break
      }
    }
    if (ok) return port
  }
  throw new Error(`no port free on all of ${hosts.join(', ')}`)
}

function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer()
    srv.once('error', () => resolve(false))
    srv.listen(port, host, () => srv.close(() => resolve(true)))
  })
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** Sends up to `max` GETs (sequentially) and returns the backend ids that answered, by count. */
export async function spread(
  nginx: NginxProcess,
  max: number,
  path = '/',
  host = 'localhost',
): Promise<Map<string, number>> {
  const seen = new Map<string, number>()
  for (let i = 0; i < max; i++) {
    const r = await nginx.get(path, host)
    const id = r.status === 200 ? r.body.split(' ')[0]! : `status-${r.status}`
    seen.set(id, (seen.get(id) ?? 0) + 1)
  }
  return seen
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/** Render options with the defaults of `consul-lb nginx`, overridden per test. */
export function renderOptions(over: Partial<RenderOptions> = {}): RenderOptions {
  return {
    mode: 'resolver',
    routes: [],
    dns: [{ host: '127.0.0.1', port: 8600, label: '127.0.0.1:8600' }],
    domain: 'consul',
    listen: '8080',
    resolverValidS: 5,
    resolverTimeoutS: 3,
    keepalive: 16,
    connectTimeoutS: 2,
    readTimeoutS: 60,
    catalogPort: null,
    full: false,
    clientBodyBufferSize: '64k',
    defaultServer: false,
    nginxVersion: null,
    ...over,
  }
}

/**
 * `consul-lb nginx --mode catalog --check` against a test agent, for nginx 1.30 (SRV ports: upstream style),
 * listening on `listen`; nginx's answers cached 1 s so a test sees Consul's changes quickly.
 */
export function catalogConfig(consul: { dnsAddr: string; httpAddr: string }, listen: string): NginxConfig {
  return loadNginxConfig({
    flags: {
      mode: 'catalog',
      dns: [consul.dnsAddr],
      consul: consul.httpAddr,
      listen,
      nginxBin: nginxBinary('1.30'),
      check: true,
      resolverValidS: 1,
    },
  })
}

/** The DnsServer for a test Consul agent's `dnsAddr` ("127.0.0.1:PORT"). */
export function dnsOf(dnsAddr: string): DnsServer {
  const [host, port] = dnsAddr.split(':')
  return { host: host!, port: Number(port), label: dnsAddr }
}

/** Opens a WebSocket through nginx, sends `hello` and resolves the first message back (the backend's `<id>:hello`). */
export async function wsEcho(t: Teardown, port: number, path: string): Promise<string> {
  const { default: WebSocket } = await import('ws')
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`)
  t.teardown(() => ws.terminate())
  return await new Promise<string>((resolve, reject) => {
    ws.once('open', () => ws.send('hello'))
    ws.once('message', (d) => {
      resolve(String(d))
      ws.close()
    })
    ws.once('error', reject)
  })
}
