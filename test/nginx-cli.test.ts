import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startConsul } from './helpers/consul.js'
import { nginxBinary, sleep } from './helpers/nginx.js'
import { runCli, runCliProcess, stopChild } from './helpers/process.js'
import { tempDir } from './helpers/tmp.js'

/** `consul-lb nginx` as a user runs it: exit codes, stdout vs --out, errors that carry their code. */

/** `consul-lb nginx ARGS`, with an address where no Consul answers (as the catalog mode must not reach one here). */
const cli = (args: string[]) => runCli(['nginx', ...args], { CONSUL_HTTP_ADDR: '127.0.0.1:1' })

t.test('the config goes to stdout, checked, and logs go to stderr', async (t) => {
  const r = await cli([
    '--route',
    'api.example.com=api:5000',
    '--check',
    '--nginx-bin',
    nginxBinary('1.22'),
    '--log-level',
    'info',
  ])
  t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.stderr)
  t.match(r.stdout, /^# Written by consul-lb nginx \(mode resolver\)/)
  t.match(r.stderr, /nginx -t accepted the output/)
})

t.test('--out writes a file', async (t) => {
  const dir = tempDir(t, 'consul-lb-cli-')
  const out = join(dir, 'consul.conf')
  const r = await cli(['--route', '/=web:80', '--out', out, '--log-level', 'silent'])
  t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.stderr)
  t.equal(r.stdout, '')
  t.match(readFileSync(out, 'utf8'), 'set $endpoint web.service.consul;')
})

t.test('refusals exit 1 with their code; bad settings exit 2 naming the field', async (t) => {
  const old = await cli(['--mode', 'upstream', '--route', '/=web', '--nginx-version', '1.22.1'])
  t.equal(old.code, 1)
  t.match(old.stderr, /CLB_NGINX_VERSION_TOO_OLD: nginx 1\.22\.1 cannot re-resolve upstream servers/)
  const noPort = await cli(['--route', '/=web', '--nginx-version', '1.22.1'])
  t.equal(noPort.code, 1)
  t.match(noPort.stderr, /CLB_NGINX_NO_PORT/)
  const hostile = await cli(['--route', '/x=x; } server { listen 80'])
  t.equal(hostile.code, 2)
  t.match(hostile.stderr, /invalid configuration: --route/)
  t.equal(hostile.stdout, '', 'nothing written')
})

t.test(
  '--watch writes the catalog config, follows it, and exits on SIGTERM without waiting for its blocking query',
  async (t) => {
    const consul = await startConsul(t)
    await consul.register({ ID: 'web-1', Name: 'web', Address: '127.0.0.2', Port: 80 })
    const dir = tempDir(t, 'consul-lb-cli-watch-')
    const out = join(dir, 'catalog.conf')
    const { proc, output, exited } = runCliProcess([
      'nginx',
      '--mode',
      'catalog',
      '--catalog-port',
      '80',
      '--watch',
      '--out',
      out,
      '--debounce-ms',
      '100',
      '--consul',
      consul.httpAddr,
      '--check',
      '--nginx-bin',
      nginxBinary('1.22'),
      '--reload-command',
      `echo reload >> ${join(dir, 'reloads')}`,
    ])
    t.teardown(() => stopChild(proc))
    const waitFor = async (pred: () => boolean, what: string) => {
      for (let i = 0; i < 300 && !pred(); i++) await sleep(50)
      if (!pred()) throw new Error(`${what} did not happen within 15 s:\n${output()}`)
    }
    const read = () => {
      try {
        return readFileSync(out, 'utf8')
      } catch {
        return ''
      }
    } // not written yet: polled again
    await waitFor(() => read().includes('catalog service web'), 'the first write')
    await consul.register({ ID: 'api-1', Name: 'api', Address: '127.0.0.3', Port: 80 })
    await waitFor(() => read().includes('catalog service api'), 'the rewrite for a new service')
    // The reload command runs right after the write: wait for it rather than racing it.
    const reloads = () => {
      try {
        return readFileSync(join(dir, 'reloads'), 'utf8')
      } catch {
        return ''
      }
    } // not run yet: polled again
    await waitFor(() => reloads() === 'reload\nreload\n', 'the second reload')
    t.equal(reloads(), 'reload\nreload\n', 'the reload command ran after each write')
    const stoppedAt = Date.now()
    proc.kill('SIGTERM')
    const code = await exited
    t.equal(code, 0, 'clean exit')
    t.ok(
      Date.now() - stoppedAt < 5000,
      `exited ${Date.now() - stoppedAt} ms after SIGTERM (the blocking query waits up to 60 s)`,
    )
  },
)
