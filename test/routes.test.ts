import t from 'tap'
import type { ConfigError } from '../src/errors.js'
import { hostOf, prefixMatches, Router, stripPath } from '../src/proxy/router.js'
import { parseRoute } from '../src/routes/route.js'

t.test('route forms from the README parse into the route model', async (t) => {
  t.match(parseRoute('mydemo.example.com=mydemo'), {
    host: 'mydemo.example.com',
    pathPrefix: '/',
    service: 'mydemo',
    port: null,
    stripPrefix: false,
  })
  t.match(parseRoute('mydemo.example.com=mydemo:5000'), { host: 'mydemo.example.com', service: 'mydemo', port: 5000 })
  t.match(parseRoute('/api=api,strip'), { host: null, pathPrefix: '/api', service: 'api', stripPrefix: true })
  t.match(parseRoute('shop.example.com/cart=cart'), { host: 'shop.example.com', pathPrefix: '/cart', service: 'cart' })
  t.match(parseRoute('Shop.Example.com/cart/=cart,tag=v2,dc=dc2,ws'), {
    host: 'shop.example.com',
    pathPrefix: '/cart',
    tag: 'v2',
    datacenter: 'dc2',
    websocket: true,
  })
  t.match(parseRoute('*.example.com=web'), { host: '*.example.com' })
})

t.test('bad routes fail with CLB_CONFIG_INVALID naming the flag and the expected form', async (t) => {
  const bad = [
    'x',
    '=svc',
    'host=',
    'host=svc:abc',
    'host=svc:70000',
    'host=bad_name!',
    'ho st=svc',
    '/a b=svc',
    'x; } server { listen 80=svc',
    'h=svc,unknown',
    '/=svc,strip',
    'h=svc,tag=a.b',
  ]
  for (const text of bad) {
    const err = t.throws(() => parseRoute(text, '--route')) as ConfigError
    t.equal(err.code, 'CLB_CONFIG_INVALID', text)
    t.match(err.message, /^--route "/, `${text}: message names the flag`)
  }
  const err = t.throws(() => parseRoute('x')) as ConfigError
  t.match(err.message, /expected \[HOST\]\[\/PATH\]=SERVICE\[:PORT\]/)
})

t.test('prefixes match on segment boundaries and strip cleanly', async (t) => {
  t.ok(prefixMatches('/api', '/api'))
  t.ok(prefixMatches('/api/x', '/api'))
  t.ok(prefixMatches('/api?x=1', '/api'))
  t.notOk(prefixMatches('/apix', '/api'))
  t.ok(prefixMatches('/anything', '/'))
  t.equal(stripPath('/api/users?x', 4), '/users?x')
  t.equal(stripPath('/api', 4), '/')
  t.equal(stripPath('/api?x', 4), '/?x')
})

t.test('Host headers lose port and case', async (t) => {
  t.equal(hostOf('Web.Service.Consul:8080'), 'web.service.consul')
  t.equal(hostOf('[::1]:8080'), '[::1]')
  t.equal(hostOf('example.com.'), 'example.com')
  t.equal(hostOf(undefined), '')
})

t.test(
  'configured routes: the most specific wins (as in the nginx configs the emitter writes), then Host <svc>.service.consul forms, then nothing',
  async (t) => {
    const routes = [
      'shop.example.com/cart=cart',
      'shop.example.com=shop',
      '/api=api,strip',
      '/api/v2=apiv2',
      '*.apps.example.com=apps',
      'shop.example.com/api=shopapi',
    ].map((r) => parseRoute(r))
    const r = new Router(
      routes.map((route) => ({ route, target: route.service })),
      { enabled: true, domain: 'consul', allowServices: [], allowConsulService: false },
    )
    t.equal(r.matchRoute('shop.example.com', '/cart/1')?.target, 'cart')
    t.equal(r.matchRoute('shop.example.com', '/carts')?.target, 'shop', 'segment boundary: /carts is not /cart')
    t.equal(
      r.matchRoute('shop.example.com', '/api/x')?.target,
      'shopapi',
      "the host's own /api beats the host-less /api",
    )
    t.equal(
      r.matchRoute('shop.example.com', '/api/v2/x')?.target,
      'apiv2',
      'a longer host-less prefix beats the host route',
    )
    t.equal(r.matchRoute('other.example.com', '/api/x')?.target, 'api', 'host-less routes apply to every host')
    t.equal(r.matchRoute('other.example.com', '/api/x')?.stripLength, 4)
    t.equal(r.matchRoute('other.example.com', '/api/v2')?.target, 'apiv2', 'longest prefix, whatever the order given')
    t.equal(r.matchRoute('x.apps.example.com', '/')?.target, 'apps')
    t.equal(r.matchRoute('x.apps.example.com', '/api')?.target, 'api')
    t.equal(r.matchRoute('other.example.com', '/'), null)
    t.match(r.decideHost('web.service.consul'), { kind: 'service', service: 'web', tag: null, datacenter: null })
    t.match(r.decideHost('v2.web.service.consul'), { kind: 'service', service: 'web', tag: 'v2', datacenter: null })
    t.match(r.decideHost('web.service.dc2.consul'), { kind: 'service', service: 'web', tag: null, datacenter: 'dc2' })
    t.match(r.decideHost('v2.web.service.dc2.consul'), {
      kind: 'service',
      service: 'web',
      tag: 'v2',
      datacenter: 'dc2',
    })
    for (const h of [
      'node1.node.consul',
      '7f000001.addr.dc1.consul',
      'q.query.consul',
      'web.service.example.com',
      'consul',
      'a.b.c.d.service.consul',
    ]) {
      t.same(r.decideHost(h), { kind: 'none' }, `${h} is not followed`)
    }
    t.equal(r.decideHost('consul.service.consul').kind, 'forbidden', "Consul's own API is refused by default")
  },
)

t.test(
  'wildcards: an exact host name beats a wildcard, the longest wildcard beats a shorter one (nginx server_name rules)',
  async (t) => {
    const routes = [
      'www.example.com/static=static',
      '*.example.com/api=api',
      '*.b.example.com=bsvc',
      '*.example.com=any',
      '/health=health',
    ].map((r) => parseRoute(r))
    const r = new Router(
      routes.map((route) => ({ route, target: route.service })),
      { enabled: false, domain: 'consul', allowServices: [], allowConsulService: false },
    )
    t.equal(r.matchRoute('www.example.com', '/static/x')?.target, 'static')
    t.equal(
      r.matchRoute('www.example.com', '/api/1'),
      null,
      'www.example.com has its own routes: wildcard ones do not apply (as nginx picks one server)',
    )
    t.equal(r.matchRoute('www.example.com', '/health')?.target, 'health', 'host-less routes apply everywhere')
    t.equal(r.matchRoute('x.example.com', '/api/1')?.target, 'api')
    t.equal(r.matchRoute('x.example.com', '/other')?.target, 'any')
    t.equal(r.matchRoute('x.b.example.com', '/api')?.target, 'bsvc', 'the longest wildcard takes the host')
    t.equal(r.matchRoute('example.com', '/'), null, '*.example.com does not cover example.com')
  },
)

t.test('an allow-list limits Host routing; allowConsulService opens the consul service', async (t) => {
  const r = new Router<string>([], {
    enabled: true,
    domain: 'consul',
    allowServices: ['web'],
    allowConsulService: true,
  })
  t.equal(r.decideHost('web.service.consul').kind, 'service')
  t.equal(r.decideHost('db.service.consul').kind, 'forbidden')
  const off = new Router<string>([], { enabled: false, domain: 'consul', allowServices: [], allowConsulService: false })
  t.equal(off.decideHost('web.service.consul').kind, 'none')
  const open = new Router<string>([], { enabled: true, domain: 'consul', allowServices: [], allowConsulService: true })
  t.equal(open.decideHost('consul.service.consul').kind, 'service')
})
