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
 *   key: string, service: string, tag: string | null, datacenter: string | null, countedAs: string,
 *   dnsName: string, lookup: string, answer: string, answerMeaning: string, dnsState: string,
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
 *   key: string, dnsState: string, instances: number, ejected: number, rps: number, errors: number
 * }} ServiceLine
 * @typedef {{
 *   count: number, names: string[], countedAs: string, responses: ServiceView['responses'],
 *   errorAnswers: ErrorAnswerView[]
 * }} UnknownHostNames
 * @typedef {{
 *   state: string, uptimeS: number, pid: number | number[], listen: string, inflight: number,
 *   openUpgrades: number, workers?: number, retryBudget: { retriesInFlight: number, limit: number },
 *   routing: RouteView[], routesOmitted: number,
 *   hostRouting: false | { domain: string, allowServices: string[] | string },
 *   services: ServiceView[], serviceLines: ServiceLine[], servicesOmitted: number,
 *   unknownHostNames: UnknownHostNames | null
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
 *   conflicts?: { id: string, reason: string }[],
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
 * Characters that act instead of showing: C0/C1 controls (but tab and newline), bidirectional embeddings, overrides
 * and isolates, and invisible spaces. In a name or message from Consul, Docker or a client, an override would make the
 * rest of its line read backwards and an invisible character would hide a difference; they are shown as ⟨U+202E⟩.
 */
const UNSEEN =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
  /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]/g

/** @param {string} text */
function visible(text) {
  return text.replace(UNSEEN, (c) => `⟨U+${(c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}⟩`)
}

/**
 * An element; string children become text nodes (never HTML), with `visible()` applied.
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
  for (const c of children.flat())
    if (c !== null && c !== undefined && c !== false) el.append(typeof c === 'string' ? visible(c) : c)
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

/**
 * An element id (and URL fragment) from a name: DNS names and error codes keep their letters, digits, dots, colons and
 * hyphens, so two names never share an id.
 * @param {string} prefix @param {string} text
 */
function anchor(prefix, text) {
  return `${prefix}-${text.toLowerCase().replace(/[^a-z0-9.:_-]/g, '-')}`
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

/**
 * @typedef {{ label: string, numeric?: boolean, mono?: boolean, address?: boolean }} Column
 * @typedef {{ cells: (Node | string)[], class?: string | null, attrs?: Record<string, string> }} Row
 */

/**
 * A table that becomes a stack of small cards of `label value` lines on a phone (each cell carries its column's label).
 * @param {Column[]} columns @param {Row[]} rows @param {string} cls @param {string} empty
 */
function cardTable(columns, rows, cls, empty) {
  const head = h(
    'thead',
    null,
    h(
      'tr',
      null,
      columns.map((c) => h('th', { class: c.numeric ? 'num' : null }, c.label)),
    ),
  )
  const body = rows.map((r) =>
    h(
      'tr',
      { class: r.class ?? null, ...r.attrs },
      r.cells.map((cell, i) => {
        const c = columns[i]
        const classes = [c?.numeric ? 'num' : '', c?.mono ? 'mono' : '', c?.address ? 'addr' : ''].join(' ').trim()
        return h('td', { 'data-label': c?.label ?? '', class: classes || null }, cell)
      }),
    ),
  )
  if (body.length === 0) body.push(h('tr', null, h('td', { colspan: columns.length, class: 'empty' }, empty)))
  return h('div', { class: 'scroll' }, h('table', { class: `cards ${cls}` }, head, h('tbody', null, body)))
}

/** `label value` pairs in a wrapping line. @param {string} label @param {string} value */
function fact(label, value) {
  return h('span', null, `${label} `, h('b', null, value))
}

// ---- the proxy ----

/** @param {ProxyView} p */
function summaryText(p) {
  const all = [...p.services.map((svc) => svc.instances.length), ...p.serviceLines.map((l) => l.instances)]
  const instances = all.reduce((a, b) => a + b, 0)
  const ejected =
    p.services.reduce((n, svc) => n + svc.instances.filter((i) => i.ejected).length, 0) +
    p.serviceLines.reduce((n, l) => n + l.ejected, 0)
  const services = p.services.length + p.serviceLines.length + p.servicesOmitted
  const parts = [
    p.state,
    `listening on ${p.listen}`,
    `up ${duration(p.uptimeS * 1000)}`,
    p.workers ? `${p.workers} workers (sum shown)` : null,
    `${count(p.inflight)} in flight`,
    `retries in flight ${p.retryBudget.retriesInFlight} of ${Math.floor(p.retryBudget.limit)} allowed`,
    `${services} service${services === 1 ? '' : 's'}, ${instances} instance${instances === 1 ? '' : 's'}${ejected ? ` (${ejected} ejected)` : ''}`,
  ]
  return parts.filter(Boolean).join(' · ')
}

/** @param {ProxyView} p */
function routesTable(p) {
  /** @type {Row[]} */
  const rows = p.routing.map((r) => ({
    cells: [
      `${r.host ?? '*'}${r.path}`,
      h('a', { href: `#${anchor('svc', r.key)}` }, r.service),
      r.port === null ? 'SRV (ports from Consul)' : `A/AAAA, port ${r.port}`,
      [
        r.tag ? `tag ${r.tag}` : null,
        r.datacenter ? `dc ${r.datacenter}` : null,
        r.strip ? 'strip prefix' : null,
        r.websocket ? 'websocket' : null,
      ]
        .filter(Boolean)
        .join(', ') || '–',
    ],
  }))
  if (p.routesOmitted > 0)
    rows.push({ cells: [`… and ${count(p.routesOmitted)} more routes (all in /status)`, '', '', ''], class: 'more' })
  if (p.hostRouting) {
    const allowed = Array.isArray(p.hostRouting.allowServices) ? p.hostRouting.allowServices.join(', ') : 'any service'
    rows.push({
      cells: [`<svc>.service.${p.hostRouting.domain}`, allowed, 'SRV (ports from Consul)', 'Host routing'],
    })
  }
  return cardTable(
    [{ label: 'match', mono: true }, { label: 'service' }, { label: 'instances from' }, { label: 'options' }],
    rows,
    'routes',
    'no routes',
  )
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

/** @param {ServiceView} svc @param {boolean} named */
function dnsFacts(svc, named) {
  return h(
    'div',
    { class: 'facts' },
    named ? fact('name', svc.dnsName) : null,
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
      h('span', null, h('span', { class: 'swatch swatch-err' }), `5xx ${count(errTotal)}`),
    ),
  )
}

/**
 * Answers by class, and each error answer the proxy made with its code, count and a link to its reason.
 * @param {{ responses: ServiceView['responses'], errorAnswers: ErrorAnswerView[] }} t
 * @param {ServiceView | null} svc @param {string} id
 */
function answers(t, svc, id) {
  const r = t.responses
  return h(
    'ul',
    { class: 'answers' },
    h('li', null, `2xx ${count(r['2xx'])} · 3xx ${count(r['3xx'])} · 4xx ${count(r['4xx'])} · 5xx ${count(r['5xx'])}`),
    svc
      ? h(
          'li',
          null,
          `retries ${count(svc.retries)} · ejections ${count(svc.ejections)} · panic picks ${count(svc.panicPicks)}`,
        )
      : null,
    t.errorAnswers.map((e) =>
      h(
        'li',
        null,
        badge(String(e.status), e.status === 503 ? 'bad' : 'warn'),
        ' ',
        h('span', { class: 'mono' }, e.code),
        ` × ${count(e.count)} · `,
        h('a', { href: `#${anchor(`${id}-why`, e.code)}` }, 'why'),
      ),
    ),
  )
}

/**
 * The text behind each error answer, as its body gave it (the body names its status and code itself, so the line
 * above it only says when), and, for a lookup with no instance, what a request would get now.
 * @param {ErrorAnswerView[]} errorAnswers @param {ServiceView[]} lookups @param {string} id
 */
function reasons(errorAnswers, lookups, id) {
  /** @param {string} anchorId @param {string} intro @param {string} body */
  const reason = (anchorId, intro, body) =>
    h('li', { class: 'reason', id: anchorId }, h('div', { class: 'muted' }, intro), h('div', { class: 'body' }, body))
  const items = errorAnswers.map((e) =>
    reason(anchor(`${id}-why`, e.code), `the last one, ${duration(e.agoMs)} ago, answered:`, e.message),
  )
  for (const svc of lookups) {
    const now = svc.unavailable
    if (now && !errorAnswers.some((e) => e.code === now.code))
      items.push(reason(anchor(`${id}-why`, now.code), `a request to ${svc.key} now gets:`, now.message))
  }
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

/** @type {Column[]} */
const INSTANCE_COLUMNS = [
  { label: 'instance', mono: true, address: true },
  { label: 'state' },
  { label: 'tier', numeric: true },
  { label: 'weight', numeric: true },
  { label: 'in flight', numeric: true },
  { label: 'req/s', numeric: true },
  { label: 'p50', numeric: true },
  { label: 'p99', numeric: true },
  { label: 'failures', numeric: true },
  { label: 'last error' },
]

/** @param {ServiceView} svc */
function instancesTable(svc) {
  if (svc.instances.length === 0) return h('p', { class: 'empty' }, 'no instances')
  return cardTable(
    INSTANCE_COLUMNS,
    svc.instances.map((i) => ({
      class: i.ejected ? 'out' : i.full ? 'full' : null,
      attrs: { 'data-instance': i.instance },
      cells: [
        i.instance,
        instanceState(i),
        String(i.priority),
        String(i.weight),
        `${i.inflight} / ${i.maxConnections}`,
        rate(i.rps),
        latency(i.p50Ms),
        latency(i.p99Ms),
        `${i.recentFailures} last min · ${count(i.failures)} total`,
        i.lastFailure ? `${i.lastFailure.code} ${duration(i.lastFailure.agoMs)} ago` : '–',
      ],
    })),
    'instances',
    'no instances',
  )
}

/**
 * One lookup of a service (a route's tag, datacenter or fixed port): its DNS view and instances, under its DNS name.
 * @param {ServiceView} svc
 */
function lookupBlock(svc) {
  const options = [svc.tag ? `tag ${svc.tag}` : null, svc.datacenter ? `dc ${svc.datacenter}` : null].filter(Boolean)
  return h(
    'section',
    { class: 'lookup', id: anchor('svc', svc.key), 'data-key': svc.key },
    h(
      'div',
      { class: 'service-head' },
      h('h4', { class: 'mono' }, svc.key),
      options.length ? h('span', { class: 'muted' }, options.join(' · ')) : null,
      dnsBadge(svc),
    ),
    dnsFacts(svc, false),
    instancesTable(svc),
  )
}

/**
 * A card per service name: every lookup of one name counts its answers under the same counters, so they share one
 * chart and one list of error answers; each lookup (a tag, a datacenter, a fixed port) keeps its own DNS view and
 * instances. A name looked up one way only reads as one block: DNS view, chart, answers, instances.
 * @param {ServiceView[]} lookups @param {number} uptimeS
 */
function serviceCard(lookups, uptimeS) {
  const first = /** @type {ServiceView} */ (lookups[0])
  const single = lookups.length === 1 && first.tag === null && first.datacenter === null && first.key === first.dnsName
  const id = single ? anchor('svc', first.key) : anchor('service', `${first.service}.${first.countedAs}`)
  return h(
    'article',
    { class: 'service', id, 'data-service': first.service, 'data-key': single ? first.key : null },
    h(
      'div',
      { class: 'service-head' },
      h('h3', null, first.service),
      single ? dnsBadge(first) : h('span', { class: 'muted' }, `${lookups.length} lookups`),
    ),
    single ? dnsFacts(first, true) : null,
    first.countedAs !== first.service
      ? h('p', { class: 'muted' }, `answers counted under ${first.countedAs}, with other services`)
      : null,
    h('div', { class: 'grid' }, chart(first, uptimeS), answers(first, first, id)),
    reasons(first.errorAnswers, lookups, id),
    single ? instancesTable(first) : lookups.map(lookupBlock),
  )
}

/** @param {ServiceView[]} services */
function byCounters(services) {
  /** @type {Map<string, ServiceView[]>} */
  const groups = new Map()
  for (const svc of services) {
    const k = `${svc.service}\n${svc.countedAs}`
    const g = groups.get(k)
    if (g) g.push(svc)
    else groups.set(k, [svc])
  }
  return [...groups.values()]
}

/** Host names Consul does not know: one card, however many a client invented. @param {UnknownHostNames} u */
function unknownCard(u) {
  const id = 'unknown-hosts'
  const more = u.count - u.names.length
  return h(
    'article',
    { class: 'service unknown', id },
    h(
      'div',
      { class: 'service-head' },
      h('h3', null, 'Host names Consul does not know'),
      badge(`${count(u.count)} name${u.count === 1 ? '' : 's'}`, 'warn'),
    ),
    h(
      'p',
      { class: 'muted' },
      `Requests by Host for names Consul has never listed an instance for. Their answers are counted together (${u.countedAs}). Latest: `,
      h('span', { class: 'mono' }, u.names.join(', ')),
      more > 0 ? ` and ${count(more)} more (all in /status)` : '',
    ),
    answers(u, null, id),
    reasons(u.errorAnswers, [], id),
  )
}

/** The services past the cards, one line each. @param {ProxyView} p */
function serviceLines(p) {
  if (p.serviceLines.length === 0) return null
  return h(
    'div',
    { class: 'service' },
    h('h3', null, `${count(p.serviceLines.length + p.servicesOmitted)} more services, one line each`),
    h(
      'p',
      { class: 'muted' },
      `The page draws the ${p.services.length} services that most need a look (ejections, DNS trouble, error answers, then routes and traffic); all of them are in /status.`,
    ),
    cardTable(
      [
        { label: 'service', mono: true },
        { label: 'DNS' },
        { label: 'instances', numeric: true },
        { label: 'ejected', numeric: true },
        { label: 'req/s', numeric: true },
        { label: '5xx, 5 min', numeric: true },
      ],
      p.serviceLines.map((l) => ({
        cells: [l.key, l.dnsState, String(l.instances), String(l.ejected), rate(l.rps), count(l.errors)],
      })),
      'lines',
      '',
    ),
    p.servicesOmitted > 0 ? h('p', { class: 'muted' }, `… and ${count(p.servicesOmitted)} more in /status`) : null,
  )
}

// ---- the registrator ----

/** @param {RegistratorView} r */
function registratorView(r) {
  const sync = r.lastSync
  const conflicts = new Map((r.conflicts ?? []).map((c) => [c.id, c.reason]))
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
  /** @param {string} id */
  const serviceId = (id) => {
    const why = conflicts.get(id)
    return h(
      'div',
      null,
      id,
      why === undefined ? null : [' ', badge('conflict', 'bad'), h('div', { class: 'muted' }, `${why}; left alone`)],
    )
  }
  const containers = cardTable(
    [{ label: 'container' }, { label: 'service IDs', mono: true }, { label: 'state' }, { label: 'warnings' }],
    r.containers.map((c) => ({
      cells: [
        h('span', null, c.name, h('div', { class: 'muted mono' }, c.id)),
        c.services.length ? h('span', null, c.services.map(serviceId)) : c.skipped ? `skipped: ${c.skipped}` : '–',
        c.paused ? badge('paused', 'warn') : c.draining ? badge('draining', 'warn') : badge('running', 'ok'),
        h(
          'span',
          null,
          c.warnings.map((w) => h('div', null, h('span', { class: 'mono' }, w.code), ` ${w.field}: ${w.message}`)),
        ),
      ],
    })),
    'containers',
    'no containers seen',
  )
  /** @type {Map<string, { n: number, last: RegistratorError }>} */
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
    containers,
    byCode.size
      ? h(
          'ul',
          { class: 'reasons' },
          [...byCode].map(([code, { n, last }]) =>
            h(
              'li',
              { class: 'reason' },
              h('div', { class: 'muted' }, `${code} × ${n}, the last at ${last.at}:`),
              h('div', { class: 'body' }, last.message),
            ),
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
  el.textContent = visible(text)
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
    byId('summary').textContent = visible(summaryText(p))
    byId('routes').replaceChildren(routesTable(p))
    const cards = [
      ...byCounters(p.services).map((g) => serviceCard(g, p.uptimeS)),
      serviceLines(p),
      p.unknownHostNames ? unknownCard(p.unknownHostNames) : null,
    ].filter((x) => x !== null)
    byId('services').replaceChildren(
      ...(cards.length ? cards : [h('p', { class: 'empty' }, 'no service has been asked for yet')]),
    )
  } else byId('summary').textContent = snap.registrator ? visible(`registrator on ${snap.registrator.hostId}`) : ''
  byId('registrator').hidden = !snap.registrator
  if (snap.registrator)
    byId('registrator-body').replaceChildren(...registratorView(snap.registrator).filter((x) => x !== null))
  // The reason a link pointed at was redrawn: mark the new element (`:target` does not follow a replaced node).
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.classList.add('target')
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
