import { execFile, spawn } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t from 'tap'
import { loadNginxConfig } from '../src/config/nginx.js'
import { createLogger } from '../src/log.js'
import { emitNginxConfig, parseNginxVersion, renderNginxHttp } from '../src/nginx/index.js'
import { parseRoute } from '../src/routes/route.js'
import { startBackend } from './helpers/backends.js'
import { startConsul } from './helpers/consul.js'
import { waitFor } from './helpers/docker.js'
import { http } from './helpers/http.js'
import { dnsOf, type NginxProcess, nginxBinary, renderOptions, sleep, startNginx } from './helpers/nginx.js'
import { freePort } from './helpers/ports.js'
import { runCli } from './helpers/process.js'
import { tempDir } from './helpers/tmp.js'

/**
 * The emitter items found while running the source scenarios through it, each against real nginx: a whole config that
 * runs as is (its own pid, logs and temp files), two emitted files in one nginx, a distribution's default site on the
 * same port, 16 KiB bodies kept in memory, --check naming the nginx it ran, and path prefixes with %XX escapes.
 */

const V130 = parseNginxVersion('nginx/1.30.6')

const consul = await startConsul(t, { enableTruncate: true })
const web = await startBackend('web-1', '127.0.0.1', 0, t)
await consul.register({ ID: 'web-1', Name: 'web', Address: '127.0.0.1', Port: web.port })
const cafe = await startBackend('cafe-1', '127.0.0.1', 0, t)
await consul.register({ ID: 'cafe-1', Name: 'cafe', Address: '127.0.0.1', Port: cafe.port })
await consul.waitPassing('web', 1)
await consul.waitPassing('cafe', 1)

/** One request to 127.0.0.1:port on a fresh connection (Host `localhost` unless given). */
function send(port: number, path: string, opts: { host?: string; method?: string; body?: Buffer } = {}) {
  return http(port, path, { ...opts, host: opts.host ?? 'localhost', keepAlive: false })
}

async function waitServing(port: number, path: string, host = 'localhost'): Promise<void> {
  await waitFor(
    `nginx on ${port} serving ${path}`,
    async () => (await send(port, path, { host })).status === 200,
    15_000,
  )
}

t.test('--full is runnable as is: pid, logs and temp files under --full-prefix, not /run/nginx.pid', async (t) => {
  const dir = tempDir(t, 'clb-full-')
  const prefix = join(dir, 'run')
  const out = join(dir, 'nginx.conf')
  const port = await freePort()
  const cfg = loadNginxConfig({
    flags: {
      routes: [`/=web:${web.port}`],
      listen: `127.0.0.1:${port}`,
      dns: [consul.dnsAddr],
      full: true,
      fullPrefix: prefix,
      out,
    },
  })
  const systemPid = existsSync('/run/nginx.pid') ? readFileSync('/run/nginx.pid', 'utf8') : null
  await emitNginxConfig(cfg, createLogger('silent'))
  t.ok(existsSync(prefix), 'the prefix folder is created with the file')
  const text = readFileSync(out, 'utf8')
  t.match(text, `pid ${prefix}/nginx.pid;`)
  t.match(text, `error_log ${prefix}/error.log notice;`)
  // Started exactly as an operator would: `nginx -c FILE` (it daemonizes; its master's pid is in the file).
  const started = await new Promise<number | null>((done) =>
    spawn(nginxBinary('1.22'), ['-c', out], { stdio: 'ignore' }).once('exit', (code) => done(code)),
  )
  t.equal(started, 0, 'nginx -c <file> starts')
  const pidFile = join(prefix, 'nginx.pid')
  const pid = Number(await waitFor('the pid file', async () => existsSync(pidFile) && readFileSync(pidFile, 'utf8')))
  t.teardown(async () => {
    try {
      process.kill(pid, 'SIGQUIT')
    } catch {
      // already gone: the test stopped it
    }
    await waitFor('nginx stopped', async () => !isAlive(pid), 10_000).catch(() => undefined)
  })
  await waitServing(port, '/')
  t.equal((await send(port, '/x')).body, 'web-1', 'traffic flows')
  t.ok(existsSync(join(prefix, 'error.log')), 'its error log is under the prefix')
  t.ok(existsSync(join(prefix, 'access.log')), 'and its access log')
  t.equal(
    existsSync('/run/nginx.pid') ? readFileSync('/run/nginx.pid', 'utf8') : null,
    systemPid,
    "the system nginx's pid file is untouched",
  )
  process.kill(pid, 'SIGQUIT')
  await waitFor('nginx stopped', async () => !isAlive(pid), 10_000)
})

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

for (const release of ['1.22', '1.30'] as const) {
  t.test(
    `nginx ${release}: two emitted files in one nginx, beside a distribution's default site on the same port`,
    async (t) => {
      const second = await freePort()
      const mode = release === '1.30' ? 'upstream' : 'resolver'
      const routes = (host: string) =>
        (mode === 'upstream'
          ? [`${host}=web`, '/ws=web,ws']
          : [`${host}=web:${web.port}`, `/ws=web:${web.port},ws`]
        ).map((r) => parseRoute(r))
      const emit = (listen: string, host: string) =>
        renderNginxHttp(
          renderOptions({
            mode,
            routes: routes(host),
            dns: [dnsOf(consul.dnsAddr)],
            listen,
            resolverValidS: 1,
            ...(mode === 'upstream' ? { nginxVersion: V130 } : {}),
          }),
        )
      const nginx: NginxProcess = await startNginx(t, release, (port, dir) => {
        writeFileSync(join(dir, 'a.conf'), emit(`127.0.0.1:${port}`, 'a.example.com'))
        writeFileSync(join(dir, 'b.conf'), emit(`127.0.0.1:${second}`, 'b.example.com'))
        // Debian's sites-enabled/default: `listen 80 default_server`, here on the first file's port.
        writeFileSync(
          join(dir, 'default-site.conf'),
          `server {\n    listen 127.0.0.1:${port} default_server;\n    server_name _;\n    location / { return 200 "distribution default\\n"; }\n}\n`,
        )
        return ['a.conf', 'b.conf', 'default-site.conf'].map((f) => `include ${join(dir, f)};`).join('\n')
      })
      await waitServing(nginx.port, '/', 'a.example.com')
      await waitServing(second, '/', 'b.example.com')
      t.equal((await send(nginx.port, '/x', { host: 'a.example.com' })).body, 'web-1', 'the first file routes its host')
      t.equal((await send(second, '/x', { host: 'b.example.com' })).body, 'web-1', 'the second file routes its host')
      t.equal(
        (await send(nginx.port, '/x', { host: 'unknown.example.com' })).body,
        'distribution default\n',
        'the default site keeps its default_server; no clash',
      )
      t.equal((await send(second, '/nothing', { host: 'unknown.example.com' })).status, 404, 'the other port: our 404')
      t.notMatch(nginx.log, /\[emerg\]/)
    },
  )
}

t.test('a 16 KiB request body stays in memory (nginx 8k default wrote it to a temp file)', async (t) => {
  const nginx = await startNginx(t, '1.22', (port) =>
    renderNginxHttp(
      renderOptions({
        routes: [parseRoute(`/=web:${web.port}`)],
        dns: [dnsOf(consul.dnsAddr)],
        listen: `127.0.0.1:${port}`,
        resolverValidS: 1,
      }),
    ),
  )
  await waitServing(nginx.port, '/')
  for (let i = 0; i < 5; i++) {
    const r = await send(nginx.port, '/echo', { method: 'POST', body: Buffer.alloc(16 * 1024, 97) })
    t.equal(JSON.parse(r.body).bodyBytes, 16 * 1024)
  }
  await sleep(200)
  t.notMatch(nginx.log, /buffered to a temporary file/, 'no temp-file spill logged')
})

t.test('--check in the resolver mode names the nginx it ran', async (t) => {
  const lines: Record<string, unknown>[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l))
      cb()
    },
  })
  const cfg = loadNginxConfig({
    flags: { routes: ['/=web:80'], check: true, nginxBin: nginxBinary('1.22'), consul: consul.httpAddr, out: '-' },
  })
  await emitNginxConfig(cfg, createLogger('info', sink), async () => {})
  const checked = lines.find((l) => l.msg === 'nginx -t accepted the output')
  t.equal(checked?.nginx, '1.22.1', 'the version `nginx -v` reports, not "unknown"')
  const version = await new Promise<string>((done) =>
    execFile(nginxBinary('1.22'), ['-v'], (_e, stdout, stderr) => done(`${stdout}${stderr}`)),
  )
  t.match(version, /1\.22\.1/)
})

t.test('a path prefix with %XX escapes routes the requests nginx decodes to it', async (t) => {
  const nginx = await startNginx(t, '1.22', (port) =>
    renderNginxHttp(
      renderOptions({
        routes: [parseRoute(`/caf%C3%A9=cafe:${cafe.port},strip`), parseRoute(`/=web:${web.port}`)],
        dns: [dnsOf(consul.dnsAddr)],
        listen: `127.0.0.1:${port}`,
        resolverValidS: 1,
      }),
    ),
  )
  await waitServing(nginx.port, '/')
  t.equal((await send(nginx.port, '/caf%C3%A9/menu')).body, 'cafe-1')
  t.equal((await send(nginx.port, '/caf%c3%a9/menu')).body, 'cafe-1', 'lower-case hex decodes to the same bytes')
  t.equal(cafe.last?.url, '/menu', 'strip removes the decoded prefix')
  t.equal((await send(nginx.port, '/cafe/menu')).body, 'web-1', 'another path is not the prefix')
})

t.test('the emitter CLI: --full-prefix, --default-server and --client-body-buffer-size are settings', async (t) => {
  const dir = tempDir(t, 'clb-full-cli-')
  const cli = (...args: string[]) => runCli(['nginx', '--route', '/=web:80', '--full', ...args])
  const prefix = join(dir, 'lb')
  const r = await cli('--full-prefix', prefix, '--default-server', '--client-body-buffer-size', '1m')
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, `pid ${prefix}/nginx.pid;`)
  t.match(r.stdout, 'listen 8080 default_server;')
  t.match(r.stdout, 'client_body_buffer_size 1m;')
  t.ok(existsSync(prefix), 'written to stdout (`> nginx.conf`), the prefix is created too: nginx -c runs as is')
  // A prefix this user cannot create (a non-root user and the default /var/lib/consul-lb/nginx; here a file in the
  // way, which stops root too): a clear error naming the setting, nothing written; a warning when printing.
  const blocker = join(dir, 'a-file')
  writeFileSync(blocker, '')
  const out = join(dir, 'nginx.conf')
  const refused = await cli('--full-prefix', `${blocker}/nginx`, '--out', out)
  t.equal(refused.code, 1)
  t.match(refused.stderr, /CLB_NGINX_WRITE_FAILED: cannot create --full-prefix .*a-file\/nginx \(ENOTDIR\)/)
  t.notMatch(refused.stderr, /at async/, 'no stack trace')
  t.notOk(existsSync(out), 'nothing written')
  const printed = await cli('--full-prefix', `${blocker}/nginx`)
  t.equal(printed.code, 0)
  t.match(printed.stdout, `pid ${blocker}/nginx/nginx.pid;`)
  t.match(printed.stderr, /CLB_NGINX_WRITE_FAILED/)
})
