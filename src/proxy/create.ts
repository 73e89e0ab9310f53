import { collectDefaultMetrics, Registry } from 'prom-client'
import type { ServeConfig } from '../config/serve.js'
import { createLogger, type Logger } from '../log.js'
import { LoadBalancer } from './proxy.js'
import type { NoInstanceExplainer } from './target.js'

export interface CreateProxyOptions {
  /** Root logger; one at the config's level on stdout when omitted. */
  log?: Logger
  /** Metrics registry; a new one with the process metrics (`consul_lb_process_*`) when omitted. */
  registry?: Registry
  /** Adds a sentence to no-instance 503 answers saying why Consul lists no instance. */
  explainer?: NoInstanceExplainer | null
}

export interface CreatedProxy {
  proxy: LoadBalancer
  log: Logger
  registry: Registry
  /** The port the proxy listens on (useful with listen port 0). */
  port: number
}

/**
 * The one wiring of a proxy from a validated config: logger, metrics registry, the LoadBalancer and its listener.
 * `startProxy` (the embedding API), `consul-lb serve` and each `--workers` process all start here.
 */
export async function createProxy(config: ServeConfig, opts: CreateProxyOptions = {}): Promise<CreatedProxy> {
  const log = opts.log ?? createLogger(config.logLevel as 'info')
  let registry = opts.registry
  if (registry === undefined) {
    registry = new Registry()
    collectDefaultMetrics({ register: registry, prefix: 'consul_lb_' })
  }
  const proxy = new LoadBalancer(config, { log, registry, explainer: opts.explainer ?? null })
  const { port } = await proxy.listen()
  return { proxy, log, registry, port }
}

/** What the admin listener shows of a proxy: its /status section, and /healthz ok until it starts closing. */
export function adminViewOf(proxy: LoadBalancer): { status: Record<string, () => unknown>; isHealthy: () => boolean } {
  return { status: { proxy: () => proxy.status() }, isHealthy: () => !proxy.isClosing }
}
