import type { ConvergenceResult } from './convergence.js'
import { SCENARIOS, type Tool } from './load.js'

/**
 * Results: one record per run, medians per (scenario, contender, tool), ratios to the references measured in the
 * same run (nginx with upstream keepalive, and direct to one backend), target checks, and the three output formats.
 */

export interface Measurement {
  round: number
  scenario: string
  contender: string
  tool: Tool
  rps: number
  p50Us: number
  p99Us: number
  errors: number
  requests: number
  /** Proxy CPU (all processes of its tree) per request, µs; null for direct. */
  cpuUsPerReq: number | null
  /** Sum of VmRSS over the tree at the end of the run, MB. */
  rssMb: number | null
  /** Largest single process (one worker), MB. */
  maxProcRssMb: number | null
}

export interface Summary {
  scenario: string
  contender: string
  label: string
  tool: Tool
  rounds: number
  rps: number
  p50Us: number
  p99Us: number
  errors: number
  cpuUsPerReq: number | null
  rssMb: number | null
  maxProcRssMb: number | null
  vsNginx: number | null
  vsDirect: number | null
  /** p50 minus direct's p50 (same scenario, same tool), µs. */
  addedP50Us: number | null
}

export interface TargetCheck {
  target: string
  value: string
  met: boolean | null
}

export interface Machine {
  cpu: string
  cores: number
  loadavgBefore: string
  loadavgAfter: string
  memGb: number
  kernel: string
  node: string
  /** Node.js versions consul-lb also ran on (`--node 24`); older reports lack the field. */
  otherNodes?: string[]
  nginx: string
  haproxy: string | null
  wrk: string | null
}

export interface BenchReport {
  startedAt: string
  finishedAt: string
  machine: Machine
  settings: { rounds: number; durationS: number; wrkThreads: number; autocannonScenarios: string[] }
  contenders: { id: string; label: string }[]
  skipped: string[]
  measurements: Measurement[]
  summary: Summary[]
  convergence: ConvergenceResult | null
  targets: TargetCheck[]
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

function medianOrNull(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => x !== null)
  return v.length === 0 ? null : median(v)
}

export function summarise(ms: Measurement[], contenders: { id: string; label: string }[]): Summary[] {
  const out: Summary[] = []
  for (const sc of SCENARIOS) {
    for (const tool of ['wrk', 'autocannon'] as const) {
      const rows: Summary[] = []
      for (const c of contenders) {
        const runs = ms.filter((m) => m.scenario === sc.id && m.contender === c.id && m.tool === tool)
        if (runs.length === 0) continue
        rows.push({
          scenario: sc.id,
          contender: c.id,
          label: c.label,
          tool,
          rounds: runs.length,
          rps: median(runs.map((r) => r.rps)),
          p50Us: median(runs.map((r) => r.p50Us)),
          p99Us: median(runs.map((r) => r.p99Us)),
          errors: runs.reduce((a, r) => a + r.errors, 0),
          cpuUsPerReq: medianOrNull(runs.map((r) => r.cpuUsPerReq)),
          rssMb: medianOrNull(runs.map((r) => r.rssMb)),
          maxProcRssMb: medianOrNull(runs.map((r) => r.maxProcRssMb)),
          vsNginx: null,
          vsDirect: null,
          addedP50Us: null,
        })
      }
      // A run that completed nothing (a stalled contender) counts as errors, not as a silent zero.
      for (const r of rows) {
        const dead = ms.filter(
          (m) => m.scenario === sc.id && m.contender === r.contender && m.tool === tool && m.requests === 0,
        ).length
        if (dead > 0) r.errors += dead
      }
      const nginx = rows.find((r) => r.contender === 'nginx-upstream')
      const direct = rows.find((r) => r.contender === 'direct')
      for (const r of rows) {
        r.vsNginx = nginx ? r.rps / nginx.rps : null
        r.vsDirect = direct ? r.rps / direct.rps : null
        r.addedP50Us = direct ? r.p50Us - direct.p50Us : null
      }
      out.push(...rows)
    }
  }
  return out
}

const fmt = (x: number | null, digits = 0): string =>
  x === null || !Number.isFinite(x)
    ? '–'
    : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
const us = (x: number): string =>
  x >= 10_000 ? `${fmt(x / 1000, 1)} ms` : x >= 1000 ? `${fmt(x / 1000, 2)} ms` : `${fmt(x)} µs`

function find(s: Summary[], scenario: string, contender: string, tool: Tool = 'wrk'): Summary | undefined {
  return s.find((r) => r.scenario === scenario && r.contender === contender && r.tool === tool)
}

export function checkTargets(s: Summary[], conv: ConvergenceResult | null, cores: number): TargetCheck[] {
  const t: TargetCheck[] = []
  const ratio = (name: string, a: Summary | undefined, b: Summary | undefined, min: number): void => {
    if (!a || !b) {
      t.push({ target: name, value: 'not measured', met: null })
      return
    }
    const r = a.rps / b.rps
    t.push({ target: name, value: `${fmt(r, 2)} × (${fmt(a.rps)} vs ${fmt(b.rps)} req/s)`, met: r >= min })
  }
  // Issue 15: the pass-through data plane against nginx (1 worker) and today's data plane, in the same rounds.
  const pt = 'consul-lb-passthrough'
  ratio(
    'pass-through ≥ 0.80 × nginx upstream+keepalive (c=50, 100 B, wrk)',
    find(s, 'c50-small', pt),
    find(s, 'c50-small', 'nginx-upstream'),
    0.8,
  )
  ratio(
    'pass-through ≥ 1.3 × classic consul-lb (c=50, 100 B, wrk)',
    find(s, 'c50-small', pt),
    find(s, 'c50-small', 'consul-lb'),
    1.3,
  )
  const ptCpu = find(s, 'c50-small', pt)?.cpuUsPerReq ?? null
  const ngCpu = find(s, 'c50-small', 'nginx-upstream')?.cpuUsPerReq ?? null
  t.push({
    target: "pass-through CPU per request ≤ 1.3 × nginx's (c=50, 100 B)",
    value:
      ptCpu === null || ngCpu === null
        ? 'not measured'
        : `${fmt(ptCpu, 1)} µs vs nginx ${fmt(ngCpu, 1)} µs (${fmt(ptCpu / ngCpu, 2)} ×)`,
    met: ptCpu === null || ngCpu === null ? null : ptCpu <= 1.3 * ngCpu,
  })
  for (const [sc, label] of [
    ['c256-small', 'c=256, 100 B'],
    ['c50-64k', 'c=50, 64 KiB'],
    ['c50-post16k', 'c=50, POST 16 KiB'],
  ] as const)
    ratio(`pass-through ≥ 0.75 × nginx (${label}, wrk)`, find(s, sc, pt), find(s, sc, 'nginx-upstream'), 0.75)
  const ptc1 = find(s, 'c1-small', pt)
  const ngc1 = find(s, 'c1-small', 'nginx-upstream')
  t.push(
    ptc1?.addedP50Us != null && ngc1?.addedP50Us != null
      ? {
          target: "pass-through added p50 over direct at c=1 ≤ 1.5 × nginx's (wrk)",
          value: `${fmt(ptc1.addedP50Us)} µs vs nginx ${fmt(ngc1.addedP50Us)} µs (${fmt(ptc1.addedP50Us / Math.max(1, ngc1.addedP50Us), 2)} ×)`,
          met: ptc1.addedP50Us <= 1.5 * ngc1.addedP50Us,
        }
      : { target: "pass-through added p50 over direct at c=1 ≤ 1.5 × nginx's", value: 'not measured', met: null },
  )
  const ptp99 = find(s, 'c50-small', pt)
  const ngp99 = find(s, 'c50-small', 'nginx-upstream')
  t.push(
    ptp99 && ngp99
      ? {
          target: "pass-through p99 at c=50 ≤ 2 × nginx's (wrk)",
          value: `${us(ptp99.p99Us)} vs nginx ${us(ngp99.p99Us)} (${fmt(ptp99.p99Us / ngp99.p99Us, 2)} ×)`,
          met: ptp99.p99Us <= 2 * ngp99.p99Us,
        }
      : { target: "pass-through p99 at c=50 ≤ 2 × nginx's", value: 'not measured', met: null },
  )
  const ptRss = find(s, 'c256-small', pt)?.maxProcRssMb ?? null
  t.push({
    target: 'pass-through RSS under c=256 ≤ 80 MB',
    value: ptRss === null ? 'not measured' : `${fmt(ptRss)} MB`,
    met: ptRss === null ? null : ptRss <= 80,
  })
  ratio(
    'consul-lb ≥ 0.60 × nginx upstream+keepalive (c=50, 100 B, wrk)',
    find(s, 'c50-small', 'consul-lb'),
    find(s, 'c50-small', 'nginx-upstream'),
    0.6,
  )
  ratio(
    'consul-lb ≥ 2 × nginx resolver mode (c=50, 100 B, wrk)',
    find(s, 'c50-small', 'consul-lb'),
    find(s, 'c50-small', 'nginx-resolver'),
    2,
  )
  ratio(
    `consul-lb --workers ${cores} ≥ 0.75 × nginx ${cores} workers (c=50, 100 B, wrk)`,
    find(s, 'c50-small', `consul-lb-w${cores}`),
    find(s, 'c50-small', `nginx-upstream-w${cores}`),
    0.75,
  )
  const lb = find(s, 'c1-small', 'consul-lb')
  const ng = find(s, 'c1-small', 'nginx-upstream')
  if (lb?.addedP50Us != null && ng?.addedP50Us != null) {
    t.push({
      target: "added p50 over direct at c=1 ≤ 2 × nginx's (wrk)",
      value: `${fmt(lb.addedP50Us)} µs vs nginx ${fmt(ng.addedP50Us)} µs (${fmt(lb.addedP50Us / Math.max(1, ng.addedP50Us), 2)} ×)`,
      met: lb.addedP50Us <= 2 * ng.addedP50Us,
    })
  } else t.push({ target: "added p50 over direct at c=1 ≤ 2 × nginx's", value: 'not measured', met: null })
  if (conv) {
    const limit = conv.ttlFloorMs + 1000
    t.push({
      target: `join ≤ TTL floor + 1 s (${limit} ms), from passing in Consul`,
      value: `${fmt(conv.passingToFirstRequestMs)} ms after passing (${fmt(conv.joinToFirstRequestMs)} ms after the registration PUT, which includes the first ${conv.checkIntervalMs / 1000} s health check)`,
      met: conv.passingToFirstRequestMs === null ? false : conv.passingToFirstRequestMs <= limit,
    })
    t.push({
      target: `leave ≤ TTL floor + 1 s (${limit} ms)`,
      value: `${fmt(conv.deregisterToLastRequestMs)} ms`,
      met: conv.deregisterToLastRequestMs === null ? null : conv.deregisterToLastRequestMs <= limit,
    })
    t.push({
      target: 'zero failed GETs when an instance is killed',
      value: `${conv.killFailedRequests} failed`,
      met: conv.killFailedRequests === 0,
    })
  }
  const rss = Math.max(
    find(s, 'c256-small', 'consul-lb')?.maxProcRssMb ?? NaN,
    find(s, 'c256-small', `consul-lb-w${cores}`)?.maxProcRssMb ?? NaN,
  )
  t.push({
    target: 'RSS ≤ 120 MB per worker at c=256',
    value: Number.isFinite(rss) ? `${fmt(rss)} MB (largest process)` : 'not measured',
    met: Number.isFinite(rss) ? rss <= 120 : null,
  })
  const cpu = find(s, 'c50-small', 'consul-lb')?.cpuUsPerReq ?? null
  const ncpu = find(s, 'c50-small', 'nginx-upstream')?.cpuUsPerReq ?? null
  t.push({
    target: 'CPU per proxied request ≤ 35 µs (c=50, 100 B)',
    value: `${fmt(cpu, 1)} µs (nginx ${fmt(ncpu, 1)} µs)`,
    met: cpu === null ? null : cpu <= 35,
  })
  return t
}

export function markdown(r: BenchReport): string {
  const m = r.machine
  const lines = [
    `# consul-lb benchmark`,
    '',
    `${r.finishedAt} · ${m.cpu}, ${m.cores} cores, ${fmt(m.memGb)} GB · ${m.kernel} · Node ${[m.node, ...(m.otherNodes ?? [])].join(' and ')} · ${m.nginx} · ${m.haproxy ?? 'no HAProxy'} · ${m.wrk ?? 'no wrk'} · load average before ${m.loadavgBefore}, after ${m.loadavgAfter}`,
    '',
    `Medians of ${r.settings.rounds} interleaved rounds of ${r.settings.durationS} s per contender and scenario; load generator, proxy and backends share the same ${m.cores} cores. ` +
      '"× nginx" is the ratio of req/s to nginx with a static upstream and keepalive (1 worker), "× direct" to one backend without a proxy, both measured in the same rounds. ' +
      "CPU is the proxy's own (utime+stime of all its processes) per request; RSS is summed over its processes at the end of a run. Latency from wrk is in µs; autocannon reports whole ms.",
    '',
  ]
  if (r.skipped.length) lines.push(`Skipped: ${r.skipped.join('; ')}`, '')
  for (const sc of SCENARIOS) {
    for (const tool of ['wrk', 'autocannon'] as const) {
      const rows = r.summary.filter((s) => s.scenario === sc.id && s.tool === tool)
      if (rows.length === 0) continue
      lines.push(`## ${sc.label} (${tool})`, '')
      if (sc.isLatency) {
        lines.push(
          '| contender | p50 | added p50 vs direct | p99 | req/s | errors | CPU µs/req | RSS MB |',
          '|---|---:|---:|---:|---:|---:|---:|---:|',
        )
        for (const s of rows)
          lines.push(
            `| ${s.label} | ${us(s.p50Us)} | ${s.contender === 'direct' ? '–' : us(s.addedP50Us ?? 0)} | ${us(s.p99Us)} | ${fmt(s.rps)} | ${s.errors} | ${fmt(s.cpuUsPerReq, 1)} | ${fmt(s.rssMb)} |`,
          )
      } else {
        lines.push(
          '| contender | req/s | × nginx | × direct | p50 | p99 | errors | CPU µs/req | RSS MB |',
          '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
        )
        for (const s of rows)
          lines.push(
            `| ${s.label} | ${fmt(s.rps)} | ${fmt(s.vsNginx, 2)} | ${fmt(s.vsDirect, 2)} | ${us(s.p50Us)} | ${us(s.p99Us)} | ${s.errors} | ${fmt(s.cpuUsPerReq, 1)} | ${fmt(s.rssMb)} |`,
          )
      }
      lines.push('')
    }
  }
  const c = r.convergence
  if (c) {
    lines.push(
      '## Convergence (consul-lb, 1 worker, TTL floor ' +
        c.ttlFloorMs +
        ' ms, health check every ' +
        c.checkIntervalMs +
        ' ms, ' +
        c.loadConnections +
        ' connections of steady GET load)',
      '',
      '| event | time | failed requests |',
      '|---|---:|---:|',
      `| register → passing in Consul | ${fmt(c.joinToPassingMs)} ms | |`,
      `| register → first request through consul-lb | ${fmt(c.joinToFirstRequestMs)} ms | |`,
      `| passing → first request (consul-lb's DNS refresh) | ${fmt(c.passingToFirstRequestMs)} ms | |`,
      `| deregister → last request to the instance | ${fmt(c.deregisterToLastRequestMs)} ms | ${c.deregisterFailedRequests} |`,
      `| kill → last attempt consul-lb sent it (upper bound: /status polled every ≈60 ms) | ≤ ${fmt(c.killToLastAttemptMs)} ms | |`,
      `| kill → ejected or out of consul-lb's pool | ${fmt(c.killToOutOfRotationMs)} ms | |`,
      `| kill → critical in Consul | ${fmt(c.killToCriticalMs)} ms | |`,
      `| killed instance, ${c.killWindowMs / 1000} s window under load | | ${c.killFailedRequests}${c.killFailureReasons.length ? ` (${esc([...new Set(c.killFailureReasons)].join('; ')).replace(/\|/g, '/')})` : ''} |`,
      `| all other moments (${fmt(c.requests)} requests in total) | | ${c.otherFailedRequests} |`,
      '',
    )
  }
  lines.push(...runtimeLines(r))
  lines.push(
    '## Targets (issue 15: the pass-through data plane; issue 5: the classic one)',
    '',
    '| target | measured | met |',
    '|---|---|:---:|',
  )
  for (const t of r.targets)
    lines.push(`| ${t.target} | ${t.value} | ${t.met === null ? '–' : t.met ? 'yes' : '**no**'} |`)
  lines.push('')
  return lines.join('\n')
}

/** `--node 24`: consul-lb on the other runtime next to the same build on the bench's own Node, per scenario. */
function runtimeLines(r: BenchReport): string[] {
  const others = r.contenders.filter((c) => /^consul-lb(-w\d+)?-node\d+$/.test(c.id))
  if (others.length === 0) return []
  const lines = [
    `## Node ${r.machine.node} and Node ${(r.machine.otherNodes ?? []).join(', ')} (consul-lb, same build, same rounds)`,
    '',
    '| contender | scenario | req/s | × same on this Node | p99 | CPU µs/req | RSS MB |',
    '|---|---|---:|---:|---:|---:|---:|',
  ]
  for (const c of others) {
    const baseId = c.id.replace(/-node\d+$/, '')
    for (const sc of SCENARIOS) {
      const a = find(r.summary, sc.id, c.id)
      const b = find(r.summary, sc.id, baseId)
      if (!a || !b) continue
      lines.push(
        `| ${c.label} | ${sc.id} | ${fmt(a.rps)} | ${fmt(a.rps / b.rps, 2)} | ${us(a.p99Us)} | ${fmt(a.cpuUsPerReq, 1)} | ${fmt(a.rssMb)} |`,
      )
    }
  }
  lines.push('')
  return lines
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** A hand-written SVG: per throughput scenario, a panel of req/s bars and one of p99 bars per contender (wrk). */
export function svg(r: BenchReport): string {
  const scenarios = SCENARIOS.filter((s) => !s.isLatency)
  const contenders = r.contenders
  const colors = ['#888888', '#1f77b4', '#4a9fe0', '#2ca02c', '#7fcf7f', '#ff7f0e', '#9467bd', '#8c564b']
  const barH = 16
  const gap = 4
  const labelW = 250
  const barW = 260
  const panelW = labelW + barW + 90
  const panelH = 30 + contenders.length * (barH + gap) + 10
  const width = panelW * 2 + 20
  const height = 60 + scenarios.length * panelH
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="16" font-weight="bold">consul-lb benchmark: req/s and p99 per contender (wrk, medians of ${r.settings.rounds} rounds)</text>`,
    `<text x="10" y="42" fill="#555">${esc(`${r.machine.cpu}, ${r.machine.cores} cores · ${r.finishedAt.slice(0, 10)}`)}</text>`,
  ]
  scenarios.forEach((sc, si) => {
    const rows = r.summary.filter((s) => s.scenario === sc.id && s.tool === 'wrk')
    const panels: { title: string; value: (s: Summary) => number; text: (s: Summary) => string }[] = [
      { title: `${sc.label}: requests/s (higher is better)`, value: (s) => s.rps, text: (s) => fmt(s.rps) },
      { title: `${sc.label}: p99 latency (lower is better)`, value: (s) => s.p99Us, text: (s) => us(s.p99Us) },
    ]
    panels.forEach((p, pi) => {
      const x0 = 10 + pi * (panelW + 10)
      const y0 = 60 + si * panelH
      const max = Math.max(1, ...rows.map(p.value))
      out.push(`<text x="${x0}" y="${y0 + 16}" font-weight="bold">${esc(p.title)}</text>`)
      contenders.forEach((c, ci) => {
        const s = rows.find((x) => x.contender === c.id)
        const y = y0 + 26 + ci * (barH + gap)
        out.push(`<text x="${x0 + labelW - 6}" y="${y + barH - 4}" text-anchor="end">${esc(c.label)}</text>`)
        if (!s) return
        const w = Math.max(1, (p.value(s) / max) * barW)
        out.push(
          `<rect x="${x0 + labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${colors[ci % colors.length]}"/>`,
        )
        out.push(`<text x="${x0 + labelW + w + 4}" y="${y + barH - 4}">${esc(p.text(s))}</text>`)
      })
    })
  })
  out.push('</svg>')
  return `${out.join('\n')}\n`
}
