import { execFile } from 'node:child_process'
import { rename, rm, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { NginxError } from './errors.js'

/**
 * Writes through a temporary file in the same folder and renames it over the target, so nginx (reloading, or
 * started by a supervisor at the wrong moment) never reads half a config.
 */
export async function writeFileAtomically(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`)
  try {
    await writeFile(tmp, text)
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw new NginxError('CLB_NGINX_WRITE_FAILED', `cannot write ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/** Runs the operator's reload command through /bin/sh (it comes from the config, like a systemd ExecReload). */
export function runReloadCommand(command: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('/bin/sh', ['-c', command], { timeout: timeoutMs, encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (err)
        reject(
          new NginxError(
            'CLB_NGINX_RELOAD_FAILED',
            `reload command ${JSON.stringify(command)} failed: ${stderr.trim() || err.message}`,
            { cause: err },
          ),
        )
      else resolve()
    })
  })
}
