import { execFile } from 'node:child_process'
import { NginxError } from './errors.js'

/** An nginx release as `nginx -v` reports it; `plus` marks nginx Plus (`nginx/1.25.3 (nginx-plus-r31)`). */
export interface NginxVersion {
  readonly major: number
  readonly minor: number
  readonly patch: number
  readonly plus: boolean
  readonly text: string
}

/**
 * `server NAME service=SVC resolve;` inside an `upstream` (re-resolved at run time, SRV ports) reached open-source
 * nginx in 1.27.3 (November 2024); nginx Plus has had it for years.
 */
export const UPSTREAM_RESOLVE_SINCE = { major: 1, minor: 27, patch: 3 } as const

/**
 * Reads `nginx version: nginx/1.22.1`, `nginx/1.30.6 (Debian)`, `nginx/1.25.3 (nginx-plus-r31)`, OpenResty's
 * `openresty/1.21.4.1` (its first three numbers are the nginx it is built on) or a bare `1.27.3`.
 */
export function parseNginxVersion(text: string): NginxVersion {
  const m = /(?:^|nginx\/|openresty\/)(\d+)\.(\d+)\.(\d+)/.exec(text.trim())
  if (!m)
    throw new NginxError(
      'CLB_NGINX_VERSION_UNKNOWN',
      `cannot read an nginx version from ${JSON.stringify(text.trim().slice(0, 200))} (expected e.g. 1.27.3)`,
    )
  return {
    major: Number(m[1]),
    minor: Number(m[2]),
    patch: Number(m[3]),
    plus: /nginx-plus/i.test(text),
    text: `${m[1]}.${m[2]}.${m[3]}`,
  }
}

export function isVersionAtLeast(
  v: { major: number; minor: number; patch: number },
  min: { major: number; minor: number; patch: number },
): boolean {
  if (v.major !== min.major) return v.major > min.major
  if (v.minor !== min.minor) return v.minor > min.minor
  return v.patch >= min.patch
}

export function supportsUpstreamResolve(v: NginxVersion): boolean {
  return v.plus || isVersionAtLeast(v, UPSTREAM_RESOLVE_SINCE)
}

/**
 * Runs `<bin> -v` (nginx prints its version on stderr). Resolves null when the binary is not there (ENOENT): the
 * caller then renders without gating; any other failure is an error, because a present but broken nginx would also
 * fail the user's reload.
 */
export function detectNginxVersion(bin: string, timeoutMs = 10_000): Promise<NginxVersion | null> {
  return new Promise((resolve, reject) => {
    execFile(bin, ['-v'], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') return resolve(null)
      if (err)
        return reject(
          new NginxError('CLB_NGINX_NOT_RUNNABLE', `${bin} -v failed: ${stderr.trim() || err.message}`, { cause: err }),
        )
      try {
        resolve(parseNginxVersion(`${stderr}\n${stdout}`.trim()))
      } catch (e) {
        reject(e)
      }
    })
  })
}
