import { createServer, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Pool } from 'undici'
import { freePort } from '../test/helpers/ports.js'
import { waitServing } from './contenders.js'
import { sleep, spawnConsulLb, stopTracked } from './procs.js'
import { ROOT, SERVICE, type Stack } from './stack.js'

/**
 * How fast consul-lb follows Consul, measured under steady load from this process: a fourth instance (a Node server
 * here, so its first and last request can be timed on the same clock as the registration) joins, leaves by
 * deregistration, joins again and is killed. The proxy's /status shows when it last tried the killed instance and
 * when it dropped it.
 */

export interface ConvergenceResult {
  ttlFloorMs: number
  checkIntervalMs: number
  loadConnections: number
  requests: number
  /** Registration (PUT) → Consul's health API lists the instance as passing. */
  joinToPassingMs: number | null
  /** Registration → first request through consul-lb (includes the first health check). */
  joinToFirstRequestMs: number | null
  /** Passing → first request: consul-lb's own part (DNS refresh). */
  passingToFirstRequestMs: number | null
  /** Deregistration → last request that reached the instance. */
  deregisterToLastRequestMs: number | null
  deregisterFailedRequests: number
  /** Kill → last attempt consul-lb sent to the dead instance (its request counter in /status stops). */
  killToLastAttemptMs: number | null
  /** Kill → the instance is ejected or gone from consul-lb's pool. */
  killToOutOfRotationMs: number | null
  /** Kill → Consul marks the check critical (DNS stops listing it). */
  killToCriticalMs: number | null
  /** Failed client requests (errors, non-200) from the kill until the end of the window. */
  killFailedRequests: number
  /** Status and body (or error code) of each failed request after the kill. */
  killFailureReasons: string[]
  killWindowMs: number
  /** Failed client requests outside the join/leave/kill events (should be 0). */
  otherFailedRequests: number
}

interface NodeBackend {
  port: number
  firstHitAt: number | null
  lastHitAt: number | null
  server: Server
  kill(): void
}

async function startNodeBackend(): Promise<NodeBackend> {
  const port = await freePort()
  const sockets = new Set<Socket>()
  const b: NodeBackend = {
    port,
    firstHitAt: null,
    lastHitAt: null,
    server: createServer((req, res) => {
      if (req.url !== '/health') {
        const now = performance.now()
        b.firstHitAt ??= now
        b.lastHitAt = now
      }
      req.resume()
      res.writeHead(200, { 'content-type': 'text/plain' }).end('node backend\n')
    }),
    kill: () => {
      b.server.close()
      for (const s of sockets) s.destroy()
    },
  }
  b.server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.once('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => b.server.listen(port, '127.0.0.1', () => r()))
  return b
}

/** Steady GET load: `connections` loops of one request at a time, until stop() or the deadline. */
function startLoad(
  url: string,
  connections: number,
  deadlineMs: number,
): { failures: number[]; reasons: string[]; count: () => number; stop: () => Promise<void> } {
  const pool = new Pool(url, { connections, pipelining: 1 })
  const failures: number[] = []
  const reasons: string[] = []
  let requests = 0
  let running = true
  const end = Date.now() + deadlineMs
  const loop = async (): Promise<void> => {
    while (running && Date.now() < end) {
      try {
        const r = await pool.request({ path: '/', method: 'GET', headersTimeout: 5000, bodyTimeout: 5000 })
        const text = await r.body.text()
        if (r.statusCode !== 200) {
          failures.push(performance.now())
          reasons.push(`${r.statusCode} ${text.trim().slice(0, 200)}`)
        }
      } catch (err) {
        failures.push(performance.now())
        reasons.push(String((err as { code?: string }).code ?? err))
      }
      requests++
    }
  }
  const loops = Array.from({ length: connections }, () => loop())
  return {
    failures,
    reasons,
    count: () => requests,
    stop: async () => {
      running = false
      await Promise.all(loops)
      await pool.close()
    },
  }
}

async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 20): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (await cond()) return true
    await sleep(stepMs)
  }
  return false
}

interface StatusInstance {
  instance: string
  requests: number
  ejected: boolean
}

async function instanceStatus(adminUrl: string, key: string): Promise<StatusInstance | null> {
  const r = await fetch(`${adminUrl}/status`, { signal: AbortSignal.timeout(2000) })
  // /status has one key per provider; the proxy's view is under `proxy`.
  const s = (await r.json()) as { proxy: { services: { service: string; instances: StatusInstance[] }[] } }
  for (const svc of s.proxy.services) for (const i of svc.instances) if (i.instance === key) return i
  return null
}

export async function measureConvergence(stack: Stack, progress: (msg: string) => void): Promise<ConvergenceResult> {
  const ttlFloorMs = 1000
  const checkIntervalMs = 1000
  const loadConnections = 16
  const [port, adminPort] = [await freePort(), await freePort()]
  const proxy = spawnConsulLb(join(ROOT, 'dist', 'cli.js'), [
    'serve',
    '--listen',
    `127.0.0.1:${port}`,
    '--admin',
    `127.0.0.1:${adminPort}`,
    '--dns',
    stack.consul.dnsAddr,
    '--route',
    `/=${SERVICE}`,
    '--ttl-floor-ms',
    String(ttlFloorMs),
    '--log-level',
    'warn',
  ])
  const url = `http://127.0.0.1:${port}`
  const adminUrl = `http://127.0.0.1:${adminPort}`
  const backend = await startNodeBackend()
  const id = `${SERVICE}-node`
  const key = `127.0.0.1:${backend.port}`
  const registration = {
    ID: id,
    Name: SERVICE,
    Address: '127.0.0.1',
    Port: backend.port,
    Check: { HTTP: `http://127.0.0.1:${backend.port}/health`, Interval: `${checkIntervalMs / 1000}s`, Timeout: '1s' },
  }
  const passing = async (): Promise<boolean> =>
    ((await stack.consul.passing(SERVICE)) as { Service: { ID: string } }[]).some((e) => e.Service.ID === id)
  let load: ReturnType<typeof startLoad> | null = null
  try {
    await waitServing(url, proxy, 'consul-lb (convergence)')
    load = startLoad(url, loadConnections, 90_000)
    await sleep(1000)

    progress('convergence: join')
    let t0 = performance.now()
    await stack.consul.register(registration)
    let passingAt: number | null = null
    await until(
      async () => {
        if (passingAt === null && (await passing())) passingAt = performance.now()
        return passingAt !== null && backend.firstHitAt !== null
      },
      15_000,
      25,
    )
    const joinToPassingMs = passingAt === null ? null : passingAt - t0
    const joinToFirstRequestMs = backend.firstHitAt === null ? null : backend.firstHitAt - t0
    const passingToFirstRequestMs =
      passingAt !== null && backend.firstHitAt !== null ? Math.max(0, backend.firstHitAt - passingAt) : null
    await sleep(1000)

    progress('convergence: deregister')
    t0 = performance.now()
    const failsBeforeDereg = load.failures.length
    await stack.consul.deregister(id)
    // Bounded wait: the instance must see no request for 3 s (or 10 s pass).
    await until(
      () => backend.lastHitAt !== null && performance.now() - Math.max(backend.lastHitAt, t0) > 3000,
      10_000,
      50,
    )
    const deregisterToLastRequestMs = backend.lastHitAt === null ? null : Math.max(0, backend.lastHitAt - t0)
    const deregisterFailedRequests = load.failures.length - failsBeforeDereg

    progress('convergence: kill')
    backend.firstHitAt = null
    await stack.consul.register(registration)
    await until(() => backend.firstHitAt !== null, 15_000, 25)
    await sleep(1000)
    const failsBeforeKill = load.failures.length
    const before = await instanceStatus(adminUrl, key)
    let lastCount = before?.requests ?? 0
    t0 = performance.now()
    backend.kill()
    let lastAttemptAt: number | null = null
    let outAt: number | null = null
    let criticalAt: number | null = null
    const killWindowMs = 8000
    const windowEnd = t0 + killWindowMs
    while (performance.now() < windowEnd) {
      const st = await instanceStatus(adminUrl, key)
      const now = performance.now()
      if (st === null || st.ejected) outAt ??= now
      if (st !== null && st.requests !== lastCount) {
        lastCount = st.requests
        lastAttemptAt = now
      }
      if (criticalAt === null && !(await passing())) criticalAt = performance.now()
      await sleep(50)
    }
    const killFailedRequests = load.failures.length - failsBeforeKill
    const killFailureReasons = load.reasons.slice(failsBeforeKill)
    const otherFailedRequests = failsBeforeKill - deregisterFailedRequests
    await load.stop()
    const requests = load.count()
    load = null
    return {
      ttlFloorMs,
      checkIntervalMs,
      loadConnections,
      requests,
      joinToPassingMs,
      joinToFirstRequestMs,
      passingToFirstRequestMs,
      deregisterToLastRequestMs,
      deregisterFailedRequests,
      killToLastAttemptMs: lastAttemptAt === null ? 0 : lastAttemptAt - t0,
      killToOutOfRotationMs: outAt === null ? null : outAt - t0,
      killToCriticalMs: criticalAt === null ? null : criticalAt - t0,
      killFailedRequests,
      killFailureReasons,
      killWindowMs,
      otherFailedRequests,
    }
  } finally {
    await load?.stop()
    backend.kill()
    await stack.consul.deregister(id).catch(() => {
      /* the agent may be gone already; nothing to undo then */
    })
    await stopTracked(proxy.proc, 12_000)
  }
}
