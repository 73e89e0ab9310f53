// `npm run screenshot`: the README's pictures of the status page, made the same way every time. It starts a Consul dev
// agent, backends and a proxy on loopback, puts the proxy under a bounded load that changes over about a minute (a
// busy service, a slower one, one with no instance answering 503s, an instance killed and ejected), then has Debian's
// headless Chromium photograph the page at laptop and phone width into docs/. Everything it started is stopped at the
// end, also on failure.
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import { startProxy } from '../src/index.js'
import { silentLogger } from '../src/log.js'
import { type Backend, startBackend } from '../test/helpers/backends.js'
import { openTab, until } from '../test/helpers/browser.js'
import { type ConsulAgent, sleep, startConsul } from '../test/helpers/consul.js'
import { http, runLoad } from '../test/helpers/http.js'

const OUT = resolve(import.meta.dirname, '..', 'docs')
const cleanups: (() => unknown)[] = []
const scope = { teardown: (fn: () => unknown) => cleanups.push(fn) }

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true })
  process.stderr.write('screenshot: starting Consul, 5 backends and the proxy\n')
  const consul: ConsulAgent = await startConsul(scope)
  const web: Backend[] = []
  for (let i = 1; i <= 3; i++) web.push(await startBackend(`web-${i}`, '127.0.0.1', 0, scope))
  const api = [await startBackend('api-1', '127.0.0.1', 0, scope), await startBackend('api-2', '127.0.0.1', 0, scope)]
  for (const b of web) await consul.register({ ID: b.id, Name: 'web', Address: b.host, Port: b.port, Tags: ['v2'] })
  for (const b of api) await consul.register({ ID: b.id, Name: 'api', Address: b.host, Port: b.port })
  await consul.waitPassing('web', 3)
  await consul.waitPassing('api', 2)
  const lb = await startProxy(
    {
      listen: '127.0.0.1:0',
      admin: '127.0.0.1:0',
      dns: [consul.dnsAddr],
      routes: ['shop.example.com=web', '/api=api,strip', 'shop.example.com/cart=cart'],
      ttlFloorMs: 1000,
      maxFails: 2,
      ejectForMs: 120_000,
    },
    { log: silentLogger() },
  )
  scope.teardown(() => lb.close())

  // About a minute of traffic in phases, so the charts have a shape: every loop is bounded in time and count.
  process.stderr.write('screenshot: 70 s of load (web ramps up, api is slower, cart has no instance)\n')
  const started = Date.now()
  const phase = (concurrency: number, ms: number) =>
    runLoad(lb.port, { host: 'shop.example.com', concurrency, durationMs: ms, maxRequests: 200_000 })
  const webLoad = (async () => {
    await phase(1, 15_000)
    await phase(3, 20_000)
    await phase(2, 35_000)
  })()
  const apiLoad = runLoad(lb.port, { path: '/api/slow?ms=25', concurrency: 2, durationMs: 70_000, maxRequests: 50_000 })
  const cartLoad = (async () => {
    for (let i = 0; i < 20 && Date.now() - started < 70_000; i++) {
      await http(lb.port, '/cart/checkout', { host: 'shop.example.com' })
      await sleep(3000)
    }
  })()
  await sleep(40_000)
  process.stderr.write('screenshot: killing web-3 under load\n')
  await web[2]!.kill()
  await sleep(10_000)

  // Photographed while the load still runs (it ends about 70 s after it started).
  const url = `http://127.0.0.1:${lb.adminPort}/`
  for (const [name, viewport] of [
    ['status-page.png', { width: 1280, height: 900 }],
    ['status-page-phone.png', { width: 390, height: 844 }],
  ] as const) {
    const { page, errors } = await openTab(scope, viewport)
    await page.goto(url)
    await until(
      'the page shows the services',
      async () => (await page.locator('article.service').count()) === 3,
      10_000,
    )
    // Wait for a fresh snapshot so the countdowns and rates are those of this moment.
    await sleep(1500)
    await page.screenshot({ path: resolve(OUT, name), fullPage: true })
    if (errors.length) throw new Error(`console errors on the page: ${errors.join('; ')}`)
    process.stderr.write(`screenshot: docs/${name}\n`)
  }
  await Promise.all([webLoad, apiLoad, cartLoad])
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`screenshot failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exitCode = 1
  })
  .finally(async () => {
    for (const fn of cleanups.reverse()) await fn()
  })
