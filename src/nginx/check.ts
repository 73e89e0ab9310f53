import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ConsulClient } from '../consul/client.js'
import { NginxError } from './errors.js'
import { wrapFullConfig } from './render.js'

export interface CheckResult {
  ok: boolean
  /** nginx -t's own output (stderr), for logs and error messages. */
  output: string
}

/**
 * `nginx -t` on an http-context text inside a minimal nginx.conf with a temporary prefix: pid, temp folders and logs
 * live in that folder, so the check needs neither root nor the system's /var/lib/nginx, and loads no dynamic modules.
 * Resolves { ok: false } when nginx rejects the text; rejects CLB_NGINX_NOT_RUNNABLE when nginx cannot be run.
 */
export async function checkNginxConfig(httpBody: string, nginxBin: string, timeoutMs = 20_000): Promise<CheckResult> {
  const dir = await mkdtemp(join(tmpdir(), 'consul-lb-nginx-check-'))
  try {
    const conf = join(dir, 'nginx.conf')
    await writeFile(conf, wrapFullConfig(httpBody, { prefixDir: dir, accessLog: false }))
    return await new Promise<CheckResult>((resolve, reject) => {
      execFile(
        nginxBin,
        ['-t', '-q', '-p', `${dir}/`, '-c', conf],
        { timeout: timeoutMs, encoding: 'utf8' },
        (err, stdout, stderr) => {
          const output = `${stderr}${stdout}`.trim()
          if (!err) return resolve({ ok: true, output })
          const code = (err as NodeJS.ErrnoException).code
          if (code === 'ENOENT' || code === 'EACCES' || err.killed) {
            return reject(
              new NginxError(
                'CLB_NGINX_NOT_RUNNABLE',
                `cannot run ${nginxBin} -t: ${err.killed ? `timed out after ${timeoutMs} ms` : err.message}`,
                { cause: err },
              ),
            )
          }
          resolve({ ok: false, output })
        },
      )
    })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * Whether the Consul agent sets the TC bit on cut UDP answers (dns_config.enable_truncate), read from
 * /v1/agent/self. nginx sends no EDNS: without the bit it silently sees at most 3 instances per answer.
 * Null when the agent does not report it (older agents, ACLs without agent:read).
 */
export async function consulTruncateEnabled(client: ConsulClient): Promise<boolean | null> {
  // agentSelf() names the operation and the agent:read it needs when ACLs refuse it.
  const v: unknown = (await client.agentSelf())?.DebugConfig?.DNSEnableTruncate
  return typeof v === 'boolean' ? v : null
}

export const TRUNCATE_WARNING =
  'Consul DNS does not set the TC bit (dns_config { enable_truncate = true } is off): nginx sends no EDNS, so it sees at most 3 instances of each service; set enable_truncate on the Consul agents nginx asks'
