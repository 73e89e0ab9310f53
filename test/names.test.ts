import t from 'tap'
import { silentLogger } from '../src/log.js'
import {
  emitNginxConfig,
  parseNginxVersion,
  renderNginxConfig,
  renderNginxHttp,
  renderOptionsFrom,
} from '../src/nginx/index.js'
import { selectCatalogServices } from '../src/nginx/validate.js'
import { isDnsTag, isHostName, isServiceName } from '../src/routes/names.js'
import { parseRoute } from '../src/routes/route.js'
import { startBackend } from './helpers/backends.js'
import { startConsul } from './helpers/consul.js'
import { http } from './helpers/http.js'
import {
  catalogConfig,
  dnsOf,
  freePortOn,
  type NginxProcess,
  nginxBinary,
  renderOptions,
  sleep,
  startNginx,
} from './helpers/nginx.js'
import { startTestProxy } from './helpers/proxy.js'

/**
 * Consul names as people write them: `zhibo_service` (the source scenario) is answered by Consul 1.22.7's DNS with
 * its three A records although Consul logs that it "will not be discoverable". It must be routable by path and by Host
 * through `serve`, and through the nginx configs the emitter writes (nginx 1.22 resolver mode, nginx 1.30 upstream
 * and catalog modes), while names that are nginx syntax stay refused.
 */

const V130 = parseNginxVersion('nginx/1.30.6')
const ADDRS = ['127.0.0.1', '127.0.0.2', '127.0.0.3']

t.test('names: underscores are service names, tags, datacenters and Host labels; config syntax is not', async (t) => {
  for (const ok of ['zhibo_service', 'my_app', '_private', 'a__b', 'My_App', 'web-1', 'x'])
    t.ok(isServiceName(ok), `${ok} is a service name`)
  for (const bad of ['a.b', 'a$b', 'a~b', 'a*b', 'a%b', 'x; } server { listen 80', '-web', 'web-', '', 'a'.repeat(64)])
    t.notOk(isServiceName(bad), `${JSON.stringify(bad)} is refused`)
  t.ok(isHostName('zhibo_service.service.consul'))
  t.ok(isHostName('*.zhibo_apps.example.com'))
  t.notOk(isHostName('a$b.example.com'))
  t.same(parseRoute('zhibo_service.example.com/live=zhibo_service,tag=v_2,dc=dc_1').service, 'zhibo_service')
  t.throws(() => parseRoute('/x=a$b:80'), { code: 'CLB_CONFIG_INVALID' })
  const sel = selectCatalogServices({ zhibo_service: [], 'x;y': [], 'a.b': [], web: [] })
  t.same(sel.services, ['web', 'zhibo_service'])
  t.same(
    sel.rejected.map((r) => r.name),
    ['a.b', 'x;y'],
  )
})

t.test('the emitter gives service `a__tag_b` and service `a` with tag `b` different upstreams', async (t) => {
  const text = renderNginxConfig(
    renderOptions({ mode: 'upstream', routes: [parseRoute('/one=a__tag_b'), parseRoute('/two=a,tag=b')] }),
  )
  t.match(text, 'upstream consul_a__tag_b.on.8080 {')
  t.match(text, 'upstream consul_a.tag.b.on.8080 {')
  t.match(text, 'server service.consul service=b.a resolve;', 'tagged: the dotted <tag>.<svc> SRV form')
})

t.test('zhibo_service through serve, nginx 1.22 (resolver) and nginx 1.30 (upstream, catalog)', async (t) => {
  nginxBinary('1.22')
  nginxBinary('1.30')
  const consul = await startConsul(t, { enableTruncate: true })
  // One port on three loopback addresses: the resolver mode reads A records, which carry no port.
  const port = await freePortOn(ADDRS)
  for (const [i, addr] of ADDRS.entries()) {
    await startBackend(`zhibo-${i + 1}`, addr, port, t)
    await consul.register({
      ID: `zhibo-${i + 1}`,
      Name: 'zhibo_service',
      Address: addr,
      Port: port,
      Tags: i === 0 ? ['tcp'] : ['v_2'],
    })
  }
  await consul.waitPassing('zhibo_service', 3)

  /** Backend ids seen over `n` requests; any non-200 counts as `status-<code>`. */
  const reach = async (get: () => Promise<{ status: number; body: string }>, n = 30) => {
    const seen = new Set<string>()
    for (let i = 0; i < n; i++) {
      const r = await get()
      seen.add(r.status === 200 ? r.body : `status-${r.status}`)
    }
    return [...seen].sort()
  }
  const all = ['zhibo-1', 'zhibo-2', 'zhibo-3']

  t.test('serve routes it by path, by a configured Host and by <svc>.service.consul', async (t) => {
    const proxy = await startTestProxy(t, consul, {
      routes: ['/live=zhibo_service', 'zhibo_service.example.com=zhibo_service'],
    })
    t.same(await reach(() => http(proxy.port, '/live/room/1')), all, 'path route: all three instances')
    t.same(
      await reach(() => http(proxy.port, '/', { host: 'zhibo_service.example.com' })),
      all,
      'configured Host route',
    )
    t.same(
      await reach(() => http(proxy.port, '/', { host: 'zhibo_service.service.consul' })),
      all,
      'Host routing of <svc>.service.consul',
    )
    t.same(
      await reach(() => http(proxy.port, '/', { host: 'v_2.zhibo_service.service.consul' })),
      ['zhibo-2', 'zhibo-3'],
      'Host routing with a tag that holds an underscore',
    )
  })

  t.test('nginx 1.22, resolver mode: path and Host routes reach the three A records', async (t) => {
    const routes = [
      parseRoute(`/live=zhibo_service:${port}`),
      parseRoute(`zhibo_service.example.com=zhibo_service:${port}`),
    ]
    const nginx = await startNginx(t, '1.22', (p) =>
      renderNginxHttp(
        renderOptions({ routes, dns: [dnsOf(consul.dnsAddr)], listen: `127.0.0.1:${p}`, resolverValidS: 1 }),
      ),
    )
    t.same(await reach(() => nginx.get('/live/x')), all, 'path route')
    t.same(await reach(() => nginx.get('/', 'zhibo_service.example.com')), all, 'server_name with an underscore')
  })

  t.test('nginx 1.30, upstream mode: SRV of zhibo_service, and a tag named `tcp` keeps its filter', async (t) => {
    const routes = [
      parseRoute('/live=zhibo_service'),
      parseRoute('/tcp=zhibo_service,tag=tcp'),
      parseRoute('zhibo_service.example.com=zhibo_service'),
    ]
    const nginx = await startNginx(t, '1.30', (p) =>
      renderNginxHttp(
        renderOptions({
          mode: 'upstream',
          routes,
          dns: [dnsOf(consul.dnsAddr)],
          listen: `127.0.0.1:${p}`,
          resolverValidS: 1,
          nginxVersion: V130,
        }),
      ),
    )
    await waitServing(nginx, '/live/')
    await waitServing(nginx, '/tcp/')
    t.same(await reach(() => nginx.get('/live/x')), all)
    t.same(await reach(() => nginx.get('/', 'zhibo_service.example.com')), all, 'Host route')
    t.same(
      await reach(() => nginx.get('/tcp/x')),
      ['zhibo-1'],
      'only the instance tagged tcp (the RFC 2782 form `_zhibo_service._tcp` would have matched all three)',
    )
  })

  t.test('nginx 1.30, catalog mode: zhibo_service gets its location', async (t) => {
    const cfgFor = (listen: string) => catalogConfig(consul, listen)
    const emitted = await emitNginxConfig(cfgFor('8080'), silentLogger(), async () => {})
    t.ok(emitted.services?.includes('zhibo_service'), `catalog services: ${emitted.services}`)
    const nginx = await startNginx(t, '1.30', (p) =>
      renderNginxHttp(renderOptionsFrom(cfgFor(`127.0.0.1:${p}`), V130), emitted.services!),
    )
    await waitServing(nginx, '/zhibo_service/')
    t.same(await reach(() => nginx.get('/zhibo_service/x')), all)
  })
})

t.test(
  'a tag may not start with `_`: Consul reads `_a._b` as RFC 2782 (service a), which Host routing would reach',
  async (t) => {
    t.ok(isDnsTag('v_2'))
    t.notOk(isDnsTag('_a'), 'a leading underscore')
    t.notOk(isDnsTag('_'))
    t.ok(isServiceName('_b'), 'a service may still start with one (a one-label lookup is never RFC 2782)')
    t.throws(() => parseRoute('/x=_b,tag=_a'), { code: 'CLB_CONFIG_INVALID', message: /no underscore first/ })

    // Consul 1.22.7 answers `_secret._pub.service.consul` with service `secret` tagged `pub`, and
    // `_consul._tcp.service.consul` with its own servers' RPC port: without the rule, the Host below reaches `secret`.
    const consul = await startConsul(t)
    const pub = await startBackend('pub', '127.0.0.1', 0, t)
    const secret = await startBackend('secret', '127.0.0.1', 0, t)
    await consul.register({ ID: 'pub', Name: '_pub', Tags: ['_secret'], Address: '127.0.0.1', Port: pub.port })
    await consul.register({ ID: 'secret', Name: 'secret', Tags: ['pub'], Address: '127.0.0.1', Port: secret.port })
    await consul.waitPassing('secret', 1)
    const proxy = await startTestProxy(t, consul, { allowServices: ['_pub'] })
    const viaHost = (host: string) => http(proxy.port, '/v1/status/leader', { host })
    t.equal((await viaHost('_pub.service.consul')).body, 'pub', 'the allowed service is reached by its own name')
    const smuggled = await viaHost('_secret._pub.service.consul')
    t.not(smuggled.body, 'secret', 'tag `_secret` of the allowed `_pub` does not reach service `secret`')
    t.equal(smuggled.status, 404)
    t.equal(secret.hits, 0, 'the service outside allowServices saw nothing')
    const open = await startTestProxy(t, consul, {})
    const rpc = await http(open.port, '/', { host: '_consul._tcp.service.consul' })
    t.equal(rpc.status, 404, '`_consul._tcp` is no way past the guard of the `consul` service (its server RPC port)')
  },
)

/** nginx resolves upstream servers in the background after start: wait until the upstream answers. */
async function waitServing(nginx: NginxProcess, path: string): Promise<void> {
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    if ((await nginx.get(path)).status === 200) return
    await sleep(100)
  }
  throw new Error(`nginx never served ${path}:\n${nginx.log.slice(-3000)}`)
}
