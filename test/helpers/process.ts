import { type ChildProcess, spawn } from 'node:child_process'

/**
 * Stops a child this test process started, by its PID: SIGTERM, then SIGKILL after `graceMs`. Resolves when it has
 * exited (at once when it already has).
 */
export async function stopChild(proc: ChildProcess | null, graceMs = 5000): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  proc.kill('SIGTERM')
  const timer = setTimeout(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL')
  }, graceMs)
  await exited
  clearTimeout(timer)
}

/** A child with its output kept; `exited` resolves with its exit code (null when a signal ended it). */
export interface LoggedChild {
  proc: ChildProcess
  output: () => string
  exited: Promise<number | null>
}

/** Spawns a child whose stdout and stderr are kept (the last `keepChars`) for error messages. */
export function spawnLogged(
  bin: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; keepChars?: number } = {},
): LoggedChild {
  const keepChars = opts.keepChars ?? 50_000
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) })
  let output = ''
  const keep = (b: Buffer) => {
    output = (output + b.toString()).slice(-keepChars)
  }
  proc.stdout!.on('data', keep)
  proc.stderr!.on('data', keep)
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)))
  return { proc, output: () => output, exited }
}

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname

/** Runs `consul-lb ARGS` (from source, through tsx) to its end; killed after `timeoutMs`. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 60_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const p = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    p.stdout!.on('data', (b: Buffer) => {
      stdout += b
    })
    p.stderr!.on('data', (b: Buffer) => {
      stderr += b
    })
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs)
    p.on('exit', (code) => {
      clearTimeout(timer)
      done({ code, stdout, stderr })
    })
  })
}

/** Starts a long-running `consul-lb ARGS` (serve, registrator) with its output kept; stop it with stopChild. */
export function runCliProcess(args: string[], env: NodeJS.ProcessEnv = {}): LoggedChild {
  return spawnLogged(process.execPath, ['--import', 'tsx', CLI, ...args], { env: { ...process.env, ...env } })
}
