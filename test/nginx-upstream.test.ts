import t from 'tap'
import { silentLogger } from '../src/log.js'
import { emitNginxConfig, parseNginxVersion, renderNginxHttp, renderOptionsFrom } from '../src/nginx/index.js'
import { parseRoute } from '../src/routes/route.js'
import { startBackend } from './helpers/backends.js'
import { startConsul } from './helpers/consul.js'
import {
  catalogConfig,
  dnsOf,
  type NginxProcess,
  renderOptions,
  sleep,
  spread,
  startNginx,
  wsEcho,
} from './helpers/nginx.js'
import { freePort } from './helpers/ports.js'

/**
 * The upstream mode (`server service.consul service=web resolve;`) on nginx 1.30 from Debian testing: nginx reads
 * SRV records, so every instance may have its own port (as Registrator publishes them).
 */

const V130 = parseNginxVersion('nginx/1.30.6')

/** nginx resolves upstream servers in the background after start: wait until the upstream answers. */
async function waitServing(nginx: NginxProcess, path = '/'): Promise<void> {
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    if ((await nginx.get(path)).status === 200) return
    await sleep(100)
  }
  throw new Error(`nginx never served ${path}:\n${nginx.log.slice(-3000)}`)
}

for (const enableTruncate of [true, false]) {
  t.test(
    `upstream resolve mode, ten instances on ten SRV ports, enable_truncate ${enableTruncate ? 'on: all ten' : 'off: at most 3'}`,
    async (t) => {
      const consul = await startConsul(t, { enableTruncate })
      let upstreamConnections = 0
      const ports: number[] = []
      for (let i = 1; i <= 10; i++) {
        const port = await freePort()
        ports.push(port)
        const b = await startBackend(`web-${i}`, '127.0.0.1', port, t)
        b.server.on('connection', () => {
          upstreamConnections++
        })
        await consul.register({
          ID: `web-${i}`,
          Name: 'web',
          Address: '127.0.0.1',
          Port: port,
          Tags: i <= 2 ? ['v2'] : [],
        })
      }
      await consul.waitPassing('web', 10)
      // `/fixed` is the upstream form with a fixed port: `server web.service.consul:PORT resolve;` (A records).
      const routes = [
        parseRoute('/=web'),
        parseRoute('/v2=web,tag=v2,strip'),
        parseRoute('/ws=web,ws'),
        parseRoute(`/fixed=web:${ports[0]}`),
      ]
      const nginx = await startNginx(t, '1.30', (p) =>
        renderNginxHttp(
          renderOptions({
            mode: 'upstream',
            routes,
            dns: [dnsOf(consul.dnsAddr)],
            listen: `127.0.0.1:${p}`,
            resolverValidS: 300,
            nginxVersion: V130,
          }),
        ),
      )
      await waitServing(nginx)
      const before = upstreamConnections
      const seen = await spread(nginx, 100)
      const opened = upstreamConnections - before
      t.ok(opened <= seen.size * 2, `upstream keep-alive: ${opened} new upstream connections for 100 requests`)
      t.comment(
        `enable_truncate=${enableTruncate}: ${seen.size} distinct instances in 100 requests ${JSON.stringify(Object.fromEntries(seen))}`,
      )
      if (enableTruncate) t.equal(seen.size, 10, 'all ten instances, each on its own port, get traffic')
      else t.equal(seen.size, 3, 'a capped SRV answer gives nginx 3 instances')
      t.notOk(
        [...seen.keys()].some((k) => k.startsWith('status-')),
        'no errors',
      )

      await waitServing(nginx, '/v2/x')
      const tagged = await spread(nginx, 20, '/v2/x')
      t.same(
        [...tagged.keys()].sort(),
        ['web-1', 'web-2'],
        'a tagged route reaches only the tagged instances (v2.web.service SRV)',
      )
      const echo = JSON.parse((await nginx.get('/v2/echo?id=1', 'shop.example.com')).body) as {
        url: string
        headers: Record<string, string>
      }
      t.equal(echo.url, '/echo?id=1', 'strip removes the prefix and keeps the query')
      t.equal(echo.headers.host, 'shop.example.com', 'Host is passed through')
      t.equal(echo.headers['x-real-ip'], '127.0.0.1')
      t.equal(echo.headers['x-forwarded-for'], '127.0.0.1')
      t.equal(echo.headers['x-forwarded-proto'], 'http')

      await waitServing(nginx, '/fixed/x')
      t.same(
        [...(await spread(nginx, 5, '/fixed/x')).keys()],
        ['web-1'],
        'a fixed-port upstream reaches the instance on that port',
      )

      t.match(await wsEcho(t, nginx.port, '/ws/chat'), /^web-\d+:hello$/, 'a ws route carries WebSocket upgrades')
    },
  )
}

t.test(
  'catalog mode on nginx 1.30: one location per service, SRV ports of registrator-style random host ports',
  async (t) => {
    const consul = await startConsul(t, { enableTruncate: true })
    for (const id of ['alpha-1', 'alpha-2', 'beta-1']) {
      const port = await freePort()
      await startBackend(id, '127.0.0.1', port, t)
      await consul.register({ ID: id, Name: id.split('-')[0]!, Address: '127.0.0.1', Port: port })
    }
    await consul.waitPassing('alpha', 2)
    const cfgFor = (listen: string) => catalogConfig(consul, listen)
    // The emitter as the CLI runs it: version from `nginx -v` of the 1.30 wrapper, catalog from Consul, nginx -t.
    const emitted = await emitNginxConfig(cfgFor('8080'), silentLogger(), async () => {})
    t.same(emitted.services, ['alpha', 'beta'])
    t.same(emitted.warnings, [], 'enable_truncate is on: no warning')
    t.match(emitted.text, 'server service.consul service=alpha resolve;')
    t.match(emitted.text, 'stub_status;')

    const nginx = await startNginx(t, '1.30', (p) =>
      renderNginxHttp(renderOptionsFrom(cfgFor(`127.0.0.1:${p}`), V130), emitted.services!),
    )
    await waitServing(nginx, '/alpha/')
    const alpha = await spread(nginx, 20, '/alpha/')
    t.same([...alpha.keys()].sort(), ['alpha-1', 'alpha-2'], 'both alpha instances, each on its own port')
    await waitServing(nginx, '/beta/')
    t.equal((await nginx.get('/beta/x')).body, 'beta-1')
    t.equal((await nginx.get('/nginx_status')).status, 200, 'stub_status answers on loopback')
  },
)
