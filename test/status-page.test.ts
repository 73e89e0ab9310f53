// biome-ignore-all lint/performance/useDomNodeTextContent: these are Playwright locators, not DOM nodes; innerText is the text a person sees (CSS applied), which is what these tests assert
import t from 'tap'
import { startBackend } from './helpers/backends.js'
import { openTab, until } from './helpers/browser.js'
import { sleep, startConsul } from './helpers/consul.js'
import { startDocker } from './helpers/docker.js'
import { http, runLoad } from './helpers/http.js'
import { freePort } from './helpers/ports.js'
import { startTestProxy } from './helpers/proxy.js'
import { startCliWithAdmin, startServe } from './helpers/serve.js'

// What a person sees on the admin listener's status page, in Debian's Chromium against a real Consul and real
// backends. Every assertion reads the rendered page (text a person reads), not the JSON behind it.

/** Seconds in a countdown text such as "stale-if-error · 58 s left" or "1m02s left". */
function secondsLeft(text: string): number | null {
  const m = /(?:(\d+)m)?([\d.]+)\s*s left/.exec(text)
  return m ? Number(m[1] ?? 0) * 60 + Number(m[2]) : null
}

/** The registrator's flags for these pages: this test's Docker and Consul, host ID `pagehost`. */
function registratorFlags(dockerUrl: string, consulAddr: string): string[] {
  return ['--docker', dockerUrl, '--consul', consulAddr, '--ip', '127.0.0.1', '--host-id', 'pagehost']
}

t.test(
  'the status page: instances with their state and traffic, maintenance, a killed instance and a stopped Consul, live',
  async (t) => {
    const consul = await startConsul(t)
    const backends = [
      await startBackend('page-1', '127.0.0.1', 0, t),
      await startBackend('page-2', '127.0.0.1', 0, t),
      await startBackend('page-3', '127.0.0.1', 0, t),
    ]
    for (const b of backends) await consul.register({ ID: b.id, Name: 'web', Address: b.host, Port: b.port })
    await consul.waitPassing('web', 3)
    const p = await startTestProxy(t, consul, {
      routes: ['/=web', '/gone=nothing'],
      ttlFloorMs: 200,
      ttlCeilingMs: 500,
      dnsTimeoutMs: 300,
      staleIfErrorMs: 60_000,
      maxFails: 2,
      ejectForMs: 30_000,
    })
    const admin = `http://127.0.0.1:${p.adminPort}`
    const [b1, b2, b3] = backends as [(typeof backends)[0], (typeof backends)[0], (typeof backends)[0]]
    // Bounded background load for the whole test: 4 clients, at most 30 s or 200,000 requests.
    const load = runLoad(p.port, { concurrency: 4, durationMs: 30_000, maxRequests: 200_000 })
    t.teardown(() => load)

    const { page, errors, requests } = await openTab(t)
    await page.goto(`${admin}/`)
    await page.evaluate('window.loadedOnce = true')
    const card = page.locator('article.service', { has: page.locator('h3', { hasText: /^web$/ }) })
    const row = (b: { host: string; port: number }) => card.locator('tbody tr', { hasText: `${b.host}:${b.port}` })

    await until('three instances in rotation', async () => (await card.getByText('in rotation').count()) === 3, 15_000)
    t.pass('the page lists the three instances, each "in rotation"')
    t.match(await page.locator('#routes').innerText(), /\/\s+web\s+SRV/, 'the route / → web is listed')
    // A 200 ms TTL: between two answers the view may say "refreshing" (expired, a query out) for a moment.
    await until('the DNS view says fresh', async () => /DNS fresh/.test(await card.innerText()), 5000)
    t.pass('the DNS view says fresh')
    t.match(await card.innerText(), /TTL in use\s+\d/, 'with the TTL in use')
    // Traffic per instance: the load shows as requests per second and latency percentiles.
    for (const b of backends) {
      const { value } = await until(
        `${b.id} shows traffic`,
        async () => {
          const rps = Number((await row(b).locator('td[data-label="req/s"]').innerText()).replace(/,/g, ''))
          const p99 = await row(b).locator('td[data-label="p99"]').innerText()
          return rps > 0 && /ms/.test(p99) ? { rps, p99 } : false
        },
        15_000,
      )
      t.ok(value.rps > 0, `${b.id}: ${value.rps} req/s, p99 ${value.p99}`)
    }
    t.match(
      await card.locator('svg.chart').getAttribute('aria-label'),
      /requests per second over the last (\d+m)?[\d.]+ ?s: now [\d.,]+, peak [\d.,]+/,
      'a chart of requests per second since the start (up to 5 minutes)',
    )

    // A 503: its count links to its reason, in the words the 503 body used.
    const refused = await http(p.port, '/gone')
    t.equal(refused.status, 503, 'a service with no instance answers 503')
    const gone = page.locator('article.service', { has: page.locator('h3', { hasText: /^nothing$/ }) })
    await until(
      'the 503 is counted',
      async () => /503\s*CLB_NO_HEALTHY_INSTANCE × 1/.test(await gone.innerText()),
      5000,
    )
    await gone.getByRole('link', { name: 'why' }).click()
    const reason = page.locator('.reason.target, .reason:target')
    await until('the reason is shown', async () => (await reason.count()) === 1, 3000)
    t.match(
      await reason.innerText(),
      refused.body.trim(),
      `the reason is the 503 body's text ("${refused.body.trim()}")`,
    )

    // Maintenance: the instance leaves Consul's answer, and the page, within two seconds, without a reload.
    await consul.maintenance(b2.id, true)
    const left = await until('web-2 leaves the page', async () => (await row(b2).count()) === 0, 5000)
    t.ok(left.afterMs <= 2000, `the instance in maintenance left the page ${left.afterMs} ms later`)
    t.equal(await page.evaluate('window.loadedOnce'), true, 'without a reload')

    // Killed under load: passive health ejects it, and the page says so with the error.
    await b3.kill()
    const ejected = await until(
      'web-3 shows as ejected',
      async () => {
        const text = await row(b3)
          .innerText()
          .catch(() => '')
        return /ejected/.test(text) && /(ECONNREFUSED|ECONNRESET|UND_ERR_SOCKET|EPIPE)/.test(text) ? text : false
      },
      5000,
    )
    t.match(
      ejected.value,
      /\d+ s left/,
      `ejected with a countdown and its error: ${ejected.value.replace(/\s+/g, ' ')}`,
    )

    // Consul stopped: the answer goes stale-if-error and the window counts down on the page.
    await consul.stop()
    const stale = await until(
      'the stale window appears',
      async () => {
        const text = await card.locator('.service-head').innerText()
        return /stale-if-error/.test(text) ? secondsLeft(text) : false
      },
      5000,
    )
    await sleep(2000)
    const later = secondsLeft(await card.locator('.service-head').innerText())
    t.ok(
      later !== null && later < stale.value && later > stale.value - 5,
      `the stale window counts down (${stale.value} s, then ${later} s left)`,
    )
    t.ok(
      (await row(b1).count()) === 1 && /in rotation/.test(await row(b1).innerText()),
      'the last good answer is still served',
    )

    // A phone: the same page fits the width (instance rows become small cards) and scrolls only downwards.
    await page.setViewportSize({ width: 390, height: 844 })
    await sleep(1200)
    const overflow = Number(await page.evaluate('document.documentElement.scrollWidth - window.innerWidth'))
    t.ok(overflow <= 0, `nothing wider than a 390 px phone screen (overflow ${overflow} px)`)
    t.equal(
      await card.locator('thead').first().isVisible(),
      false,
      'on a phone the instance table shows label: value lines',
    )

    t.same(errors, [], 'no console errors')
    const elsewhere = requests.filter((u) => !u.startsWith(`${admin}/`))
    t.same(elsewhere, [], `no request to anything but the admin listener (${requests.length} requests)`)
    t.ok(requests.includes(`${admin}/events`), 'live updates come over /events')
  },
)

t.test('the page loads nothing but itself: strict CSP, no external asset, read-only', async (t) => {
  const consul = await startConsul(t)
  const p = await startTestProxy(t, consul, { routes: ['/=web'] })
  const res = await fetch(`http://127.0.0.1:${p.adminPort}/`)
  t.equal(res.status, 200, 'GET / is the page')
  const csp = res.headers.get('content-security-policy') ?? ''
  t.match(csp, /default-src 'none'/, 'default-src none')
  t.match(csp, /script-src 'sha256-[A-Za-z0-9+/=]+'(;|$)/, 'one inline script, allowed by its hash only')
  t.match(csp, /style-src 'sha256-[A-Za-z0-9+/=]+'(;|$)/, 'one inline style, allowed by its hash only')
  t.match(csp, /connect-src 'self'/, 'connections only to this listener')
  t.equal(res.headers.get('x-frame-options'), 'DENY', 'no other site may frame it')
  const html = await res.text()
  t.notMatch(html, /\b(src|href)="(https?:)?\/\//, 'no external URL in the page')
  t.notMatch(html, /<script[^>]+src=|<link[^>]+stylesheet/, 'no script or stylesheet loaded from elsewhere')
  const post = await fetch(`http://127.0.0.1:${p.adminPort}/`, { method: 'POST' })
  t.equal(post.status, 405, 'the admin listener takes no writes')

  // A script the policy does not allow never runs: inject one and see it blocked.
  const { page, errors } = await openTab(t)
  await page.goto(`http://127.0.0.1:${p.adminPort}/`)
  const ran = await page.evaluate(`(() => {
    const s = document.createElement('script')
    s.textContent = 'window.injected = true'
    document.body.append(s)
    return window.injected === true
  })()`)
  t.equal(ran, false, 'an injected inline script is blocked by the policy')
  t.ok(
    errors.some((e) => /Content Security Policy/.test(e)),
    'and the browser reports the violation',
  )
})

t.test('--workers 2: the page shows the sum of both workers', async (t) => {
  const consul = await startConsul(t)
  const bs = [await startBackend('wk-1', '127.0.0.1', 0, t), await startBackend('wk-2', '127.0.0.1', 0, t)]
  for (const b of bs) await consul.register({ ID: b.id, Name: 'wk', Address: b.host, Port: b.port })
  await consul.waitPassing('wk', 2)
  const s = await startServe(t, ['--dns', consul.dnsAddr, '--route', '/=wk', '--workers', '2', '--log-level', 'warn'])
  type View = { services: { instances: { requests: number }[] }[] }
  const statusOf = async () =>
    (await (await fetch(`http://127.0.0.1:${s.admin}/status`)).json()) as {
      proxy: View & { workers: number }
      workers: View[]
    }
  const requestsOf = (v: View) => v.services[0]!.instances.reduce((n, i) => n + i.requests, 0)
  // New connections until both workers have served (the primary's admin listener answers before they listen, and
  // each new connection goes to the next worker): bounded by count and time.
  let sent = 0
  const both = await until(
    'both workers serve',
    async () => {
      if (sent >= 2000) return false
      await Promise.all(Array.from({ length: 8 }, () => http(s.port, '/', { keepAlive: false }).catch(() => null)))
      sent += 8
      const st = await statusOf()
      // A worker that is still starting answers { error } instead of its view.
      const per = st.workers.map((w) => ('services' in w ? requestsOf(w) : 0))
      return per.length === 2 && per.every((n) => n > 0) ? st : false
    },
    30_000,
  )
  const st = both.value
  const perWorker = st.workers.map(requestsOf)
  t.equal(st.proxy.workers, 2, '/status has the summed view of 2 workers')
  t.equal(
    requestsOf(st.proxy),
    perWorker[0]! + perWorker[1]!,
    `requests add up over workers (${perWorker.join(' + ')})`,
  )

  const { page, errors } = await openTab(t)
  await page.goto(`http://127.0.0.1:${s.admin}/`)
  await until(
    'the summary',
    async () => /2 workers \(sum shown\)/.test(await page.locator('#summary').innerText()),
    10_000,
  )
  t.pass('the page says it shows the sum of 2 workers')
  const rows = page.locator('article.service tbody tr')
  t.equal(await rows.count(), 2, 'each instance once, not once per worker')
  t.same(errors, [], 'no console errors')
})

t.test("the registrator's own admin listener: containers with their service IDs and the last sync, live", async (t) => {
  const docker = await startDocker(t)
  const consul = await startConsul(t)
  docker.removeOnTeardown(t, 'page-reg-1')
  const admin = await freePort()
  await startCliWithAdmin(
    t,
    [
      'registrator',
      ...registratorFlags(docker.url, consul.httpAddr),
      '--admin',
      `127.0.0.1:${admin}`,
      '--log-level',
      'warn',
    ],
    admin,
  )

  const { page, errors, requests } = await openTab(t)
  await page.goto(`http://127.0.0.1:${admin}/`)
  const section = page.locator('#registrator')
  await until('the registrator section', async () => section.isVisible(), 10_000)
  t.equal(await page.locator('#proxy').isVisible(), false, 'no proxy section on a registrator-only listener')
  await docker.run({ name: 'page-reg-1', publish: ['80'], env: { SERVICE_80_NAME: 'pagereg' } })
  const { value } = await until(
    'the container and its service ID',
    async () => {
      const text = await section.innerText()
      return /page-reg-1/.test(text) && /pagehost:page-reg-1:80/.test(text) ? text : false
    },
    15_000,
  )
  t.match(value, /last sync\s+ok/, 'the last sync is shown')
  t.match(value, /Docker events\s+\w+/, "the Docker event stream's state is shown")
  t.same(errors, [], 'no console errors')
  t.same(
    requests.filter((u) => !u.startsWith(`http://127.0.0.1:${admin}/`)),
    [],
    'no request to anything but the admin listener',
  )
})

t.test(
  'what Consul and Docker carry reaches the page as text; lookups by tag and dc, conflicts, reasons said once',
  async (t) => {
    const docker = await startDocker(t)
    const consul = await startConsul(t)
    const b = await startBackend('tagged-1', '127.0.0.1', 0, t)
    await consul.register({ ID: b.id, Name: 'shop', Address: b.host, Port: b.port, Tags: ['v1'] })
    // A service whose only instance fails a check that its owner named and fills: the 503's explanation quotes both.
    const MARKUP = `<img src=x onerror="window.__pwned='check'"><script>window.__pwned='script'</script>`
    await consul.register({
      ID: 'bad-1',
      Name: 'bad',
      Address: '127.0.0.1',
      Port: 9,
      Check: { Name: `${MARKUP} \u202Eevil`, TTL: '600s', Status: 'critical' },
    })
    await consul.waitPassing('shop', 1)
    // The ID this container's port 80 would get, taken by someone else's registration: a conflict, left alone.
    await consul.register({ ID: 'pagehost:page-conflict:80', Name: 'handmade', Address: '127.0.0.1', Port: 1 })
    docker.removeOnTeardown(t, 'page-hostile', 'page-conflict')
    const s = await startServe(t, [
      '--dns',
      consul.dnsAddr,
      '--route',
      '/=shop',
      '--route',
      '/v1=shop,tag=v1',
      '--route',
      '/eu=shop,dc=dc1',
      '--route',
      '/bad=bad',
      '--registrator',
      ...registratorFlags(docker.url, consul.httpAddr),
      '--log-level',
      'warn',
    ])
    await docker.run({
      name: 'page-hostile',
      publish: ['80'],
      labels: { SERVICE_NAME: 'hostile', SERVICE_TAGS: `${MARKUP},ok` },
    })
    await docker.run({ name: 'page-conflict', publish: ['80'] })
    for (const path of ['/', '/v1/', '/eu/']) t.equal((await http(s.port, path)).status, 200, `GET ${path}`)
    // The explanation comes from a background lookup in Consul's HTTP API: ask until the 503 carries it (bounded).
    const explained = await until(
      'the 503 explains itself',
      async () => {
        const r = await http(s.port, '/bad')
        return r.body.includes('onerror') ? r.body.trim() : false
      },
      15_000,
    )

    const { page, errors, requests } = await openTab(t)
    await page.goto(`http://127.0.0.1:${s.admin}/`)
    const shop = page.locator('article.service', { has: page.locator('h3', { hasText: /^shop$/ }) })
    await until(
      'the shop card with its three lookups',
      async () => (await shop.locator('.lookup').count()) === 3,
      10_000,
    )
    const lookups = await shop.locator('.lookup .service-head').allInnerTexts()
    t.match(lookups.join('\n'), /v1\.shop\.service\.consul\s+tag v1/, 'the tag lookup is titled by its name and tag')
    t.match(lookups.join('\n'), /shop\.service\.dc1\.consul\s+dc dc1/, 'the dc lookup by its name and datacenter')
    t.equal(await shop.locator('svg.chart').count(), 1, 'one chart: the three lookups count under one name')
    t.equal(await page.locator('article.service h3', { hasText: /^shop$/ }).count(), 1, 'one card for shop')

    const bad = page.locator('article.service', { has: page.locator('h3', { hasText: /^bad$/ }) })
    await until('the reason with the explanation', async () => /onerror/.test(await bad.innerText()), 10_000)
    const reason = await bad.locator('.reason').first().innerText()
    t.ok(
      reason.includes(explained.value.replace('\u202E', '⟨U+202E⟩')),
      'the reason is the body the client got, as text (markup and all)',
    )
    t.equal(reason.split('CLB_NO_HEALTHY_INSTANCE').length - 1, 1, `the code is said once: ${reason}`)
    t.match(reason, /⟨U\+202E⟩/, "the check's right-to-left override is shown, not obeyed")

    const reg = page.locator('#registrator')
    const { value: regText } = await until(
      'both containers on the page',
      async () => {
        const text = await reg.innerText()
        return /page-hostile/.test(text) && /page-conflict/.test(text) ? text : false
      },
      20_000,
    )
    t.ok(regText.includes(MARKUP), "the label's markup is in its warning, as text")
    const conflictRow = reg.locator('tr', { hasText: 'page-conflict' })
    await until('the conflict is marked', async () => /conflict/.test(await conflictRow.innerText()), 20_000)
    t.match(
      await conflictRow.innerText(),
      /pagehost:page-conflict:80[\s\S]*conflict[\s\S]*registered as handmade:1/,
      'the conflicting service ID is marked on its container, with why',
    )
    t.equal(await page.evaluate('window.__pwned'), undefined, 'nothing from Consul or Docker ran')
    t.equal(await page.evaluate('document.querySelectorAll("img").length'), 0, 'no element made from their text')

    // A phone: the routes' options (tag, dc) are on screen, not in a column scrolled out of view.
    await page.setViewportSize({ width: 390, height: 844 })
    await sleep(1200)
    const cell = page.locator('#routes td[data-label="options"]', { hasText: 'tag v1' })
    const box = await cell.boundingBox()
    t.ok(
      box !== null && box.x >= 0 && box.x + box.width <= 390,
      `"tag v1" is within the screen (${JSON.stringify(box)})`,
    )
    const overflow = Number(await page.evaluate('document.documentElement.scrollWidth - window.innerWidth'))
    t.ok(overflow <= 0, `nothing wider than the phone (overflow ${overflow} px)`)
    t.same(errors, [], 'no console errors')
    t.same(
      requests.filter((u) => !u.startsWith(`http://127.0.0.1:${s.admin}/`)),
      [],
      'no request to anything but the admin listener',
    )
  },
)
