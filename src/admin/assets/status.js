// @ts-check
// The consul-lb status page. It renders the /status view that the admin listener streams on /events (one snapshot a
// second, shared by every open page) and asks nothing of anyone else. Everything shown is built with DOM calls and
// textContent, never HTML strings: service names, error messages and container names come from Consul, Docker and
// clients. The page changes nothing; it only reads.

/**
 * @typedef {{ code: string, agoMs: number }} FailureView
 * @typedef {{
 *   instance: string, priority: number, weight: number, inflight: number, maxConnections: number, full: boolean,
 *   requests: number, failures: number, recentFailures: number, rps: number, p50Ms: number | null,
 *   p99Ms: number | null, ejected: boolean, ejectedForMs: number, ejectReason: string | null,
 *   lastFailure: FailureView | null, ejectedInWorkers?: number
 * }} InstanceView
 * @typedef {{ status: number, code: string, count: number, message: string, agoMs: number }} ErrorAnswerView
 * @typedef {{
 *   key: string, service: string, dnsName: string, lookup: string, answer: string, answerMeaning: string, dnsState: string,
 *   staleLeftMs: number | null, transport: string | null, server: string | null, capped: boolean,
 *   ageMs: number | null, ttlMs: number, refreshes: number,
 *   lastError: { code: string, message: string, agoMs: number } | null, panicPicks: number,
 *   responses: { '1xx': number, '2xx': number, '3xx': number, '4xx': number, '5xx': number },
 *   retries: number, ejections: number, errorAnswers: ErrorAnswerView[],
 *   unavailable: { status: number, code: string, message: string } | null,
 *   history: { stepS: number, requests: number[], errors: number[] }, instances: InstanceView[]
 * }} ServiceView
 * @typedef {{
 *   route: string, key: string, host: string | null, path: string, service: string, tag: string | null,
 *   datacenter: string | null, port: number | null, strip: boolean, websocket: boolean
 * }} RouteView
 * @typedef {{
 *   state: string, uptimeS: number, pid: number | number[], listen: string, inflight: number,
 *   openUpgrades: number, workers?: number, retryBudget: { retriesInFlight: number, limit: number },
 *   routing: RouteView[], hostRouting: false | { domain: string, allowServices: string[] | string },
 *   services: ServiceView[]
 * }} ProxyView
 * @typedef {{ at: string, code: string, message: string }} RegistratorError
 * @typedef {{
 *   hostId: string,
 *   docker: { url: string, eventStream: string, connects: number, lastEventAt: string | null,
 *     lastError: { code: string, message: string } | null },
 *   consul: { url?: string, aclDenied?: { at: string, operation: string, permission: string | null,
 *     message: string, count: number } | null },
 *   containers: { id: string, name: string, paused: boolean, draining: boolean, services: string[],
 *     skipped: string | null, warnings: { code: string, field: string, message: string }[] }[],
 *   registrationsOwned: number,
 *   lastSync: { reason: string, at: string, durationMs: number, ok: boolean, registered: number,
 *     deregistered: number, conflicts: number, error: { code: string, message: string } | null } | null,
 *   queuedOperations: number, errors: RegistratorError[]
 * }} RegistratorView
 * @typedef {{ at: number, proxy?: ProxyView, registrator?: RegistratorView, error?: string }} Snapshot
 */

const SVG = 'http://www.w3.org/2000/svg'
/** Retry delay after the listener turned this page away (too many open pages) or went away. */
const RETRY_MS = 10_000

/**
 * @param {string} tag
 * @param {Record<string, string | number | boolean | null | undefined> | null} [props]
 * @param {...(Node | string | null | undefined | false | (Node | string | null | undefined | false)[])} children
 * @returns {HTMLElement}
 */
function h(tag, props, ...children) {
  const el = document.createElement(tag)
  if (props)
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue
      if (k === 'class') el.className = String(v)
      else el.setAttribute(k, String(v))
    }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c)
  return el
}

/**
 * @param {string} tag
 * @param {Record<string, string | number>} attrs
 * @returns {SVGElement}
 */
function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v))
  return el
}

/** @param {string} text @param {string} kind */
function badge(text, kind) {
  return h('span', { class: `badge ${kind}` }, text)
}

/** @param {number} ms */
function duration(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`
  const sec = ms / 1000
  if (sec < 60) return `${sec < 10 ? sec.toFixed(1) : Math.round(sec)} s`
  const min = Math.floor(sec / 60)
  if (min < 60) return `${min}m${String(Math.round(sec % 60)).padStart(2, '0')}s`
  return `${Math.floor(min / 60)}h${String(min % 60).padStart(2, '0')}m`
}

/** @param {number | null} ms */
function latency(ms) {
  if (ms === null) return '–'
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`
}

/** @param {number} n */
function rate(n) {
  return n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US')
}

/** @param {number} n */
function count(n) {
  return n.toLocaleString('en-US')
}

/** An id fragment for anchors, from a DNS name (letters, digits, hyphens). @param {string} text */
function slug(text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '-')
}

/**
 * A countdown that keeps ticking between snapshots: the element's text is `prefix + time left + suffix`.
 * @param {number} leftMs @param {string} prefix @param {string} suffix
 */
function countdown(leftMs, prefix, suffix) {
  const el = h('span', { 'data-until': Date.now() + leftMs, 'data-prefix': prefix, 'data-suffix': suffix })
  el.textContent = `${prefix}${duration(Math.max(0, leftMs))}${suffix}`
  return el
}

function tickCountdowns() {
  const now = Date.now()
  for (const el of document.querySelectorAll('[data-until]')) {
    const left = Math.max(0, Number(el.getAttribute('data-until')) - now)
    el.textContent = `${el.getAttribute('data-prefix')}${duration(left)}${el.getAttribute('data-suffix')}`
  }
}

// ---- the proxy ----

/** @param {ProxyView} p */
function summaryText(p) {
  const instances = p.services.reduce((n, svc) => n + svc.instances.length, 0)
  const ejected = p.services.reduce((n, svc) => n + svc.instances.filter((i) => i.ejected).length, 0)
  const parts = [
    p.state,
    `listening on ${p.listen}`,
    `up ${duration(p.uptimeS * 1000)}`,
    p.workers ? `${p.workers} workers (sum shown)` : null,
    `${count(p.inflight)} in flight`,
    `retries in flight ${p.retryBudget.retriesInFlight} of ${Math.floor(p.retryBudget.limit)} allowed`,
    `${p.services.length} service${p.services.length === 1 ? '' : 's'}, ${instances} instance${instances === 1 ? '' : 's'}${ejected ? ` (${ejected} ejected)` : ''}`,
  ]
  return parts.filter(Boolean).join(' · ')
}

/** @param {ProxyView} p */
function routesTable(p) {
  const head = h(
    'thead',
    null,
    h(
      'tr',
      null,
      h('th', null, 'match'),
      h('th', null, 'service'),
      h('th', null, 'instances from'),
      h('th', null, 'options'),
    ),
  )
  const rows = p.routing.map((r) =>
    h(
      'tr',
      null,
      h('td', { class: 'mono' }, `${r.host ?? '*'}${r.path}`),
      h('td', null, h('a', { href: `#svc-${slug(r.key)}` }, r.service)),
      h('td', null, r.port === null ? 'SRV (ports from Consul)' : `A/AAAA, port ${r.port}`),
      h(
        'td',
        null,
        [
          r.tag ? `tag ${r.tag}` : null,
          r.datacenter ? `dc ${r.datacenter}` : null,
          r.strip ? 'strip prefix' : null,
          r.websocket ? 'websocket' : null,
        ]
          .filter(Boolean)
          .join(', ') || '–',
      ),
    ),
  )
  if (p.hostRouting) {
    const allowed = Array.isArray(p.hostRouting.allowServices) ? p.hostRouting.allowServices.join(', ') : 'any service'
    rows.push(
      h(
        'tr',
        null,
        h('td', { class: 'mono' }, `<svc>.service.${p.hostRouting.domain}`),
        h('td', null, allowed),
        h('td', null, 'SRV (ports from Consul)'),
        h('td', null, 'Host routing'),
      ),
    )
  }
  if (rows.length === 0) rows.push(h('tr', null, h('td', { colspan: 4, class: 'empty' }, 'no routes')))
  return [head, h('tbody', null, rows)]
}

/** @param {ServiceView} svc */
function dnsBadge(svc) {
  switch (svc.dnsState) {
    case 'fresh':
      return badge('DNS fresh', 'ok')
    case 'refreshing':
      return badge('DNS refreshing', 'info')
    case 'stale':
      return h('span', { class: 'badge warn' }, 'stale-if-error · ', countdown(svc.staleLeftMs ?? 0, '', ' left'))
    case 'failing':
      return badge(`DNS failing${svc.lastError ? ` (${svc.lastError.code})` : ''}`, 'bad')
    case 'negative':
      return badge('no passing instance in Consul', 'bad')
    default:
      return badge('no answer yet', 'warn')
  }
}

/** @param {ServiceView} svc */
function dnsFacts(svc) {
  /** @param {string} label @param {string} value */
  const fact = (label, value) => h('span', null, `${label} `, h('b', null, value))
  return h(
    'div',
    { class: 'facts' },
    fact('name', svc.dnsName),
    fact('lookup', svc.lookup),
    fact('answer age', svc.ageMs === null ? '–' : duration(svc.ageMs)),
    fact('TTL in use', duration(svc.ttlMs)),
    fact('transport', svc.transport ? `${svc.transport.toUpperCase()} via ${svc.server}` : '–'),
    svc.capped ? h('span', null, badge('UDP answer capped; full TCP answer used', 'warn')) : fact('capped', 'no'),
    fact('refreshes', count(svc.refreshes)),
    svc.lastError ? fact('last DNS error', `${svc.lastError.code} ${duration(svc.lastError.agoMs)} ago`) : null,
  )
}

/**
 * Requests per second (line over a filled area) and error answers (bars) over the last minutes, as inline SVG.
 * @param {ServiceView} svc @param {number} uptimeS
 */
function chart(svc, uptimeS) {
  // Steps from before the proxy started are not zeros, they are nothing: the chart starts at the start.
  const { stepS } = svc.history
  const keep = Math.min(svc.history.requests.length, Math.max(2, Math.ceil(uptimeS / stepS)))
  const requests = svc.history.requests.slice(-keep)
  const errors = svc.history.errors.slice(-keep)
  const n = requests.length
  const w = 300
  const hgt = 80
  const perS = (/** @type {number} */ v) => v / stepS
  const peak = Math.max(1, ...requests.map(perS))
  const x = (/** @type {number} */ i) => (n <= 1 ? w : (i / (n - 1)) * w)
  const y = (/** @type {number} */ v) => hgt - (perS(v) / peak) * (hgt - 4)
  const points = requests.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ')
  const svg = s('svg', {
    class: 'chart',
    viewBox: `0 0 ${w} ${hgt}`,
    preserveAspectRatio: 'none',
    role: 'img',
    'aria-label': `requests per second over the last ${duration(n * stepS * 1000)}: now ${rate(perS(requests[n - 1] ?? 0))}, peak ${rate(peak)}`,
  })
  svg.append(s('line', { class: 'chart-axis', x1: 0, y1: hgt - 0.5, x2: w, y2: hgt - 0.5 }))
  if (n > 0) {
    svg.append(s('polygon', { class: 'chart-area', points: `0,${hgt} ${points} ${w},${hgt}` }))
    svg.append(s('polyline', { class: 'chart-line', points }))
    const barW = Math.max(1, w / Math.max(n, 1) - 0.5)
    errors.forEach((v, i) => {
      if (v <= 0) return
      const top = y(v)
      svg.append(
        s('rect', { class: 'chart-error', x: Math.max(0, x(i) - barW / 2), y: top, width: barW, height: hgt - top }),
      )
    })
  }
  const errTotal = errors.reduce((a, b) => a + b, 0)
  return h(
    'figure',
    { class: 'chart-box' },
    svg,
    h(
      'figcaption',
      { class: 'chart-legend' },
      h(
        'span',
        null,
        h('span', { class: 'swatch swatch-rps' }),
        `req/s, last ${duration(n * stepS * 1000)} (peak ${rate(peak)})`,
      ),
      h('span', null, h('span', { class: 'swatch swatch-err' }), `errors ${count(errTotal)}`),
    ),
  )
}

/** @param {ServiceView} svc @param {string} id */
function answers(svc, id) {
  const r = svc.responses
  const list = h(
    'ul',
    { class: 'answers' },
    h('li', null, `2xx ${count(r['2xx'])} · 3xx ${count(r['3xx'])} · 4xx ${count(r['4xx'])} · 5xx ${count(r['5xx'])}`),
    h(
      'li',
      null,
      `retries ${count(svc.retries)} · ejections ${count(svc.ejections)} · panic picks ${count(svc.panicPicks)}`,
    ),
    svc.errorAnswers.map((e) =>
      h(
        'li',
        null,
        badge(String(e.status), e.status === 503 ? 'bad' : 'warn'),
        ' ',
        h('span', { class: 'mono' }, e.code),
        ` × ${count(e.count)} · `,
        h('a', { href: `#${id}-why-${slug(e.code)}` }, 'why'),
      ),
    ),
  )
  return list
}

/** @param {ServiceView} svc @param {string} id */
function reasons(svc, id) {
  const items = svc.errorAnswers.map((e) =>
    h(
      'li',
      { class: 'reason', id: `${id}-why-${slug(e.code)}` },
      h('b', null, `${e.status} ${e.code}`),
      ` (last ${duration(e.agoMs)} ago): `,
      e.message,
    ),
  )
  if (svc.unavailable && !svc.errorAnswers.some((e) => e.code === svc.unavailable?.code))
    items.push(
      h(
        'li',
        { class: 'reason', id: `${id}-why-${slug(svc.unavailable.code)}` },
        h('b', null, `a request now gets ${svc.unavailable.status} ${svc.unavailable.code}: `),
        svc.unavailable.message,
      ),
    )
  return items.length ? h('ul', { class: 'reasons' }, items) : null
}

/** @param {InstanceView} i */
function instanceState(i) {
  if (i.ejected)
    return h(
      'span',
      null,
      h('span', { class: 'badge bad' }, 'ejected · ', countdown(i.ejectedForMs, '', ' left')),
      i.ejectReason ? h('div', { class: 'muted' }, i.ejectReason) : null,
      i.ejectedInWorkers ? h('div', { class: 'muted' }, `in ${i.ejectedInWorkers} worker(s)`) : null,
    )
  if (i.full) return badge('at connection cap', 'warn')
  return badge('in rotation', 'ok')
}

/** @param {ServiceView} svc */
function instancesTable(svc) {
  if (svc.instances.length === 0) return h('p', { class: 'empty' }, 'no instances')
  const cols = ['instance', 'state', 'tier', 'weight', 'in flight', 'req/s', 'p50', 'p99', 'failures', 'last error']
  const numeric = new Set(['tier', 'weight', 'in flight', 'req/s', 'p50', 'p99', 'failures'])
  /** @param {string} label @param {Node | string} value @param {string} [cls] */
  const cell = (label, value, cls) =>
    h(
      'td',
      { 'data-label': label, class: [numeric.has(label) ? 'num' : '', cls ?? ''].join(' ').trim() || null },
      value,
    )
  const rows = svc.instances.map((i) =>
    h(
      'tr',
      { class: i.ejected ? 'out' : i.full ? 'full' : null, 'data-instance': i.instance },
      cell('instance', i.instance, 'mono'),
      cell('state', instanceState(i)),
      cell('tier', String(i.priority)),
      cell('weight', String(i.weight)),
      cell('in flight', `${i.inflight} / ${i.maxConnections}`),
      cell('req/s', rate(i.rps)),
      cell('p50', latency(i.p50Ms)),
      cell('p99', latency(i.p99Ms)),
      cell('failures', `${i.recentFailures} last min · ${count(i.failures)} total`),
      cell('last error', i.lastFailure ? `${i.lastFailure.code} ${duration(i.lastFailure.agoMs)} ago` : '–'),
    ),
  )
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      { class: 'instances' },
      h(
        'thead',
        null,
        h(
          'tr',
          null,
          cols.map((c) => h('th', { class: numeric.has(c) ? 'num' : null }, c)),
        ),
      ),
      h('tbody', null, rows),
    ),
  )
}

/** @param {ServiceView} svc @param {number} uptimeS */
function serviceCard(svc, uptimeS) {
  const id = `svc-${slug(svc.key)}`
  return h(
    'article',
    { class: 'service', id, 'data-service': svc.service },
    h('div', { class: 'service-head' }, h('h3', null, svc.service), dnsBadge(svc)),
    dnsFacts(svc),
    h('div', { class: 'grid' }, chart(svc, uptimeS), answers(svc, id)),
    reasons(svc, id),
    instancesTable(svc),
  )
}

// ---- the registrator ----

/** @param {RegistratorView} r */
function registratorView(r) {
  /** @param {string} label @param {string} value */
  const fact = (label, value) => h('span', null, `${label} `, h('b', null, value))
  const sync = r.lastSync
  const facts = h(
    'div',
    { class: 'facts' },
    fact('host', r.hostId),
    fact('Docker events', r.docker.eventStream),
    fact(
      'last event',
      r.docker.lastEventAt ? `${duration(Date.now() - Date.parse(r.docker.lastEventAt))} ago` : 'none',
    ),
    fact('registrations owned', count(r.registrationsOwned)),
    fact('queued', count(r.queuedOperations)),
    sync
      ? fact(
          'last sync',
          `${sync.ok ? 'ok' : 'failed'} ${duration(Date.now() - Date.parse(sync.at))} ago (${sync.reason}, ${sync.durationMs} ms, +${sync.registered} −${sync.deregistered}, ${sync.conflicts} conflicts)`,
        )
      : fact('last sync', 'none yet'),
  )
  const rows = r.containers.map((c) =>
    h(
      'tr',
      null,
      h('td', null, c.name, h('div', { class: 'muted mono' }, c.id)),
      h('td', { class: 'mono' }, c.services.length ? c.services.join('\n') : c.skipped ? `skipped: ${c.skipped}` : '–'),
      h(
        'td',
        null,
        c.paused ? badge('paused', 'warn') : c.draining ? badge('draining', 'warn') : badge('running', 'ok'),
      ),
      h(
        'td',
        null,
        c.warnings.map((w) => h('div', null, h('span', { class: 'mono' }, w.code), ` ${w.field}: ${w.message}`)),
      ),
    ),
  )
  if (rows.length === 0) rows.push(h('tr', null, h('td', { colspan: 4, class: 'empty' }, 'no containers seen')))
  const byCode = new Map()
  for (const e of r.errors) byCode.set(e.code, { n: (byCode.get(e.code)?.n ?? 0) + 1, last: e })
  return [
    facts,
    r.docker.lastError
      ? h('p', { class: 'notice' }, `Docker: ${r.docker.lastError.code}: ${r.docker.lastError.message}`)
      : null,
    sync?.error ? h('p', { class: 'notice' }, `last sync failed: ${sync.error.code}: ${sync.error.message}`) : null,
    r.consul.aclDenied
      ? h(
          'p',
          { class: 'notice' },
          `Consul ACL denied ${r.consul.aclDenied.count} write(s): ${r.consul.aclDenied.operation}` +
            `${r.consul.aclDenied.permission ? ` needs ${r.consul.aclDenied.permission}` : ''} (${r.consul.aclDenied.message})`,
        )
      : null,
    h(
      'div',
      { class: 'scroll' },
      h(
        'table',
        null,
        h(
          'thead',
          null,
          h(
            'tr',
            null,
            h('th', null, 'container'),
            h('th', null, 'service IDs'),
            h('th', null, 'state'),
            h('th', null, 'warnings'),
          ),
        ),
        h('tbody', null, rows),
      ),
    ),
    byCode.size
      ? h(
          'ul',
          { class: 'reasons' },
          [...byCode].map(([code, { n, last }]) =>
            h('li', { class: 'reason' }, h('b', null, `${code} × ${n}`), ` (last ${last.at}): ${last.message}`),
          ),
        )
      : null,
  ]
}

// ---- the stream ----

/** @param {'live' | 'connecting' | 'down'} state @param {string} text */
function setConnection(state, text) {
  const el = byId('connection')
  el.className = `conn conn-${state}`
  el.textContent = text
}

/** @param {string} id */
function byId(id) {
  const el = document.getElementById(id)
  if (el === null) throw new Error(`#${id} missing from the page`)
  return el
}

/** @param {Snapshot} snap */
function render(snap) {
  // Someone is selecting text to copy it: leave the page as it is until they are done.
  const sel = document.getSelection()
  if (sel && !sel.isCollapsed) return
  const p = snap.proxy
  byId('proxy').hidden = !p
  if (p) {
    byId('summary').textContent = summaryText(p)
    byId('routes').replaceChildren(...routesTable(p))
    const cards = p.services.map((svc) => serviceCard(svc, p.uptimeS))
    byId('services').replaceChildren(
      ...(cards.length ? cards : [h('p', { class: 'empty' }, 'no service has been asked for yet')]),
    )
  } else byId('summary').textContent = snap.registrator ? `registrator on ${snap.registrator.hostId}` : ''
  byId('registrator').hidden = !snap.registrator
  if (snap.registrator)
    byId('registrator-body').replaceChildren(...registratorView(snap.registrator).filter((x) => x !== null))
  // The reason a link pointed at was redrawn: mark the new element (`:target` does not follow a replaced node).
  if (location.hash) document.getElementById(location.hash.slice(1))?.classList.add('target')
}

function connect() {
  const es = new EventSource('/events')
  es.addEventListener('open', () => setConnection('live', 'live'))
  es.addEventListener('status', (e) => {
    setConnection('live', `live · ${new Date().toLocaleTimeString()}`)
    render(JSON.parse(/** @type {MessageEvent} */ (e).data))
  })
  es.addEventListener('failure', (e) => {
    setConnection('down', `status failed: ${JSON.parse(/** @type {MessageEvent} */ (e).data).error}`)
  })
  es.addEventListener('error', () => {
    if (es.readyState === EventSource.CLOSED) {
      // Refused (the listener serves a bounded number of pages) or gone: try again later, not in a tight loop.
      setConnection(
        'down',
        `no live updates (too many open pages, or the listener is gone); retrying in ${RETRY_MS / 1000} s`,
      )
      setTimeout(connect, RETRY_MS)
    } else setConnection('connecting', 'reconnecting…')
  })
}

setInterval(tickCountdowns, 250)
connect()
