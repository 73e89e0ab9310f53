import { type ChildProcess, execFile } from 'node:child_process'
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { sleep, type TlsMaterial } from './consul.js'
import { freePort } from './ports.js'
import { spawnLogged, stopChild } from './process.js'

/**
 * A private Docker engine for tests: Debian's dockerd with its own socket, data-root, exec-root and pidfile under a
 * short temp folder (unix socket paths are limited to 107 bytes), no iptables (containers publish on 127.0.0.1 through
 * docker-proxy), no default bridge (two test files may run engines at once): a private bridge network per engine.
 * Nothing is pulled: the test image is imported from Debian's static busybox.
 */

const run = promisify(execFile)
export const TEST_IMAGE = 'clb-busybox:test'
/** docker.io's own client, matching its engine's API (another `docker` earlier on PATH may be newer or a wrapper). */
const DOCKER_CLI = '/usr/bin/docker'

export interface RunOptions {
  name: string
  image?: string
  env?: Record<string, string>
  labels?: Record<string, string>
  /** Container ports published on 127.0.0.1 with an ephemeral host port ("80", "53/udp"). */
  publish?: string[]
  /** `host` for host networking, `container:<name>` to share another container's; default: the private bridge. */
  network?: 'host' | 'bridge' | `container:${string}`
  /** Command replacing the image's (httpd on port 80). */
  cmd?: string[]
  restart?: string
  healthCmd?: string
  extra?: string[]
}

export class DockerDaemon {
  readonly dir: string
  readonly socket: string
  readonly network: string
  private proc: ChildProcess | null = null
  private output: () => string = () => ''

  /** --live-restore: containers keep running while the engine restarts (no die/start events for them). */
  readonly liveRestore: boolean

  /** A second listener, tcp://127.0.0.1:<port> with --tlsverify (TLS material made by Consul's tls commands). */
  readonly tls: { port: number; material: TlsMaterial } | null

  constructor(dir: string, liveRestore = false, tls: { port: number; material: TlsMaterial } | null = null) {
    this.dir = dir
    this.liveRestore = liveRestore
    this.tls = tls
    this.socket = join(dir, 'd.sock')
    // Bridge names are limited to 15 characters.
    this.network = `clb${process.pid % 100000}${Math.floor(Math.random() * 100)}`
  }

  get url(): string {
    return `unix://${this.socket}`
  }

  /** DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for the TLS listener, as a docker CLI user sets them. */
  get tlsEnv(): { DOCKER_HOST: string; DOCKER_TLS_VERIFY: string; DOCKER_CERT_PATH: string } {
    if (!this.tls) throw new Error('this engine has no TLS listener')
    return {
      DOCKER_HOST: `tcp://127.0.0.1:${this.tls.port}`,
      DOCKER_TLS_VERIFY: '1',
      DOCKER_CERT_PATH: join(this.dir, 'client-certs'),
    }
  }
  get pid(): number | undefined {
    return this.proc?.pid
  }
  get isRunning(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null
  }
  get log(): string {
    return this.output()
  }

  async start(): Promise<void> {
    if (this.isRunning) return
    for (const d of ['data', 'exec']) mkdirSync(join(this.dir, d), { recursive: true })
    const { proc, output } = spawnLogged('/usr/sbin/dockerd', [
      '--host',
      this.url,
      '--data-root',
      join(this.dir, 'data'),
      '--exec-root',
      join(this.dir, 'exec'),
      '--pidfile',
      join(this.dir, 'd.pid'),
      '--iptables=false',
      '--ip6tables=false',
      '--bridge=none',
      '--shutdown-timeout=2',
      '--log-level=warn',
      ...(this.liveRestore ? ['--live-restore'] : []),
      ...(this.tls
        ? [
            '--host',
            `tcp://127.0.0.1:${this.tls.port}`,
            '--tlsverify',
            '--tlscacert',
            this.tls.material.caFile,
            '--tlscert',
            this.tls.material.serverCert,
            '--tlskey',
            this.tls.material.serverKey,
          ]
        : []),
    ])
    if (this.tls) {
      // The docker CLI's layout: DOCKER_CERT_PATH/{ca,cert,key}.pem.
      const certs = join(this.dir, 'client-certs')
      mkdirSync(certs, { recursive: true })
      copyFileSync(this.tls.material.caFile, join(certs, 'ca.pem'))
      copyFileSync(this.tls.material.clientCert, join(certs, 'cert.pem'))
      copyFileSync(this.tls.material.clientKey, join(certs, 'key.pem'))
    }
    this.proc = proc
    this.output = output
    const deadline = Date.now() + 30_000
    while (Date.now() < deadline) {
      if (!this.isRunning) throw new Error(`dockerd exited (${proc.exitCode ?? proc.signalCode}):\n${this.log}`)
      try {
        await this.docker(['version', '--format', '{{.Server.Version}}'], 2000)
        return
      } catch {
        /* not listening yet: poll until the deadline */
      }
      await sleep(100)
    }
    await this.stop()
    throw new Error(`dockerd did not become ready within 30 s:\n${this.log}`)
  }

  /** Stops the engine this helper started (by PID); its containers are stopped by it (no live-restore). */
  async stop(): Promise<void> {
    // dockerd stops its containers first (--shutdown-timeout=2): give it time before SIGKILL.
    await stopChild(this.proc, 20_000)
    this.proc = null
  }

  async docker(args: string[], timeoutMs = 30_000): Promise<string> {
    const { stdout } = await run(DOCKER_CLI, ['-H', this.url, ...args], {
      timeout: timeoutMs,
      env: { ...process.env, DOCKER_CONFIG: join(this.dir, 'cli') },
    })
    return stdout.trim()
  }

  /** Imports the busybox image (once per engine) under `tags`: `clb-busybox:test`, and e.g. `nginx`, `httpd`. */
  async importImage(tags: string[] = [TEST_IMAGE]): Promise<void> {
    const root = join(this.dir, 'img')
    mkdirSync(join(root, 'bin'), { recursive: true })
    mkdirSync(join(root, 'www'), { recursive: true })
    copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'))
    chmodSync(join(root, 'bin', 'busybox'), 0o755)
    for (const l of ['sh', 'httpd', 'sleep', 'wget', 'nc', 'hostname']) symlinkSync('busybox', join(root, 'bin', l))
    writeFileSync(join(root, 'www', 'index.html'), 'ok\n')
    const tar = join(this.dir, 'img.tar')
    await run('tar', ['-C', root, '-cf', tar, '.'])
    // The CGI-less httpd answers /index.html; the hostname file lets a test tell the three `web` containers apart.
    await this.docker([
      'import',
      '-c',
      'CMD ["/bin/sh","-c","hostname > /www/host; exec httpd -f -p 80 -h /www"]',
      '-c',
      'EXPOSE 80',
      tar,
      tags[0]!,
    ])
    for (const t of tags.slice(1)) await this.docker(['tag', tags[0]!, t])
    rmSync(root, { recursive: true, force: true })
  }

  /** A private bridge network (no default bridge with --bridge=none); a random /24 in 10.128.0.0/9. */
  async createNetwork(): Promise<void> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const subnet = `10.${128 + Math.floor(Math.random() * 127)}.${Math.floor(Math.random() * 255)}.0/24`
      try {
        await this.docker([
          'network',
          'create',
          '-o',
          `com.docker.network.bridge.name=${this.network}`,
          '--subnet',
          subnet,
          this.network,
        ])
        return
      } catch (err) {
        if (attempt === 4) throw err // most likely a subnet clash with another engine: try another
      }
    }
  }

  /** Removes these containers when `t` ends, so a failed test does not leave them to the next one. */
  removeOnTeardown(t: { teardown(fn: () => unknown): void }, ...names: string[]): void {
    t.teardown(async () => {
      if (this.isRunning) await this.docker(['rm', '-f', ...names]).catch(() => undefined)
    }) // already removed by the test
  }

  async run(o: RunOptions): Promise<string> {
    const args = [
      'run',
      '-d',
      '--name',
      o.name,
      '--network',
      !o.network || o.network === 'bridge' ? this.network : o.network,
    ]
    for (const [k, v] of Object.entries(o.env ?? {})) args.push('-e', `${k}=${v}`)
    for (const [k, v] of Object.entries(o.labels ?? {})) args.push('--label', `${k}=${v}`)
    for (const p of o.publish ?? []) args.push('-p', `127.0.0.1::${p}`)
    if (o.restart) args.push('--restart', o.restart)
    if (o.healthCmd) args.push('--health-cmd', o.healthCmd, '--health-interval', '1s', '--health-retries', '1')
    args.push(...(o.extra ?? []), o.image ?? TEST_IMAGE, ...(o.cmd ?? []))
    return await this.docker(args)
  }

  /** Host port published for a container port ("80/tcp"). */
  async hostPort(name: string, port = '80/tcp'): Promise<number> {
    const out = await this.docker(['port', name, port])
    return Number(out.split('\n')[0]!.split(':').pop())
  }

  // biome-ignore lint/suspicious/noExplicitAny: docker inspect output, read field by field by the tests
  async inspect(name: string): Promise<Record<string, any>> {
    // biome-ignore lint/suspicious/noExplicitAny: as above
    return (JSON.parse(await this.docker(['inspect', name])) as Record<string, any>[])[0]!
  }

  /** Removes every container and the network, stops the engine, unmounts what it left and deletes the folder. */
  async destroy(): Promise<void> {
    if (this.isRunning) {
      try {
        const ids = (await this.docker(['ps', '-aq'])).split('\n').filter(Boolean)
        if (ids.length) await this.docker(['rm', '-f', ...ids], 60_000)
        await this.docker(['network', 'rm', this.network]).catch(() => undefined) // absent if the test never created it
      } catch (err) {
        process.stderr.write(`docker cleanup: ${(err as Error).message}\n`)
      }
    }
    await this.stop()
    // The engine leaves its default netns mount (and, after a crash, overlay mounts) behind: unmount before rm.
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1] ?? '')
      .filter((m) => m.startsWith(`${this.dir}/`))
    for (const m of mounts.sort((a, b) => b.length - a.length)) await run('umount', ['-l', m]).catch(() => undefined)
    await run('ip', ['link', 'delete', this.network]).catch(() => undefined) // gone already unless the engine crashed
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** Starts a private engine with the test image and network; it is destroyed in teardown, also when the test fails. */
export async function startDocker(
  t: { teardown(fn: () => unknown): void },
  imageTags?: string[],
  opts: { liveRestore?: boolean; tls?: TlsMaterial } = {},
): Promise<DockerDaemon> {
  // Short on purpose: <dir>/exec/... and <dir>/d.sock must stay below the 107-byte unix socket limit.
  const tls = opts.tls ? { port: await freePort(), material: opts.tls } : null
  const d = new DockerDaemon(mkdtempSync('/tmp/clbd-'), opts.liveRestore ?? false, tls)
  t.teardown(() => d.destroy())
  await d.start()
  await d.importImage(imageTags)
  await d.createNetwork()
  return d
}

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes; the error names what was awaited. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs = 20_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < deadline) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      last = err
    }
    await sleep(everyMs)
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`,
  )
}
