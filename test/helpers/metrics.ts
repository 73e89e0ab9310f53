/**
 * The value of one Prometheus sample in a /metrics text, e.g.
 * `metricValue(text, 'consul_lb_dns_queries_total{result="nxdomain",transport="tcp"}')`. Throws when the sample is
 * missing: a renamed metric or label must fail the test, never read as 0.
 */
export function metricValue(text: string, sample: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1))
  }
  throw new Error(`metric sample ${sample} not found in /metrics`)
}
