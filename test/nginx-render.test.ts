import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadNginxConfig } from '../src/config/nginx.js'
import { ConfigError } from '../src/errors.js'
import { silentLogger } from '../src/log.js'
import { checkNginxConfig } from '../src/nginx/check.js'
import {
  emitNginxConfig,
  type NginxError,
  parseNginxVersion,
  renderNginxConfig,
  selectCatalogServices,
  supportsUpstreamResolve,
} from '../src/nginx/index.js'
import { renderNginxHttp } from '../src/nginx/render.js'
import { parseRoute, type Route } from '../src/routes/route.js'
import { nginxBinary, renderOptions } from './helpers/nginx.js'
import { tempDir } from './helpers/tmp.js'

const ROUTES = [
  'api.example.com=api:5000',
  '/ws=chat:9000,ws,strip',
  '/=web:80',
  'api.example.com/v2.1=api2:5000,tag=v2,dc=dc2',
  'shop.example.com/cart=cart:8000',
].map((r) => parseRoute(r))

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return (err as { code?: string }).code
  }
  return undefined
}

t.test('the same routes give the same bytes, in any order', async (t) => {
  const a = renderNginxConfig(renderOptions({ routes: ROUTES }))
  const b = renderNginxConfig(renderOptions({ routes: ROUTES }))
  const c = renderNginxConfig(renderOptions({ routes: [...ROUTES].reverse() }))
  t.equal(a, b)
  t.equal(a, c, 'route order does not change the output')
  const up = renderNginxConfig(renderOptions({ mode: 'upstream', routes: [...ROUTES, parseRoute('/srv=srv')] }))
  t.equal(
    up,
    renderNginxConfig(renderOptions({ mode: 'upstream', routes: [parseRoute('/srv=srv'), ...ROUTES].reverse() })),
  )
  const cat = renderNginxConfig(renderOptions({ mode: 'catalog', catalogPort: 80 }), ['web', 'api'])
  t.equal(cat, renderNginxConfig(renderOptions({ mode: 'catalog', catalogPort: 80 }), ['api', 'web']))
})

t.test('every block names the route that made it', async (t) => {
  const text = renderNginxConfig(renderOptions({ routes: ROUTES }))
  for (const r of ROUTES) t.match(text, `# route: ${r.source}\n`, r.source)
  t.match(text, 'server_name api.example.com;')
  t.match(
    text.slice(text.indexOf('\nserver {')),
    /^\nserver \{\n {4}listen 8080;\n {4}server_name _;\n/,
    'the host-less server comes first',
  )
  t.notMatch(text, 'default_server', "no default_server unless asked: a distribution's default site claims it")
  t.match(
    renderNginxConfig(renderOptions({ routes: ROUTES, defaultServer: true })),
    'listen 8080 default_server;\n    server_name _;',
  )
  t.match(text, '    resolver 127.0.0.1:8600 valid=5s ipv6=off;\n', 'the resolver is set per server block')
  t.notMatch(text, /^resolver /m, 'and not at http level, where a second emitted file would repeat it')
  t.match(text, '    resolver_timeout 3s;')
  t.match(text, '    client_body_buffer_size 64k;')
  t.match(text, 'set $endpoint v2.api2.service.dc2.consul;')
  t.match(text, 'location ~ ^/v2\\.1(?:/|$) {', 'dots in a path are literal in the regex')
  t.match(text, 'rewrite ^/ws/?(.*)$ /$1 break;')
  t.match(text, 'proxy_pass http://$endpoint:5000$request_uri;')
  t.match(text, 'proxy_set_header Upgrade $http_upgrade;')
  t.match(text, 'enable_truncate', 'the output says when nginx reaches every instance')
  t.match(text, 'keeps no upstream connections alive', 'the output names the keep-alive cost')
})

t.test('the upstream mode reads SRV ports through Consul’s RFC 2782 names', async (t) => {
  const text = renderNginxConfig(
    renderOptions({
      mode: 'upstream',
      routes: [parseRoute('/=web'), parseRoute('/v2=web,tag=v2,dc=dc2'), parseRoute('/fixed=web:81')],
    }),
  )
  t.match(text, 'server service.consul service=web resolve;')
  t.match(text, 'server service.dc2.consul service=v2.web resolve;')
  t.match(text, 'server web.service.consul:81 resolve;')
  t.match(text, 'zone consul_web.on.8080 64k;', 'the listen address ends the upstream name')
  t.match(text, 'keepalive 16;')
  t.match(text, 'proxy_pass http://consul_web.on.8080;')
  t.match(text, /upstream consul_web\.on\.8080 \{\n {4}zone [^\n]+\n {4}resolver 127\.0\.0\.1:8600 valid=5s ipv6=off;/)
})

t.test(
  'upstream names keep listen addresses apart: a file for 8080 and one for [::]:8080 share one nginx',
  async (t) => {
    const names = (listen: string) =>
      [
        ...renderNginxConfig(renderOptions({ mode: 'upstream', routes: [parseRoute('/=web')], listen })).matchAll(
          /upstream (\S+) \{/g,
        ),
      ].map((m) => m[1])
    const listens = ['8080', '[::]:8080', '*:8080', '127.0.0.1:8080', '[::1]:8080', '[1::]:8080', 'lb-1.local:8080']
    const all = listens.map((l) => names(l)[0])
    t.same(new Set(all).size, listens.length, `one name per listen address: ${all.join(' ')}`)
    t.equal(all[0], 'consul_web.on.8080')
    // Both files in one nginx 1.30 (nginx -t does not bind): a duplicate upstream would be [emerg].
    const body = (listen: string) =>
      renderNginxHttp(
        renderOptions({
          mode: 'upstream',
          routes: [parseRoute('/=web')],
          listen,
          nginxVersion: parseNginxVersion('nginx/1.30.0'),
        }),
      )
    const res = await checkNginxConfig(`${body('8080')}\n${body('[::]:8080')}`, nginxBinary('1.30'))
    t.ok(res.ok, res.output)
  },
)

t.test('the resolver mode refuses a route without a fixed port and says what to do', async (t) => {
  const err = (() => {
    try {
      renderNginxConfig(renderOptions({ routes: [parseRoute('/=web')] }))
    } catch (e) {
      return e as NginxError
    }
    return null
  })()
  t.equal(err?.code, 'CLB_NGINX_NO_PORT')
  t.match(err?.message, /--mode upstream/)
})

t.test('upstream resolve is refused for nginx older than 1.27.3', async (t) => {
  const routes = [parseRoute('/=web')]
  t.equal(
    codeOf(() =>
      renderNginxConfig(
        renderOptions({ mode: 'upstream', routes, nginxVersion: parseNginxVersion('nginx version: nginx/1.22.1') }),
      ),
    ),
    'CLB_NGINX_VERSION_TOO_OLD',
  )
  t.equal(
    codeOf(() =>
      renderNginxConfig(renderOptions({ mode: 'catalog', nginxVersion: parseNginxVersion('1.26.0') }), ['web']),
    ),
    'CLB_NGINX_VERSION_TOO_OLD',
  )
  t.doesNotThrow(() =>
    renderNginxConfig(
      renderOptions({ mode: 'upstream', routes, nginxVersion: parseNginxVersion('nginx version: nginx/1.27.3') }),
    ),
  )
  t.doesNotThrow(
    () =>
      renderNginxConfig(
        renderOptions({ mode: 'catalog', catalogPort: 80, nginxVersion: parseNginxVersion('1.22.1') }),
        ['web'],
      ),
    'catalog with a fixed port works on any nginx',
  )
})

t.test('nginx -v output is read, Plus included', async (t) => {
  t.same(parseNginxVersion('nginx version: nginx/1.30.6 (Debian)').text, '1.30.6')
  t.equal(supportsUpstreamResolve(parseNginxVersion('nginx version: nginx/1.25.3 (nginx-plus-r31)')), true)
  t.equal(supportsUpstreamResolve(parseNginxVersion('nginx version: nginx/1.27.2')), false)
  t.equal(supportsUpstreamResolve(parseNginxVersion('nginx version: nginx/1.28.0')), true)
  t.equal(
    codeOf(() => parseNginxVersion('openresty')),
    'CLB_NGINX_VERSION_UNKNOWN',
  )
  t.equal(parseNginxVersion('nginx version: openresty/1.21.4.1').text, '1.21.4', 'OpenResty: the nginx it is built on')
})

t.test('hostile names from routes never reach the text', async (t) => {
  t.throws(() => parseRoute('/x=x; } server { listen 80'), ConfigError)
  t.throws(() => parseRoute('evil.com;}=web:80'), ConfigError)
  const base = parseRoute('/=web:80')
  const hostile: Array<Partial<Route>> = [
    { service: 'x; } server { listen 80' },
    { host: 'a.com; }' },
    { pathPrefix: '/a { return 200; }' },
    { pathPrefix: '/a%2F' },
    { pathPrefix: '/a%5c' },
    { pathPrefix: '/a%0A' },
    { tag: 'v1;' },
    { datacenter: 'dc1 }' },
    { port: 0 },
  ]
  for (const h of hostile) {
    t.equal(
      codeOf(() => renderNginxConfig(renderOptions({ routes: [{ ...base, ...h }] }))),
      'CLB_NGINX_UNSAFE_NAME',
      JSON.stringify(h),
    )
  }
  t.equal(
    codeOf(() => renderNginxConfig(renderOptions({ routes: [base], domain: 'consul; }' }))),
    'CLB_NGINX_UNSAFE_NAME',
  )
  t.equal(
    codeOf(() => renderNginxConfig(renderOptions({ routes: [base], listen: '80; }' }))),
    'CLB_NGINX_UNSAFE_NAME',
  )
  t.equal(
    codeOf(() =>
      renderNginxConfig(renderOptions({ routes: [base], dns: [{ host: '1.2.3.4;', port: 53, label: '1.2.3.4;:53' }] })),
    ),
    'CLB_NGINX_UNSAFE_NAME',
  )
  const labelled = renderNginxConfig(
    renderOptions({
      routes: [base],
      dns: [{ host: '127.0.0.1', port: 8600, label: '127.0.0.1:8600; } server { listen 81; ' }],
    }),
  )
  t.notMatch(
    labelled,
    /listen 81/,
    'a DNS server is written from its checked host and port, never from its free-text label',
  )
  t.match(labelled, 'resolver 127.0.0.1:8600 valid=5s ipv6=off;')
  t.match(
    renderNginxConfig(renderOptions({ routes: [base], dns: [{ host: '::1', port: 8600, label: 'x' }] })),
    'resolver [::1]:8600 valid=',
  )
  t.equal(
    codeOf(() =>
      renderNginxConfig(renderOptions({ routes: [base], keepalive: '16; } server { listen 81' as unknown as number })),
    ),
    'CLB_NGINX_UNSAFE_NAME',
    'numbers are checked too',
  )
  t.equal(
    codeOf(() => renderNginxConfig(renderOptions({ routes: [base], resolverValidS: 1.5 }))),
    'CLB_NGINX_UNSAFE_NAME',
  )
  const text = renderNginxConfig(renderOptions({ routes: [{ ...base, source: 'web\n} server { listen 81; }' }] }))
  t.notMatch(text, /\n\} server \{ listen 81/, 'a newline in a route source cannot end its comment')
  t.equal(
    codeOf(() => renderNginxConfig(renderOptions({ mode: 'catalog', catalogPort: 80 }), ['x; } server { listen 80'])),
    'CLB_NGINX_UNSAFE_NAME',
    'the renderer re-checks catalog names too',
  )
})

t.test('catalog selection drops names Consul accepts but nginx must not see', async (t) => {
  const sel = selectCatalogServices({
    web: [],
    'x; } server { listen 80': [],
    consul: [],
    Web: [],
    api: ['a b; }'],
    under_score: [],
    'dotted.name': [],
    cost$var: [],
  })
  t.same(sel.services, ['api', 'under_score', 'web'], 'an underscore is a name Consul DNS answers for')
  t.same(
    sel.rejected.map((r) => r.name),
    ['cost$var', 'dotted.name', 'x; } server { listen 80'],
  )
})

t.test('the config names the bad field', async (t) => {
  const fails = (sources: Parameters<typeof loadNginxConfig>[0]) => {
    try {
      loadNginxConfig(sources)
      return null
    } catch (e) {
      t.type(e, ConfigError)
      return (e as ConfigError).field
    }
  }
  t.equal(fails({ flags: { routes: ['/=web:80'], watch: true } }), 'watch')
  t.equal(fails({ flags: { mode: 'catalog', watch: true } }), 'out')
  t.equal(fails({ flags: { routes: ['/=web:80'], listen: '80;' } }), 'listen')
  t.equal(fails({ flags: { mode: 'resolver' } }), 'routes')
  t.match(fails({ flags: { routes: ['/=web:80'], resolverTimeoutS: '0' } }), /resolver-timeout-s/)
  t.match(
    fails({ flags: { routes: ['/=web:80'], nginxVersion: 'latest' } }),
    /nginxVersion|nginx-version/,
    'a bad --nginx-version fails at start-up (exit 2), not at the first emission',
  )
  t.match(
    fails({ flags: { routes: ['/=web:80'], catalogPort: '80' } }),
    /catalogPort|catalog-port/,
    '--catalog-port outside the catalog mode is not silently ignored',
  )
  t.equal(
    loadNginxConfig({
      flags: { routes: ['/=web:80'] },
      env: { CONSUL_HTTP_ADDR: 'consul:8501', CONSUL_HTTP_SSL: 'true' },
    }).consul.address,
    'https://consul:8501',
    'CONSUL_HTTP_SSL is honoured, as by the registrator',
  )
  const cfg = loadNginxConfig({
    flags: { routes: ['/=web:80'] },
    env: { CONSUL_HTTP_ADDR: '127.0.0.1:8501', CONSUL_HTTP_TOKEN: 's3cret' },
  })
  t.equal(cfg.consul.address, 'http://127.0.0.1:8501', 'CONSUL_HTTP_ADDR without a scheme is accepted')
  t.equal(cfg.consul.token, 's3cret')
  t.equal(cfg.listen, '8080')
  t.equal(cfg.mode, 'resolver')
  const shared = loadNginxConfig({ object: { routes: ['/=web:80'], admin: 'off', balancer: 'p2c', mode: 'catalog' } })
  t.equal(shared.mode, 'catalog', 'a config file shared with serve is accepted')
})

t.test('--full wraps the http text in a whole nginx.conf without modules', async (t) => {
  const text = renderNginxConfig(renderOptions({ routes: ROUTES, full: true }))
  t.match(text, /^# Whole nginx.conf/)
  t.match(text, '\nhttp {\n    # Written by consul-lb nginx')
  t.notMatch(text, /load_module|include/)
})

t.test('routes that all name a host: other hosts and uncovered paths get 404, as from consul-lb serve', async (t) => {
  const text = renderNginxConfig(
    renderOptions({ routes: [parseRoute('api.example.com=api:5000'), parseRoute('shop.example.com/cart=cart:8000')] }),
  )
  t.match(
    text.slice(text.indexOf('\nserver {')),
    /^\nserver \{\n {4}listen 8080;\n {4}server_name _;\n(?: {4}[a-z_]+ [^\n]+;\n)+\n {4}# No route covers other paths\.\n {4}location \/ \{\n {8}return 404;\n {4}\}\n\}/,
    'the first server of the port (its default) answers 404',
  )
  const shop = text.slice(text.indexOf('# Host shop.example.com.'))
  t.match(shop, 'location / {\n        return 404;', 'the host without a / route answers 404 for other paths')
  t.equal(text.match(/return 404;/g)?.length, 2, 'api.example.com has its own / route')
  const catalog = renderNginxConfig(renderOptions({ mode: 'catalog', catalogPort: 80 }), ['web'])
  t.match(catalog, 'location / {\n        return 404;', "catalog mode: / is not nginx's welcome page")
})

t.test(
  'the resolver mode does not ask nginx for its version: an nginx whose -v cannot be read does not stop it',
  async (t) => {
    const dir = tempDir(t, 'consul-lb-fake-nginx-')
    const bin = join(dir, 'nginx')
    writeFileSync(bin, '#!/bin/sh\necho "nginx version: mystery-fork" >&2\n')
    chmodSync(bin, 0o755)
    let written = ''
    await emitNginxConfig(
      loadNginxConfig({ flags: { routes: ['/=web:80'], nginxBin: bin } }),
      silentLogger(),
      async (text) => {
        written = text
      },
    )
    t.match(written, 'set $endpoint web.service.consul;')
    const err = await emitNginxConfig(
      loadNginxConfig({ flags: { mode: 'upstream', routes: ['/=web'], nginxBin: bin } }),
      silentLogger(),
      async () => {},
    ).catch((e: unknown) => e)
    t.equal((err as NginxError).code, 'CLB_NGINX_VERSION_UNKNOWN', 'the upstream mode still needs it, and says so')
  },
)

t.test(
  'path prefixes with %XX escapes: written as the bytes nginx matches; slashes and control bytes refused',
  async (t) => {
    const text = renderNginxConfig(
      renderOptions({ routes: [parseRoute('/caf%C3%A9=cafe:80,strip'), parseRoute('/a%3Bb%7e=semi:80')] }),
    )
    t.match(text, 'location ~ ^/caf\\xC3\\xA9(?:/|$) {')
    t.match(text, 'rewrite ^/caf\\xC3\\xA9/?(.*)$ /$1 break;')
    t.match(text, 'location ~ ^/a\\x3Bb~(?:/|$) {', 'an escaped `;` never reaches the text as `;`; `%7e` is `~`')
    t.notMatch(text, /location[^\n]*;b/)
  },
)
