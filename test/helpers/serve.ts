import type { ChildProcess } from 'node:child_process'
import { sleep } from './consul.js'
import { freePort } from './ports.js'
import { runCliProcess } from './process.js'

/**
 * A long-running `consul-lb` command (serve, registrator) whose admin listener is on port `admin`, ready once its
 * /healthz answers; killed by PID in teardown.
 */
export async function startCliWithAdmin(
  t: { teardown(fn: () => unknown): void },
  args: string[],
  admin: number,
  env: Record<string, string> = {},
): Promise<{ proc: ChildProcess; exited: Promise<number | null>; output: () => string }> {
  const { proc, output } = runCliProcess(args, env)
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)))
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL')
  })
  // Generous: each process compiles the TypeScript sources at start, slow on a loaded 2-core machine.
  await waitHealthy(proc, output, admin, `consul-lb ${args[0]}`, 90_000)
  return { proc, exited, output }
}

/** Resolves once `admin`'s /healthz answers 200; throws with the process's output if it exits first or too late. */
export async function waitHealthy(
  proc: ChildProcess,
  output: () => string,
  admin: number,
  label: string,
  timeoutMs: number,
): Promise<void> {
  const healthy = (): Promise<boolean> =>
    fetch(`http://127.0.0.1:${admin}/healthz`).then(
      (r) => r.ok,
      () => false,
    )
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await healthy()) return
    if (proc.exitCode !== null) throw new Error(`${label} exited ${proc.exitCode}: ${output()}`)
    await sleep(100)
  }
  if (await healthy()) return
  throw new Error(`${label} did not become healthy within ${timeoutMs / 1000} s:\n${output()}`)
}

/**
 * `serve` on loopback: the proxy on `port`, the admin listener on `admin`, Consul DNS at `dns`, then `extra`. The
 * start of every serve command line the tests run.
 */
export function serveArgs(port: number, admin: number, dns: string, ...extra: string[]): string[] {
  return ['serve', '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, '--dns', dns, ...extra]
}

/** `consul-lb serve` as a process on free loopback ports (proxy and admin); see startCliWithAdmin. */
export async function startServe(
  t: { teardown(fn: () => unknown): void },
  args: string[],
  env: Record<string, string> = {},
): Promise<{ proc: ChildProcess; port: number; admin: number; exited: Promise<number | null>; output: () => string }> {
  const port = await freePort()
  const admin = await freePort()
  const started = await startCliWithAdmin(
    t,
    ['serve', '--listen', `127.0.0.1:${port}`, '--admin', `127.0.0.1:${admin}`, ...args],
    admin,
    env,
  )
  return { ...started, port, admin }
}
