import t from 'tap'
import { sumProxyViews } from '../src/admin/cluster-view.js'
import { PAGE_LIMITS, pageProxyView } from '../src/admin/page-view.js'
import { LATENCY_BOUNDS_MS, latencyBucket, latencyQuantile, SecondRing } from '../src/balancer/recent.js'
import { UpstreamRegistry } from '../src/balancer/upstream.js'
import { NoHealthyInstanceError } from '../src/errors.js'
import { ServiceStats } from '../src/proxy/metrics.js'
import { instanceKey } from '../src/resolver/instances.js'
import { instance, service, view } from './helpers/status-fixtures.js'

// The numbers behind the status page, as pure cores: per-second rings, percentiles from buckets, and the sum over
// --workers. The page itself is tested in a browser (status-page.test.ts).

const T0 = 1_800_000_000_000 // a whole second

t.test(
  'a second ring sums whole seconds only, forgets what is older than it holds, and steps oldest first',
  async (t) => {
    const r = new SecondRing(2, 61)
    for (let s = 0; s < 100; s++) for (let k = 0; k < s; k++) r.add(0, T0 + s * 1000 + k)
    r.add(1, T0 + 99_500)
    const now = T0 + 100_000 + 5 // in second 100, which is still counting
    t.equal(r.sum(0, 10, now), 90 + 91 + 92 + 93 + 94 + 95 + 96 + 97 + 98 + 99, 'the last 10 whole seconds')
    t.equal(r.sum(1, 10, now), 1, 'series are separate')
    t.same(r.steps(0, 5, 3, now), [85 + 86 + 87 + 88 + 89 - 0, 90 + 91 + 92 + 93 + 94, 95 + 96 + 97 + 98 + 99])
    t.equal(r.sum(0, 60, now + 70_000), 0, 'a minute later with nothing counted, the ring reads empty')
    t.same(r.steps(0, 5, 2, now + 7_000), [97 + 98 + 99, 0], 'seconds without events are zero, not stale counts')
    r.add(0, T0 + 50_000)
    t.equal(
      r.sum(0, 1, now),
      100,
      'a clock that stepped back counts into the newest second (99 + 1), not into the past',
    )
  },
)

t.test('latency percentiles from buckets', async (t) => {
  const b = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0)
  t.equal(latencyQuantile(b, 0.5), null, 'no samples: no percentile')
  for (let i = 0; i < 99; i++) b[latencyBucket(4)]!++
  b[latencyBucket(600)]!++
  const p50 = latencyQuantile(b, 0.5)!
  const p99 = latencyQuantile(b, 0.99)!
  const p999 = latencyQuantile(b, 0.999)!
  t.ok(p50 > 3 && p50 <= 5, `p50 within the 3-5 ms bucket (${p50})`)
  t.ok(p99 <= 5, `p99 still in it: 99 of 100 samples are (${p99})`)
  t.ok(p999 > 500 && p999 <= 700, `p99.9 is the slow one's bucket (${p999})`)
  const slow = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0)
  slow[latencyBucket(60_000)] = 1
  t.equal(latencyQuantile(slow, 0.5), 10_000, 'beyond the last bound reads as that bound')
})

t.test("an instance's recent traffic: attempts per second, latency, failures of the last minute", async (t) => {
  const reg = new UpstreamRegistry(() => ({ close: async () => {}, destroy: async () => {} }) as never, {
    maxFails: 1000,
    failWindowMs: 1000,
    ejectForMs: 1000,
    maxConnectionsPerInstance: 10,
  })
  t.teardown(() => reg.close())
  const u = reg.acquire({ key: instanceKey('127.0.0.1', 9), address: '127.0.0.1', port: 9, weight: 1, priority: 1 })
  for (let s = 0; s < 10; s++)
    for (let k = 0; k < 20; k++) {
      const at = T0 + s * 1000 + k
      u.begin(at)
      u.recordSuccess(k < 19 ? 2 : 150, at)
      u.end()
    }
  u.recordFailure('ECONNRESET', T0 + 5000)
  const r = u.recent(T0 + 10_000)
  t.equal(r.rps, 20, '200 attempts over 10 s')
  t.ok(r.p50Ms !== null && r.p50Ms > 1 && r.p50Ms <= 2, `p50 ${r.p50Ms}`)
  t.ok(r.p99Ms !== null && r.p99Ms > 100 && r.p99Ms <= 150, `p99 ${r.p99Ms}`)
  t.equal(r.failures, 1)
  t.equal(u.recent(T0 + 75_000).failures, 0, 'a minute later it is no longer recent')
  t.equal(u.recent(T0 + 75_000).rps, 0)
})

t.test('a service keeps its error answers by code, with the last one, and 5 minutes of history', async (t) => {
  const st = new ServiceStats('web')
  for (let i = 0; i < 3; i++) st.count(200, T0 + i * 1000)
  const e1 = new NoHealthyInstanceError('web', 'Consul lists no passing instance')
  const e2 = new NoHealthyInstanceError('web', 'every instance is at its connection cap')
  st.recordError(e1, T0 + 1000)
  st.count(503, T0 + 1000)
  st.recordError(e2, T0 + 2000)
  st.count(503, T0 + 2000)
  const errs = st.errors().get('CLB_NO_HEALTHY_INSTANCE')!
  t.equal(errs.count, 2)
  t.equal(errs.last, e2, 'the last one is kept (its text is what the page shows)')
  t.equal(st.errors().size, 1, 'one entry per code, however many answers')
  const h = st.history(T0 + 5000)
  t.equal(h.requests.length, 60)
  t.equal(h.stepS, 5)
  t.same(h.requests.slice(-1), [5], 'the last step holds seconds 0-4: five answers')
  t.same(h.errors.slice(-1), [2], 'two of them 5xx')
})

t.test(
  '--workers: the views add up; percentiles come from summed buckets; an ejection by any worker shows',
  async (t) => {
    t.equal(sumProxyViews([]), null, 'no worker answered: no view')
    const fast = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0)
    fast[latencyBucket(1)] = 99
    const slow = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0)
    slow[latencyBucket(400)] = 99
    const a = view(101, [
      service({
        responses: { '1xx': 0, '2xx': 10, '3xx': 0, '4xx': 0, '5xx': 1 },
        errorAnswers: [{ status: 503, code: 'CLB_NO_HEALTHY_INSTANCE', count: 1, message: 'old', agoMs: 5000 }],
        history: { stepS: 5, requests: [1, 2], errors: [0, 1] },
        instances: [instance({ requests: 10, rps: 1, inflight: 1, latency: fast })],
      }),
    ])
    const b = view(102, [
      service({
        dnsState: 'stale',
        staleLeftMs: 20_000,
        responses: { '1xx': 0, '2xx': 5, '3xx': 0, '4xx': 0, '5xx': 2 },
        errorAnswers: [{ status: 503, code: 'CLB_NO_HEALTHY_INSTANCE', count: 2, message: 'new', agoMs: 100 }],
        history: { stepS: 5, requests: [3, 4], errors: [1, 1] },
        instances: [
          instance({
            requests: 20,
            rps: 2,
            inflight: 2,
            latency: slow,
            ejected: true,
            ejectedForMs: 9000,
            ejectReason: '3 failures (ECONNREFUSED) within 10000 ms',
            lastFailure: { code: 'ECONNREFUSED', agoMs: 50 },
          }),
        ],
      }),
    ])
    const sum = sumProxyViews([a, b])!
    t.equal(sum.workers, 2)
    t.same(sum.pid, [101, 102])
    t.equal(sum.inflight, 2)
    t.equal(sum.retryBudget.retriesInFlight, 2)
    t.equal(sum.retryBudget.limit, 64)
    t.equal(sum.services.length, 1, 'one service, not one per worker')
    const s = sum.services[0]!
    t.equal(s.dnsState, 'stale', 'the worst DNS state of any worker')
    t.equal(s.staleLeftMs, 20_000)
    t.same(s.responses, { '1xx': 0, '2xx': 15, '3xx': 0, '4xx': 0, '5xx': 3 })
    t.same(s.errorAnswers, [{ status: 503, code: 'CLB_NO_HEALTHY_INSTANCE', count: 3, message: 'new', agoMs: 100 }])
    t.same(s.history.requests, [4, 6])
    t.same(s.history.errors, [1, 2])
    const i = s.instances[0]!
    t.equal(s.instances.length, 1, 'one instance, not one per worker')
    t.equal(i.requests, 30)
    t.equal(i.rps, 3)
    t.equal(i.inflight, 3)
    t.equal(i.maxConnections, 512, 'each worker has its own cap')
    t.ok(i.p50Ms !== null && i.p50Ms <= 1, `p50 from the summed buckets: the fast half (${i.p50Ms})`)
    t.ok(i.p99Ms !== null && i.p99Ms > 300 && i.p99Ms <= 500, `p99 from the summed buckets: the slow half (${i.p99Ms})`)
    t.equal(i.ejected, true, 'ejected while any worker ejects it')
    t.equal(i.ejectedInWorkers, 1)
    t.equal(i.ejectReason, '3 failures (ECONNREFUSED) within 10000 ms')
    t.same(i.lastFailure, { code: 'ECONNREFUSED', agoMs: 50 })
  },
)

t.test(
  'the page view is bounded: invented Host names fold into one entry, the rest past 40 cards are lines',
  async (t) => {
    const known = Array.from({ length: 500 }, (_, i) =>
      service({
        key: `s${i}.service.consul`,
        service: `s${i}`,
        countedAs: `s${i}`,
        dnsName: `s${i}.service.consul`,
        history: { stepS: 5, requests: new Array(60).fill(i), errors: new Array(60).fill(0) },
        instances: [instance({ instance: `127.0.0.1:${10_000 + i}`, rps: i })],
      }),
    )
    // The last one listed needs a look: one of its instances is ejected.
    known[499]!.instances[0]!.ejected = true
    const invented = Array.from({ length: 256 }, (_, i) =>
      service({ key: `x${i}.service.consul`, service: `x${i}`, countedAs: '_unresolved', dnsState: 'negative' }),
    )
    const p = view(1, [...known, ...invented])
    p.routing = known.slice(0, 300).map((s) => ({
      route: `/${s.service}=${s.service}`,
      key: s.key,
      host: null,
      path: `/${s.service}`,
      service: s.service,
      tag: null,
      datacenter: null,
      port: null,
      strip: false,
      websocket: false,
    }))
    const full = JSON.stringify(p).length
    const page = pageProxyView(p)
    const size = JSON.stringify(page).length
    t.equal(page.services.length, PAGE_LIMITS.cards, `${PAGE_LIMITS.cards} services drawn as cards`)
    t.ok(
      page.services.some((s) => s.key === 's499.service.consul'),
      'the one with an ejected instance is among them, though listed last',
    )
    t.same(
      page.services.slice(0, 3).map((s) => s.key),
      ['s261.service.consul', 's262.service.consul', 's263.service.consul'],
      'then routed services with the most traffic, in the order /status lists them (cards do not jump)',
    )
    t.equal(page.serviceLines.length, PAGE_LIMITS.lines, `the next ${PAGE_LIMITS.lines} as one line each`)
    t.equal(page.servicesOmitted, 500 - PAGE_LIMITS.cards - PAGE_LIMITS.lines, 'the rest counted')
    t.equal(page.unknownHostNames?.count, 256, 'the 256 invented Host names are one entry')
    t.equal(page.unknownHostNames?.names.length, PAGE_LIMITS.unknownNames, 'naming the first few')
    t.equal(page.routing.length, PAGE_LIMITS.routes)
    t.equal(page.routesOmitted, 300 - PAGE_LIMITS.routes)
    t.notOk('latency' in page.services[0]!.instances[0]!, 'latency buckets stay out (the page shows p50/p99)')
    t.ok(size < 100_000, `one frame is ${size} bytes, /status ${full}`)
  },
)
