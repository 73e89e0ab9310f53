import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { loadNginxConfig } from '../src/config/nginx.js'
import { silentLogger } from '../src/log.js'
import {
  checkNginxConfig,
  emitNginxConfig,
  NginxError,
  parseNginxVersion,
  renderNginxConfig,
  renderNginxHttp,
} from '../src/nginx/index.js'
import { parseRoute } from '../src/routes/route.js'
import { nginxBinary, renderOptions } from './helpers/nginx.js'
import { tempDir } from './helpers/tmp.js'

/** nginx -t (temporary prefix) on every mode's output, against Debian's 1.22 and testing's 1.30. */

const ROUTES = [
  'api.example.com=api:5000',
  '/ws=chat:9000,ws,strip',
  '/=web:80',
  'api.example.com/v2.1=api2:5000,tag=v2,dc=dc2',
  '*.shop.example.com/cart=cart:8000,strip',
].map((r) => parseRoute(r))
const SRV_ROUTES = [...ROUTES, parseRoute('/srv=srv'), parseRoute('srv.example.com=srv,tag=blue,ws')]

async function assertPasses(t: Test, bin: string, body: string, what: string): Promise<void> {
  const res = await checkNginxConfig(body, bin)
  t.ok(res.ok, `${what}: nginx -t passes${res.ok ? '' : `\n${res.output}`}`)
}

t.test('every mode passes nginx -t on nginx 1.22; upstream resolve is refused there', async (t) => {
  const bin = nginxBinary('1.22')
  const v = parseNginxVersion('nginx/1.22.1')
  await assertPasses(t, bin, renderNginxHttp(renderOptions({ routes: ROUTES, nginxVersion: v })), 'resolver mode')
  await assertPasses(
    t,
    bin,
    renderNginxHttp(renderOptions({ mode: 'catalog', catalogPort: 8080, nginxVersion: v }), [
      'api',
      'web',
      'billing-v2',
    ]),
    'catalog mode with a fixed port',
  )
  // The whole nginx.conf of --full, checked as written (its temp paths are the packaged ones, which nginx-light creates).
  const dir = tempDir(t, 'consul-lb-full-')
  writeFileSync(join(dir, 'nginx.conf'), renderNginxConfig(renderOptions({ routes: ROUTES, full: true })))
  const full = spawnSync(bin, ['-t', '-q', '-p', `${dir}/`, '-c', join(dir, 'nginx.conf')], {
    encoding: 'utf8',
    timeout: 20_000,
  })
  t.equal(full.status, 0, `--full output passes nginx -t as written\n${full.stderr}`)

  const err = await emitNginxConfig(
    loadNginxConfig({ flags: { mode: 'upstream', routes: ['/=web'], nginxBin: bin } }),
    silentLogger(),
    async () => {
      t.fail('nothing may be written')
    },
  ).catch((e: unknown) => e)
  t.type(err, NginxError)
  t.equal(
    (err as NginxError).code,
    'CLB_NGINX_VERSION_TOO_OLD',
    '`nginx -v` of the installed 1.22 gates the upstream mode',
  )
  t.match((err as NginxError).message, /nginx 1\.22\.1 cannot re-resolve upstream servers .*needs nginx >= 1\.27\.3/)
  const err2 = await emitNginxConfig(
    loadNginxConfig({ flags: { mode: 'upstream', routes: ['/=web'], nginxVersion: '1.22.1' } }),
    silentLogger(),
    async () => {},
  ).catch((e: unknown) => e)
  t.equal((err2 as NginxError).code, 'CLB_NGINX_VERSION_TOO_OLD', '--nginx-version gates it too')
  const err3 = await emitNginxConfig(
    loadNginxConfig({ flags: { mode: 'catalog', nginxBin: bin } }),
    silentLogger(),
    async () => {},
  ).catch((e: unknown) => e)
  t.equal(
    (err3 as NginxError).code,
    'CLB_NGINX_VERSION_TOO_OLD',
    'catalog mode without --catalog-port needs SRV, refused on 1.22',
  )
})

t.test('the upstream resolve mode passes nginx -t on nginx 1.30, and so does every other mode', async (t) => {
  const bin = nginxBinary('1.30')
  const v = parseNginxVersion('nginx/1.30.6')
  await assertPasses(
    t,
    bin,
    renderNginxHttp(renderOptions({ mode: 'upstream', routes: SRV_ROUTES, nginxVersion: v })),
    'upstream mode',
  )
  await assertPasses(
    t,
    bin,
    renderNginxHttp(renderOptions({ mode: 'catalog', nginxVersion: v }), ['api', 'web']),
    'catalog mode (SRV)',
  )
  await assertPasses(t, bin, renderNginxHttp(renderOptions({ routes: ROUTES, nginxVersion: v })), 'resolver mode')
})

t.test('nginx -t failures are reported, not written', async (t) => {
  const res = await checkNginxConfig(
    'server { listen 8080; location / { no_such_directive on; } }\n',
    nginxBinary('1.22'),
  )
  t.equal(res.ok, false)
  t.match(res.output, /no_such_directive/)
  const err = await checkNginxConfig('x', '/nonexistent/nginx').catch((e: unknown) => e)
  t.equal((err as NginxError).code, 'CLB_NGINX_NOT_RUNNABLE')
})

t.test('--check through the function API: checks, then writes', async (t) => {
  const bin = nginxBinary('1.22')
  let written = ''
  const res = await emitNginxConfig(
    loadNginxConfig({ flags: { routes: ['/=web:80'], check: true, nginxBin: bin, consul: 'http://127.0.0.1:1' } }),
    silentLogger(),
    async (text) => {
      written = text
    },
  )
  t.equal(written, res.text)
  t.match(written, 'set $endpoint web.service.consul;')
  t.same(
    res.warnings,
    [],
    'an unreachable Consul is not a warning about enable_truncate (the log says it could not look)',
  )
})
