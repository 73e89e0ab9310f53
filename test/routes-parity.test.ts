import t from 'tap'
import { renderNginxHttp } from '../src/nginx/index.js'
import { parseRoute } from '../src/routes/route.js'
import { startBackend } from './helpers/backends.js'
import { startConsul } from './helpers/consul.js'
import { dnsOf, nginxBinary, renderOptions, startNginx } from './helpers/nginx.js'
import { startTestProxy } from './helpers/proxy.js'
import { http } from './helpers/http.js'

t.test('the same routes send the same requests to the same service in consul-lb serve and in the nginx config it emits', async (t) => {
  nginxBinary('1.22')
  const consul = await startConsul(t)
  const services = ['cart', 'shop', 'api', 'apiv2', 'shopapi', 'apps', 'health']
  const ports: Record<string, number> = {}
  const backends: Record<string, Awaited<ReturnType<typeof startBackend>>> = {}
  for (const s of services) {
    // Each service's one backend answers with its id: the id names the service a request reached.
    const b = await startBackend(s, '127.0.0.1', 0, t)
    backends[s] = b
    ports[s] = b.port
    await consul.register({ ID: s, Name: s, Address: '127.0.0.1', Port: b.port })
  }
  const text = ['shop.example.com/cart=cart', 'shop.example.com=shop', '/api=api,strip', '/api/v2=apiv2', 'shop.example.com/api=shopapi', '*.apps.example.com=apps', '/health=health']
    .map((r) => r.replace(/=([a-z0-9]+)/, (_m, s: string) => `=${s}:${ports[s]}`))
  const routes = text.map((r) => parseRoute(r))
  const proxy = await startTestProxy(t, consul, { routes: text, hostRouting: false })
  const nginx = await startNginx(t, '1.22', (p) => renderNginxHttp(renderOptions({ routes, dns: [dnsOf(consul.dnsAddr)], listen: `127.0.0.1:${p}`, resolverValidS: 1 })))
  const cases: [string, string][] = [
    ['shop.example.com', '/cart/1'], ['shop.example.com', '/carts'], ['shop.example.com', '/api/x'], ['shop.example.com', '/api/v2/x'],
    ['other.example.com', '/api/x'], ['other.example.com', '/api/v2'], ['x.apps.example.com', '/'], ['x.apps.example.com', '/api/y'],
    ['shop.example.com', '/health'], ['other.example.com', '/nothing'],
  ]
  for (const [host, path] of cases) {
    // The service that answered, and the path it was asked for (prefix stripped or not).
    const who = async (port: number): Promise<string> => {
      const r = await http(port, `${path}?q=1`, { host })
      return r.status === 200 ? `${r.body} ${backends[r.body]!.last!.url}` : `status ${r.status >= 400 && r.status < 500 ? '4xx' : r.status}`
    }
    const a = await who(proxy.port)
    const b = await who(nginx.port)
    t.equal(a, b, `${host}${path}: consul-lb → ${a}, nginx → ${b}`)
  }
})
