/**
 * What `consul-lb doctor` found: one finding per check, each with what it saw and, when something is wrong, the fix.
 * `warn` and `fail` are findings (exit 1); `ok`, `info` and `skip` are not.
 */
export type Severity = 'ok' | 'info' | 'warn' | 'fail' | 'skip'

export interface Finding {
  /** Stable id of the check (`consul.api`, `dns.tcp`, `route`, …): scripts match on it, never on the text. */
  readonly check: string
  readonly severity: Severity
  /** What was seen, in one sentence. */
  readonly summary: string
  /** What to do about it (for warn and fail). */
  readonly fix?: string
  /** The subject when a check runs more than once (a DNS server, a route's service). */
  readonly subject?: string
}

export interface Report {
  readonly ok: boolean
  readonly problems: number
  readonly findings: readonly Finding[]
}

export function reportOf(findings: readonly Finding[]): Report {
  const problems = findings.filter((f) => f.severity === 'warn' || f.severity === 'fail').length
  return { ok: problems === 0, problems, findings }
}

const LABEL: Record<Severity, string> = { ok: 'ok  ', info: 'info', warn: 'WARN', fail: 'FAIL', skip: 'skip' }

/** The report for a terminal: one line per finding, its fix indented below. */
export function formatReport(r: Report): string {
  const lines = r.findings.map((f) => {
    const head = `${LABEL[f.severity]}  ${f.check}${f.subject ? ` (${f.subject})` : ''}: ${f.summary}`
    return f.fix ? `${head}\n      fix: ${f.fix}` : head
  })
  const verdict = r.ok
    ? 'consul-lb doctor: no problems found'
    : `consul-lb doctor: ${r.problems} problem${r.problems === 1 ? '' : 's'} found`
  return `${lines.join('\n')}\n\n${verdict}\n`
}
