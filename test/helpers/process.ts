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

/** Spawns a child whose stdout and stderr are kept (the last `keepChars`) for error messages. */
export function spawnLogged(
  bin: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; keepChars?: number } = {},
): { proc: ChildProcess; output: () => string } {
  const keepChars = opts.keepChars ?? 50_000
  const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) })
  let output = ''
  const keep = (b: Buffer) => {
    output = (output + b.toString()).slice(-keepChars)
  }
  proc.stdout!.on('data', keep)
  proc.stderr!.on('data', keep)
  return { proc, output: () => output }
}
