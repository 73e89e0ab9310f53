import cluster from 'node:cluster'
import { Command } from 'commander'
import { AggregatorRegistry, Registry } from 'prom-client'
import { sumProxyViews } from '../admin/cluster-view.js'
import { type AdminOptions, type AdminServer, startAdmin } from '../admin/server.js'
import { CONSUL_FIELDS } from '../config/consul.js'
import { COMMON_FIELDS, loadServeConfig, SERVE_FIELDS, type ServeConfig } from '../config/serve.js'
import { ConsulClient } from '../consul/client.js'
import { ConsulExplainer } from '../consul/explainer.js'
import { ConsulLbError } from '../errors.js'
import { createLogger, type Logger } from '../log.js'
import { adminViewOf, createProxy } from '../proxy/create.js'
import type { ProxyStatus } from '../proxy/status.js'
import {
  EMBEDDED_REGISTRATOR_FIELDS,
  type EmbeddedRegistrator,
  startEmbeddedRegistrator,
} from './embedded-registrator.js'
import { addFieldOptions, flagsFrom } from './options.js'

const FIELDS = [...COMMON_FIELDS, ...SERVE_FIELDS, ...CONSUL_FIELDS]
/** The embedded registrator reaches the same agent with the same Consul settings. */
const REGISTRATOR_FLAGS = [...EMBEDDED_REGISTRATOR_FIELDS, ...CONSUL_FIELDS]
const WORKER_ENV = 'CONSUL_LB_WORKER_CONFIG'

export function serveCommand(): Command {
  const cmd = new Command('serve')
    .description('run the load balancer: Host / path routes → Consul services resolved through Consul DNS')
    .option('-c, --config <file>', 'YAML or JSON config file (flags win over env, env over the file)')
  addFieldOptions(cmd, FIELDS)
  addFieldOptions(cmd, EMBEDDED_REGISTRATOR_FIELDS)
  cmd.addHelpText(
    'after',
    `
Routes:   --route 'mydemo.example.com=mydemo'       Host → service, ports from SRV
          --route 'mydemo.example.com=mydemo:5000'  fixed port, addresses from A/AAAA
          --route '/api=api,strip'                   path prefix, stripped before forwarding
          --route 'shop.example.com/cart=cart'       Host and path prefix
Consul's HTTP API (--consul, --consul-ca-file, --consul-token-file … or CONSUL_HTTP_ADDR, CONSUL_CACERT,
CONSUL_HTTP_TOKEN_FILE …): when known, a no-instance 503 says why (unknown service, all critical, the agent's DNS
token); --registrator uses it too. Registrator settings (--docker, --ip, --internal, --resync …) apply with
--registrator; see \`consul-lb registrator --help\`. Check a setup with \`consul-lb doctor\`.
Host routing (on by default): Host <svc>.service.consul, <tag>.<svc>.service.consul, <svc>.service.<dc>.consul.
Exit codes: 0 clean stop, 1 runtime failure, 2 invalid flags/env/config.`,
  )
  cmd.action(async (opts: { config?: string }) => {
    const config = loadServeConfig({ flags: flagsFrom(cmd, FIELDS), env: process.env, file: opts.config })
    await runServe(config, { flags: flagsFrom(cmd, REGISTRATOR_FLAGS), file: opts.config })
  })
  return cmd
}

/** Runs `serve` until SIGTERM/SIGINT; in cluster mode the primary supervises workers and owns the admin listener. */
export async function runServe(
  config: ServeConfig,
  registratorSources: { flags: Record<string, unknown>; file?: string | undefined } = { flags: {} },
): Promise<void> {
  const log = createLogger(config.logLevel as 'info')
  if (config.workers > 1) {
    await runPrimary(config, log, registratorSources)
    return
  }
  const explaining = explainerFor(config, log)
  const { proxy, registry } = await createProxy(config, { log, explainer: explaining?.explainer ?? null })
  let registrator: EmbeddedRegistrator | null = null
  let admin: AdminServer | null = null
  const view = adminViewOf(proxy)
  if (explaining) view.status.explanations = () => explaining.explainer.status()
  try {
    ;({ registrator, admin } = await startSideServices(config, registratorSources, log, registry, view))
  } catch (err) {
    // A half-started process (proxy up, admin port taken) must not keep serving: stop what started, then fail.
    await registrator?.close()
    await proxy.close(0)
    await explaining?.close()
    throw err
  }
  await untilSignal(log)
  await registrator?.close()
  await proxy.close()
  await admin?.close()
  await explaining?.close()
}

/**
 * With Consul's HTTP API known (--consul, CONSUL_HTTP_ADDR, or --registrator's agent), a no-instance 503 says why
 * (unknown service, every instance critical, the agent's DNS token lacking read): see consul/explainer.ts.
 */
function explainerFor(config: ServeConfig, log: Logger): { explainer: ConsulExplainer; close(): Promise<void> } | null {
  if (!config.consul) return null
  const client = new ConsulClient({ connection: config.consul, log: log.child({ module: 'consul' }), timeoutMs: 5000 })
  const explainer = new ConsulExplainer({ client, log })
  return {
    explainer,
    close: async () => {
      explainer.close()
      await client.destroy()
    },
  }
}

/** A worker process of cluster mode: the proxy only; status and metrics go to the primary over IPC. */
export async function runWorker(): Promise<void> {
  const config = JSON.parse(process.env[WORKER_ENV]!) as ServeConfig
  const log = createLogger(config.logLevel as 'info').child({ worker: cluster.worker?.id })
  const explaining = explainerFor(config, log)
  const { proxy, registry } = await createProxy(config, { log, explainer: explaining?.explainer ?? null })
  process.on('message', (msg: { type: string; id: number }) => {
    if (msg?.type === 'status')
      process.send?.({
        type: 'status',
        id: msg.id,
        body: explaining
          ? { ...(proxy.status() as object), explanations: explaining.explainer.status() }
          : proxy.status(),
      })
    else if (msg?.type === 'metrics')
      void registry.getMetricsAsJSON().then((body) => process.send?.({ type: 'metrics', id: msg.id, body }))
  })
  await untilSignal(log)
  await proxy.close()
  await explaining?.close()
  process.disconnect?.()
}

async function runPrimary(
  config: ServeConfig,
  log: Logger,
  registratorSources: { flags: Record<string, unknown>; file?: string | undefined },
): Promise<void> {
  const env = { [WORKER_ENV]: JSON.stringify(config) }
  let stopping = false
  let restarts = 0
  const restartTimers = new Set<NodeJS.Timeout>()
  const listened = new Set<number>()
  let fatal: ((err: Error) => void) | null = null
  const failed = new Promise<never>((_, reject) => {
    fatal = reject
  })
  failed.catch(() => {
    /* observed by the race below */
  })
  const fork = (): void => {
    cluster.fork(env)
  }
  for (let i = 0; i < config.workers; i++) fork()
  cluster.on('listening', (worker) => {
    listened.add(worker.id)
  })
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return
    if (!listened.has(worker.id)) {
      // It died before it ever listened (port taken, no permission): restarting it would loop forever.
      fatal?.(
        new ConsulLbError(
          'CLB_WORKER_START_FAILED',
          `worker ${worker.id} exited (code ${code ?? signal}) before listening on ${config.listen.host}:${config.listen.port}; see its log above`,
        ),
      )
      return
    }
    restarts++
    const delay = Math.min(100 * 2 ** Math.min(restarts, 6), 5000)
    log.error({ worker: worker.id, code, signal, restartInMs: delay }, 'worker exited; restarting it')
    // Not unref'd: with every worker dead, this timer is what keeps the primary (and its promise to restart) alive.
    const timer = setTimeout(() => {
      restartTimers.delete(timer)
      fork()
    }, delay)
    restartTimers.add(timer)
  })
  let nextId = 0
  const ask = <T>(type: string): Promise<T[]> => {
    const workers = Object.values(cluster.workers ?? {}).filter((w) => w?.isConnected())
    const id = ++nextId
    return Promise.all(
      workers.map(
        (w) =>
          new Promise<T>((resolve) => {
            const timer = setTimeout(() => {
              w!.off('message', on)
              resolve({ error: 'worker did not answer' } as T)
            }, 2000)
            const on = (m: { type: string; id: number; body: T }): void => {
              if (m?.type === type && m.id === id) {
                clearTimeout(timer)
                w!.off('message', on)
                resolve(m.body)
              }
            }
            w!.on('message', on)
            w!.send({ type, id })
          }),
      ),
    )
  }
  const primaryRegistry = new Registry()
  let registrator: EmbeddedRegistrator | null = null
  let admin: AdminServer | null = null
  const stopWorkers = async (): Promise<void> => {
    stopping = true
    for (const t of restartTimers) clearTimeout(t)
    const workers = Object.values(cluster.workers ?? {}).filter((w) => w && !w.isDead())
    const exits = workers.map(
      (w) =>
        new Promise<void>((r) => {
          w!.once('exit', () => r())
          w!.process.kill('SIGTERM')
        }),
    )
    // Workers get their own shutdown deadline plus a margin; then they are killed.
    const killer = setTimeout(() => {
      for (const w of workers) if (!w!.isDead()) w!.process.kill('SIGKILL')
    }, config.shutdownTimeoutMs + 5000)
    await Promise.all(exits)
    clearTimeout(killer)
  }
  try {
    ;({ registrator, admin } = await startSideServices(config, registratorSources, log, primaryRegistry, {
      status: {},
      // Each worker's view, and their sum as the `proxy` view (what the status page shows).
      statusAsync: async () => {
        const workers = await ask<ProxyStatus | { error: string }>('status')
        const views = workers.filter((w): w is ProxyStatus => !('error' in w))
        return { proxy: sumProxyViews(views), workers }
      },
      isHealthy: () => !stopping,
      metricsText: async () => {
        const perWorker = await ask<unknown>('metrics')
        const own = await primaryRegistry.getMetricsAsJSON()
        return await AggregatorRegistry.aggregate([...perWorker.filter(Array.isArray), own] as Parameters<
          typeof AggregatorRegistry.aggregate
        >[0]).metrics()
      },
    }))
    log.info({ workers: config.workers }, 'cluster primary started')
    await Promise.race([untilSignal(log), failed])
  } finally {
    await stopWorkers()
    await registrator?.close()
    await admin?.close()
  }
}

/**
 * The embedded registrator (with --registrator) and the admin listener (unless --admin off), in that order, so
 * /status can show the registrator's view next to what `admin` brings (the proxy's, or the workers').
 */
async function startSideServices(
  config: ServeConfig,
  registratorSources: { flags: Record<string, unknown>; file?: string | undefined },
  log: Logger,
  registry: Registry,
  admin: Omit<AdminOptions, 'host' | 'port' | 'log' | 'registry'>,
): Promise<{ registrator: EmbeddedRegistrator | null; admin: AdminServer | null }> {
  const registrator = config.registrator ? await startEmbeddedRegistrator(registratorSources, log, registry) : null
  if (!config.admin) return { registrator, admin: null }
  const status = registrator ? { ...admin.status, registrator: () => registrator.status() } : admin.status
  try {
    return { registrator, admin: await startAdmin({ ...admin, ...config.admin, log, registry, status }) }
  } catch (err) {
    await registrator?.close()
    throw err
  }
}

function untilSignal(log: Logger): Promise<void> {
  return new Promise((resolve) => {
    const on = (sig: string): void => {
      log.info({ signal: sig }, 'shutting down')
      process.off('SIGTERM', on)
      process.off('SIGINT', on)
      resolve()
    }
    process.on('SIGTERM', on)
    process.on('SIGINT', on)
  })
}
