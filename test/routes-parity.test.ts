import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { renderNginxHttp } from '../src/nginx/index.js'
import { parseRoute } from '../src/routes/route.js'
import { startBackend } from './helpers/backends.js'
import { type ConsulAgent, startConsul } from './helpers/consul.js'
import { http } from './helpers/http.js'
import { dnsOf, nginxBinary, renderOptions, startNginx } from './helpers/nginx.js'
import { startTestProxy } from './helpers/proxy.js'

/**
 * Sends each (Host, path) through consul-lb serve and through nginx running the config the emitter writes from the
 * same routes, and asserts both reach the same service with the same path (or both refuse with a 4xx).
 */
async function assertSameRouting(
  t: Test,
  consul: ConsulAgent,
  routeTexts: string[],
  cases: [string, string][],
): Promise<void> {
  const services = [...new Set(routeTexts.map((r) => /=([a-z0-9]+)/.exec(r)![1]!))]
  const ports: Record<string, number> = {}
  const backends: Record<string, Awaited<ReturnType<typeof startBackend>>> = {}
  for (const s of services) {
    // Each service's one backend answers with its id: the id names the service a request reached.
    const b = await startBackend(s, '127.0.0.1', 0, t)
    backends[s] = b
    ports[s] = b.port
    await consul.register({ ID: s, Name: s, Address: '127.0.0.1', Port: b.port })
  }
  const text = routeTexts.map((r) => r.replace(/=([a-z0-9]+)/, (_m, s: string) => `=${s}:${ports[s]}`))
  const routes = text.map((r) => parseRoute(r))
  const proxy = await startTestProxy(t, consul, { routes: text, hostRouting: false })
  const nginx = await startNginx(t, '1.22', (p, dir) => {
    // A packaged nginx has a welcome page under <prefix>/html: a path no route covers must not reach it.
    mkdirSync(join(dir, 'html'), { recursive: true })
    writeFileSync(join(dir, 'html', 'index.html'), 'Welcome to nginx!\n')
    return renderNginxHttp(
      renderOptions({ routes, dns: [dnsOf(consul.dnsAddr)], listen: `127.0.0.1:${p}`, resolverValidS: 1 }),
    )
  })
  for (const [host, path] of cases) {
    // The service that answered, and the path it was asked for (prefix stripped or not).
    const who = async (port: number): Promise<string> => {
      const r = await http(port, `${path}?q=1`, { host })
      return r.status === 200 && backends[r.body]
        ? `${r.body} ${backends[r.body]!.last!.url}`
        : `status ${r.status >= 400 && r.status < 500 ? '4xx' : r.status}`
    }
    const a = await who(proxy.port)
    const b = await who(nginx.port)
    t.equal(a, b, `${host}${path}: consul-lb → ${a}, nginx → ${b}`)
  }
}

t.test(
  'the same routes send the same requests to the same service in consul-lb serve and in the nginx config it emits',
  async (t) => {
    nginxBinary('1.22')
    const consul = await startConsul(t)
    await assertSameRouting(
      t,
      consul,
      [
        'shop.example.com/cart=cart',
        'shop.example.com=shop',
        '/api=api,strip',
        '/api/v2=apiv2',
        'shop.example.com/api=shopapi',
        '*.apps.example.com=apps',
        '/health=health',
      ],
      [
        ['shop.example.com', '/cart/1'],
        ['shop.example.com', '/carts'],
        ['shop.example.com', '/api/x'],
        ['shop.example.com', '/api/v2/x'],
        ['other.example.com', '/api/x'],
        ['other.example.com', '/api/v2'],
        ['x.apps.example.com', '/'],
        ['x.apps.example.com', '/api/y'],
        ['shop.example.com', '/health'],
        ['other.example.com', '/nothing'],
      ],
    )
  },
)

t.test(
  "routes that all name a host: other hosts, and paths no route covers, are refused by both (not sent to the first host, not served from nginx's html folder)",
  async (t) => {
    nginxBinary('1.22')
    const consul = await startConsul(t)
    await assertSameRouting(
      t,
      consul,
      ['api.example.com=api', 'shop.example.com/cart=cart'],
      [
        ['api.example.com', '/x'],
        ['shop.example.com', '/cart/1'],
        ['other.example.com', '/x'],
        ['other.example.com', '/'],
        ['shop.example.com', '/'],
        ['shop.example.com', '/index.html'],
        ['shop.example.com', '/other'],
      ],
    )
  },
)
