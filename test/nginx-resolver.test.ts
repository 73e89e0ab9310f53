import t from 'tap'
import { loadNginxConfig } from '../src/config/nginx.js'
import { silentLogger } from '../src/log.js'
import { emitNginxConfig, renderNginxHttp, TRUNCATE_WARNING } from '../src/nginx/index.js'
import { parseRoute } from '../src/routes/route.js'
import { startBackend } from './helpers/backends.js'
import { startConsul } from './helpers/consul.js'
import { dnsOf, freePortOn, nginxBinary, renderOptions, sleep, spread, startNginx, wsEcho } from './helpers/nginx.js'

/**
 * The resolver mode against a real nginx 1.22 and a real Consul agent. Resolver mode reads A records only, so the
 * backends share one port on distinct loopback addresses.
 */

const ADDRS = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5']

t.test('nginx follows Consul without a reload: three backends, a fourth joins, one leaves after valid=', async (t) => {
  const consul = await startConsul(t, { enableTruncate: true })
  const port = await freePortOn(ADDRS)
  for (const [i, addr] of ADDRS.entries()) await startBackend(`web-${i + 1}`, addr, port, t)
  for (let i = 0; i < 3; i++) await consul.register({ ID: `web-${i + 1}`, Name: 'web', Address: ADDRS[i]!, Port: port })
  await consul.waitPassing('web', 3)

  const nginx = await startNginx(t, '1.22', (p) =>
    renderNginxHttp(
      renderOptions({
        routes: [parseRoute(`/=web:${port}`), parseRoute(`/ws=web:${port},ws,strip`)],
        dns: [dnsOf(consul.dnsAddr)],
        listen: `127.0.0.1:${p}`,
        resolverValidS: 1,
      }),
    ),
  )
  const masterPid = nginx.pid

  // A WebSocket route of the resolver mode carries the upgrade (strip form: set, rewrite … break, variable proxy_pass).
  t.match(
    await wsEcho(t, nginx.port, '/ws/chat'),
    /^web-[123]:hello$/,
    'a ws route carries WebSocket upgrades in the resolver mode',
  )

  const first = await spread(nginx, 60)
  t.same(
    [...first.keys()].sort(),
    ['web-1', 'web-2', 'web-3'],
    `all three get traffic (${JSON.stringify(Object.fromEntries(first))})`,
  )

  await consul.register({ ID: 'web-4', Name: 'web', Address: ADDRS[3]!, Port: port })
  await consul.waitPassing('web', 4)
  let sawFourth = false
  for (let round = 0; round < 20 && !sawFourth; round++) {
    sawFourth = (await spread(nginx, 20)).has('web-4')
    if (!sawFourth) await sleep(250)
  }
  t.ok(sawFourth, 'a fourth instance registered later gets traffic')
  t.equal(nginx.pid, masterPid, 'same nginx master, never signalled')
  t.notMatch(nginx.log, /SIGHUP|reconfiguring/, 'no reload happened')

  await consul.deregister('web-2')
  await consul.waitPassing('web', 3)
  // valid=1s counts from the current whole second (nginx's clock has 1 s resolution): up to 2 s.
  const gone = Date.now()
  await sleep(2100)
  const after = await spread(nginx, 60)
  t.comment(`checked ${Date.now() - gone} ms after the deregistration`)
  t.notOk(
    after.has('web-2'),
    `a deregistered instance gets no traffic after valid= (${JSON.stringify(Object.fromEntries(after))})`,
  )
  t.same([...after.keys()].sort(), ['web-1', 'web-3', 'web-4'])
})

for (const enableTruncate of [true, false]) {
  t.test(
    `ten instances, enable_truncate ${enableTruncate ? 'on: nginx reaches all ten' : 'off: nginx sees at most 3'} (resolver mode)`,
    async (t) => {
      const consul = await startConsul(t, { enableTruncate })
      const addrs = Array.from({ length: 10 }, (_, i) => `127.0.0.${i + 2}`)
      const port = await freePortOn(addrs)
      let upstreamConnections = 0
      for (const [i, addr] of addrs.entries()) {
        const b = await startBackend(`web-${i + 1}`, addr, port, t)
        b.server.on('connection', () => {
          upstreamConnections++
        })
        await consul.register({ ID: `web-${i + 1}`, Name: 'web', Address: addr, Port: port })
      }
      await consul.waitPassing('web', 10)
      // A long valid= and one worker pin one DNS answer, so the count shows what one answer holds (not a union of
      // shuffled answers).
      const nginx = await startNginx(t, '1.22', (p) =>
        renderNginxHttp(
          renderOptions({
            routes: [parseRoute(`/=web:${port}`)],
            dns: [dnsOf(consul.dnsAddr)],
            listen: `127.0.0.1:${p}`,
            resolverValidS: 300,
          }),
        ),
      )
      const seen = await spread(nginx, 100)
      // The README's keep-alive caveat, measured: a variable proxy_pass opens a connection per request.
      t.equal(upstreamConnections, 100, 'no upstream keep-alive in the resolver mode: one connection per request')
      t.comment(
        `enable_truncate=${enableTruncate}: ${seen.size} distinct instances in 100 requests ${JSON.stringify(Object.fromEntries(seen))}`,
      )
      if (enableTruncate) t.equal(seen.size, 10, 'all ten instances get traffic')
      else t.equal(seen.size, 3, 'only the 3 addresses of a capped answer get traffic')

      // --check asks the agent (/v1/agent/self) and warns exactly when the cap applies.
      const cfg = loadNginxConfig({
        flags: {
          routes: [`/=web:${port}`],
          dns: [consul.dnsAddr],
          check: true,
          consul: consul.httpAddr,
          nginxBin: nginxBinary('1.22'),
        },
      })
      const res = await emitNginxConfig(cfg, silentLogger(), async () => {})
      t.same(
        res.warnings,
        enableTruncate ? [] : [TRUNCATE_WARNING],
        enableTruncate ? 'no warning' : 'the emitter warns that Consul lacks enable_truncate',
      )
    },
  )
}
