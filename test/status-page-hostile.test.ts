import { createHash } from 'node:crypto'
import t from 'tap'
import { FOREIGN_HOST_CODE, startAdmin } from '../src/admin/server.js'
import { silentLogger } from '../src/log.js'
import { openTab, until } from './helpers/browser.js'
import { instance, service, view } from './helpers/status-fixtures.js'

// What Consul, Docker and clients put in names and messages reaches the status page: service names and tags from
// routes and Host names, check names and outputs in the 503 explanation, container names, labels and their warnings,
// error messages. Here every text field of both views carries markup, script, CSS, `javascript:` URLs, control and
// bidirectional characters and very long words, served by the real admin listener to Debian's Chromium: all of it must
// read as text, run nothing, load nothing and keep the page inside a laptop's and a phone's width.

const HOSTILE = [
  `<img src=x onerror="window.__pwned='img'">`,
  `</script><script>window.__pwned='script'</script>`,
  `<style>body{display:none}</style>`,
  `javascript:window.__pwned='href'`,
  `" onmouseover="window.__pwned='attr'" x="`,
  `*/ } body { background: url(https://example.com/x) } /*`,
  `\u202Egnp.exe`,
  `bell\u0007 escape\u001b[31m nul\u0000 zero\u200bwidth`,
  'W'.repeat(3000),
]
const evil = (i: number): string => HOSTILE[i % HOSTILE.length]!

function hostileProxy() {
  let n = 0
  const next = () => evil(n++)
  const svc = service({
    key: next(),
    service: next(),
    tag: next(),
    datacenter: next(),
    countedAs: 'x',
    dnsName: next(),
    lookup: next(),
    dnsState: 'failing',
    transport: next(),
    server: next(),
    lastError: { code: next(), message: next(), at: 0, agoMs: 1000 },
    errorAnswers: HOSTILE.map((m, i) => ({ status: 503, code: evil(i + 3), count: 1, message: m, agoMs: 10 })),
    unavailable: { status: 503, code: next(), message: next() },
    responses: { '1xx': 0, '2xx': 1, '3xx': 0, '4xx': 0, '5xx': 9 },
    history: { stepS: 5, requests: [1, 9], errors: [0, 9] },
    // Instance addresses are IP:port from DNS answers, never a name: everything else about them may be hostile.
    instances: HOSTILE.map((_, i) =>
      instance({
        instance: `127.0.0.1:${9000 + i}`,
        ejected: i % 2 === 0,
        ejectedForMs: 30_000,
        ejectReason: evil(i + 1),
        lastFailure: { code: evil(i + 2), agoMs: 5 },
      }),
    ),
  })
  const p = view(1, [
    svc,
    { ...svc, tag: null, datacenter: null, key: evil(5), dnsName: evil(5) },
    ...HOSTILE.map((m) => ({ ...svc, countedAs: '_unresolved', key: m, dnsName: m, service: m })),
  ])
  p.listen = next()
  p.routing = HOSTILE.map((m, i) => ({
    route: m,
    key: evil(i + 1),
    host: m,
    path: evil(i + 2),
    service: evil(i + 3),
    tag: evil(i + 4),
    datacenter: evil(i + 5),
    port: null,
    strip: true,
    websocket: false,
  }))
  p.hostRouting = { domain: next(), allowServices: HOSTILE, consulServiceReachable: false }
  return p
}

function hostileRegistrator() {
  return {
    hostId: evil(0),
    docker: {
      url: evil(1),
      eventStream: evil(2),
      connects: 1,
      lastEventAt: null,
      lastError: { code: evil(3), message: evil(4) },
    },
    consul: {
      aclDenied: { at: '2026-01-01T00:00:00Z', operation: evil(5), permission: evil(6), message: evil(7), count: 2 },
    },
    containers: HOSTILE.map((m, i) => ({
      id: evil(i + 1),
      name: m,
      paused: false,
      draining: false,
      services: [evil(i + 2), evil(i + 3)],
      skipped: null,
      warnings: [{ code: evil(i + 4), field: evil(i + 5), message: evil(i + 6) }],
    })),
    conflicts: HOSTILE.map((m, i) => ({ id: evil(i + 2), reason: m })),
    registrationsOwned: 1,
    lastSync: {
      reason: evil(8),
      at: '2026-01-01T00:00:00Z',
      durationMs: 1,
      ok: false,
      registered: 0,
      deregistered: 0,
      conflicts: 1,
      error: { code: evil(0), message: evil(1) },
    },
    queuedOperations: 0,
    errors: HOSTILE.map((m, i) => ({ at: evil(i), code: evil(i + 1), message: m })),
  }
}

t.test(
  'names and messages full of markup, script, CSS, control characters and long words render as text and run nothing',
  async (t) => {
    const admin = await startAdmin({
      host: '127.0.0.1',
      port: 0,
      log: silentLogger(),
      status: { proxy: hostileProxy, registrator: hostileRegistrator },
    })
    t.teardown(() => admin.close())
    const url = `http://127.0.0.1:${admin.port}/`
    for (const viewport of [
      { width: 1280, height: 900 },
      { width: 390, height: 844 },
    ]) {
      const { page, errors, requests } = await openTab(t, viewport)
      const dialogs: string[] = []
      page.on('dialog', (d) => {
        dialogs.push(d.message())
        void d.dismiss()
      })
      await page.goto(url)
      await until('both sections rendered', async () => (await page.locator('.reason').count()) > 10, 10_000)
      // Hover everything once: an attribute that became an event handler would fire now.
      for (const el of (await page.locator('td, li, h3, h4').all()).slice(0, 80))
        await el.hover({ force: true, timeout: 1000 }).catch(() => {
          /* an element scrolled out of a table: hovering the others is enough */
        })
      const at = `${viewport.width} px`
      t.equal(await page.evaluate('window.__pwned'), undefined, `${at}: no injected handler or script ran`)
      t.same(dialogs, [], `${at}: no dialog`)
      t.same(
        await page.evaluate(`[document.scripts.length, document.querySelectorAll('style').length,
          document.querySelectorAll('img, iframe, object, embed, link[rel=stylesheet]').length]`),
        [1, 1, 0],
        `${at}: still one script and one style of its own, no element made from a name`,
      )
      const hrefs = (await page.evaluate(
        `[...document.querySelectorAll('a[href]')].map((a) => a.getAttribute('href'))`,
      )) as string[]
      t.ok(
        hrefs.length > 0 && hrefs.every((h) => h.startsWith('#') || h === '/status' || h === '/metrics'),
        `${at}: every link stays on the page or the listener (${hrefs.length} links)`,
      )
      const text = (await page.evaluate('document.body.innerText')) as string
      for (const m of [HOSTILE[0]!, HOSTILE[1]!, HOSTILE[3]!, HOSTILE[5]!])
        t.ok(text.includes(m), `${at}: shown as text: ${m.slice(0, 40)}`)
      t.ok(text.includes('⟨U+202E⟩gnp.exe'), `${at}: a right-to-left override is shown, not obeyed`)
      t.ok(
        text.includes('bell⟨U+0007⟩ escape⟨U+001B⟩[31m nul⟨U+0000⟩ zero⟨U+200B⟩width'),
        `${at}: control and invisible characters are shown as code points`,
      )
      t.notOk(
        ['\u202e', '\u0007', '\u001b', '\u200b'].some((c) => text.includes(c)),
        `${at}: none of them reaches the page raw`,
      )
      const overflow = Number(await page.evaluate('document.documentElement.scrollWidth - window.innerWidth'))
      if (overflow > 0)
        console.error(
          await page.evaluate(
            `[...document.querySelectorAll('body *')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.scroll')).slice(0, 8).map((e) => e.tagName + '.' + e.className + ' ' + e.getBoundingClientRect().width + ' ' + (e.textContent || '').slice(0, 60)).join('\\n')`,
          ),
        )
      t.ok(overflow <= 0, `${at}: a 3000-letter word does not widen the page (overflow ${overflow} px)`)
      t.equal(
        await page.evaluate('getComputedStyle(document.body).display'),
        'block',
        `${at}: a style block in a name styles nothing`,
      )
      t.same(errors, [], `${at}: no console error and no policy violation (nothing tried to run)`)
      t.same(
        requests.filter((u) => !u.startsWith(url)),
        [],
        `${at}: no request but to the admin listener (an image or a CSS url() in a name loads nothing)`,
      )
    }
  },
)

t.test(
  'the Content-Security-Policy is exactly: the inline script and style by hash, this listener, nothing else',
  async (t) => {
    const admin = await startAdmin({ host: '127.0.0.1', port: 0, log: silentLogger(), status: {} })
    t.teardown(() => admin.close())
    const res = await fetch(`http://127.0.0.1:${admin.port}/`)
    const html = await res.text()
    const inline = (tag: string) => {
      const m = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(html)
      return `'sha256-${createHash('sha256').update(m![1]!, 'utf8').digest('base64')}'`
    }
    t.equal(
      res.headers.get('content-security-policy'),
      [
        "default-src 'none'",
        `script-src ${inline('script')}`,
        `style-src ${inline('style')}`,
        "connect-src 'self'",
        'img-src data:',
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
      ].join('; '),
    )
    t.equal((html.match(/<script/g) ?? []).length, 1, 'one script element')
    t.equal((html.match(/<style/g) ?? []).length, 1, 'one style element')
    t.equal(res.headers.get('x-content-type-options'), 'nosniff')
    t.equal(res.headers.get('referrer-policy'), 'no-referrer')
    t.equal(res.headers.get('cache-control'), 'no-store')
  },
)

t.test(
  'DNS rebinding: a page on a name that now resolves to 127.0.0.1 reads neither the page nor /status, /events',
  async (t) => {
    const admin = await startAdmin({
      host: '127.0.0.1',
      port: 0,
      log: silentLogger(),
      status: { proxy: () => ({ secret: 'instance 10.0.0.7:8080' }) },
    })
    t.teardown(() => admin.close())
    // The attacker's name, pointed at loopback inside this browser only: what a rebinding DNS server does after the
    // operator opened the attacker's page. The page's script is then same-origin with the admin listener.
    const { page } = await openTab(t, undefined, { 'rebind.test': '127.0.0.1' })
    const origin = `http://rebind.test:${admin.port}`
    const res = await page.goto(`${origin}/`)
    t.equal(res?.status(), 403, 'the status page itself is refused under that name')
    t.equal(res?.headers()['x-consul-lb-error'], FOREIGN_HOST_CODE)
    // What the attacker's script would do: read each path until it sees the data or the body ends (an event stream
    // does not end: 3 s at most).
    const read = (await page.evaluate(`Promise.all(['/status', '/events', '/metrics'].map(async (p) => {
      const r = await fetch(p, { signal: AbortSignal.timeout(3000) })
      const reader = r.body.getReader()
      let text = ''
      try {
        for (let c = await reader.read(); !c.done && !text.includes('10.0.0.7'); c = await reader.read())
          text += new TextDecoder().decode(c.value)
      } catch {}
      return [r.status, text.includes('10.0.0.7')]
    }))`)) as [number, boolean][]
    t.same(
      read,
      [
        [403, false],
        [403, false],
        [403, false],
      ],
      "the page's same-origin fetches get 403 and none of the listener's data",
    )
    const direct = await page.goto(`http://127.0.0.1:${admin.port}/status`)
    t.equal(direct?.status(), 200, 'the same browser by address: served')
    t.match(await direct?.text(), /10\.0\.0\.7/)
  },
)
