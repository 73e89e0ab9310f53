import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadNginxConfig, type NginxConfig } from '../src/config/nginx.js'
import { ConsulClient } from '../src/consul/client.js'
import { silentLogger } from '../src/log.js'
import {
  CatalogWatcher,
  createCatalogWatcher,
  emitNginxConfig,
  renderNginxHttp,
  renderOptionsFrom,
  type WatchEvent,
} from '../src/nginx/index.js'
import { startBackend } from './helpers/backends.js'
import { plainConnection, startConsul } from './helpers/consul.js'
import { dnsOf, freePortOn, nginxBinary, renderOptions, sleep, spread, startNginx } from './helpers/nginx.js'
import { tempDir } from './helpers/tmp.js'

/** The catalog mode: one location per Consul service; --watch rewrites and reloads only when the set changes. */

const HOSTILE = 'x; } server { listen 80'

/** Collects a watcher's events and waits for one matching `pred` (bounded in time). */
function eventLog(w: CatalogWatcher) {
  const events: WatchEvent[] = []
  w.on('event', (e) => events.push(e))
  return {
    events,
    async next(pred: (e: WatchEvent) => boolean, from: number, timeoutMs = 20_000): Promise<WatchEvent> {
      const deadline = Date.now() + timeoutMs
      while (Date.now() < deadline) {
        const hit = events.slice(from).find(pred)
        if (hit) return hit
        await sleep(50)
      }
      throw new Error(
        `no matching watch event within ${timeoutMs} ms; saw ${JSON.stringify(events.map((e) => e.type))}`,
      )
    },
  }
}

t.test(
  'catalog --watch: a new service rewrites and reloads once; a new instance, or a hostile name, rewrites nothing',
  async (t) => {
    const consul = await startConsul(t, { enableTruncate: true })
    const addrs = ['127.0.0.2', '127.0.0.3', '127.0.0.4']
    const port = await freePortOn(addrs)
    await startBackend('alpha-1', addrs[0]!, port, t)
    await startBackend('beta-1', addrs[1]!, port, t)
    await startBackend('alpha-2', addrs[2]!, port, t)
    await consul.register({ ID: 'alpha-1', Name: 'alpha', Address: addrs[0]!, Port: port })
    await consul.waitPassing('alpha', 1)

    const cfgFor = (nginxPort: number, dir: string, extra: Record<string, unknown> = {}): NginxConfig =>
      loadNginxConfig({
        flags: {
          mode: 'catalog',
          catalogPort: port,
          dns: [consul.dnsAddr],
          consul: consul.httpAddr,
          listen: `127.0.0.1:${nginxPort}`,
          resolverValidS: 1,
          nginxBin: nginxBinary('1.22'),
          check: true,
          out: join(dir, 'site.conf'),
          ...extra,
        },
      })
    // nginx starts on what the emitter writes for today's catalog (one service).
    const nginx = await startNginx(t, '1.22', (p, dir) =>
      renderNginxHttp(renderOptionsFrom(cfgFor(p, dir), null), ['alpha']),
    )
    t.equal((await nginx.get('/alpha/x')).body, 'alpha-1')
    const reloads = join(nginx.dir, 'reloads')
    const cfg = cfgFor(nginx.port, nginx.dir, {
      watch: true,
      debounceMs: 300,
      reloadCommand: `echo reload >> ${reloads} && kill -HUP $(cat ${nginx.dir}/nginx.pid)`,
    })

    const { watcher, client } = await createCatalogWatcher(cfg, silentLogger(), { waitS: 5 })
    t.teardown(async () => {
      await watcher.close()
      await client.destroy()
    })
    const log = eventLog(watcher)
    watcher.start()
    await log.next((e) => e.type === 'unchanged', 0)
    t.equal(watcher.writes, 0, 'the file already matches the catalog: no write at start')

    let from = log.events.length
    await consul.register({ ID: 'evil', Name: HOSTILE, Address: addrs[1]!, Port: port, Tags: ['a b; }'] })
    const polled = await log.next((e) => e.type === 'polled' && e.rejected.includes(HOSTILE), from)
    t.same((polled as { services: string[] }).services, ['alpha'], 'the hostile service is refused')
    await sleep(600)
    t.equal(watcher.writes, 0, 'a hostile name causes no rewrite')

    from = log.events.length
    await consul.register({ ID: 'beta-1', Name: 'beta', Address: addrs[1]!, Port: port })
    await log.next((e) => e.type === 'reloaded', from)
    await sleep(600) // a second write or reload, if there were one, would come within the debounce
    t.equal(watcher.writes, 1, 'one rewrite')
    t.equal(watcher.reloads, 1, 'one reload')
    t.equal(readFileSync(reloads, 'utf8'), 'reload\n', 'the reload command ran once')
    const text = readFileSync(cfg.out, 'utf8')
    t.match(text, '# route: catalog service beta')
    t.notMatch(text, /listen 80;|x;|a b/, 'no hostile text in the file')
    let beta = ''
    for (let i = 0; i < 50 && beta !== 'beta-1'; i++) {
      beta = (await nginx.get('/beta/y')).body
      if (beta !== 'beta-1') await sleep(100)
    }
    t.equal(beta, 'beta-1', 'the reloaded nginx routes the new service')

    from = log.events.length
    await consul.register({ ID: 'alpha-2', Name: 'alpha', Address: addrs[2]!, Port: port })
    await log.next((e) => e.type === 'polled', from)
    await sleep(900)
    t.equal(watcher.writes, 1, 'a new instance of a known service: no rewrite')
    t.equal(watcher.reloads, 1, 'and no reload')
    let seen = new Map<string, number>()
    for (let i = 0; i < 20 && !seen.has('alpha-2'); i++) {
      seen = await spread(nginx, 10, '/alpha/')
      if (!seen.has('alpha-2')) await sleep(200)
    }
    t.ok(seen.has('alpha-2'), 'yet nginx reaches it through DNS')
  },
)

t.test('a catalog config that fails its check is never written; the last good one stays', async (t) => {
  const consul = await startConsul(t)
  await consul.register({ ID: 'alpha-1', Name: 'alpha', Address: '127.0.0.2', Port: 8080 })
  const dir = tempDir(t, 'consul-lb-catalog-')
  const out = join(dir, 'site.conf')
  const client = new ConsulClient({ connection: plainConnection(consul.httpAddr) })
  const opts = renderOptions({ mode: 'catalog', catalogPort: 8080, dns: [dnsOf(consul.dnsAddr)] })
  let reloads = 0
  const watcher = new CatalogWatcher({
    client,
    render: (services) => renderNginxHttp(opts, services),
    // Stands in for an nginx -t that rejects the config: refuse any set holding `gamma`.
    check: async (services) =>
      services.includes('gamma') ? { ok: false, output: 'nginx: [emerg] pretend failure' } : { ok: true, output: '' },
    outPath: out,
    reload: async () => {
      reloads++
    },
    debounceMs: 100,
    waitS: 5,
    initialBackoffMs: 100,
    maxBackoffMs: 400,
    log: silentLogger(),
  })
  t.teardown(async () => {
    await watcher.close()
    await client.destroy()
  })
  const log = eventLog(watcher)
  watcher.start()
  await log.next((e) => e.type === 'written', 0)
  const good = readFileSync(out, 'utf8')
  t.match(good, '# route: catalog service alpha')

  let from = log.events.length
  await consul.register({ ID: 'gamma-1', Name: 'gamma', Address: '127.0.0.3', Port: 8080 })
  const rejected = await log.next((e) => e.type === 'rejected', from)
  t.equal((rejected as { error: { code: string } }).error.code, 'CLB_NGINX_CHECK_FAILED')
  t.equal(readFileSync(out, 'utf8'), good, 'the last good file stays')
  t.equal(reloads, 1, 'no reload for a refused config')

  // Consul goes away and comes back (a dev agent restarts empty): the watcher reconnects with backoff and follows.
  from = log.events.length
  await consul.stop()
  await log.next((e) => e.type === 'error', from)
  await consul.start()
  from = log.events.length
  await consul.register({ ID: 'delta-1', Name: 'delta', Address: '127.0.0.4', Port: 8080 })
  await log.next((e) => e.type === 'written' && e.services.includes('delta'), from, 30_000)
  t.match(readFileSync(out, 'utf8'), '# route: catalog service delta', 'after reconnecting, the new set is written')
  t.ok(existsSync(out))
})

t.test('one-shot catalog emission skips hostile names and writes the rest', async (t) => {
  const consul = await startConsul(t)
  await consul.register({ ID: 'web-1', Name: 'web', Address: '127.0.0.2', Port: 80 })
  await consul.register({ ID: 'evil', Name: HOSTILE, Address: '127.0.0.2', Port: 80 })
  await consul.register({ ID: 'evil2', Name: 'web}', Address: '127.0.0.2', Port: 80 })
  const res = await emitNginxConfig(
    loadNginxConfig({
      flags: { mode: 'catalog', catalogPort: 80, consul: consul.httpAddr, check: true, nginxBin: nginxBinary('1.22') },
    }),
    silentLogger(),
    async () => {},
  )
  t.same(res.services, ['web'])
  t.notMatch(res.text, /listen 80;|x;|web\}/)
})

t.test(
  'a failed reload is retried until nginx takes the new file (not only at the next change of the set)',
  async (t) => {
    const dir = tempDir(t, 'consul-lb-reload-')
    const out = join(dir, 'site.conf')
    // A catalog that never changes: the first answer at once, then blocking queries that return the same index.
    const client = {
      catalogServices: async (index?: string) => {
        if (index !== undefined) await sleep(150)
        return { index: '7', value: { web: [] } }
      },
    } as unknown as ConsulClient
    let attempts = 0
    const watcher = new CatalogWatcher({
      client,
      render: (services) => renderNginxHttp(renderOptions({ mode: 'catalog', catalogPort: 80 }), services),
      outPath: out,
      reload: async () => {
        if (++attempts === 1) throw new Error('nginx: [error] invalid PID number "" in "/run/nginx.pid"')
      },
      debounceMs: 0,
      initialBackoffMs: 50,
      maxBackoffMs: 100,
      log: silentLogger(),
    })
    t.teardown(() => watcher.close())
    const log = eventLog(watcher)
    watcher.start()
    await log.next((e) => e.type === 'reloaded', 0, 5000)
    t.equal(attempts, 2, 'the reload ran again after the failure')
    t.equal(watcher.writes, 1, 'the file was written once')
    t.equal(watcher.reloads, 1)
  },
)
