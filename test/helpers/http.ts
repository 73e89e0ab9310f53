import { Agent, request } from 'node:http'

export interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

const agent = new Agent({ keepAlive: true, maxSockets: 64 })

/** One HTTP request to 127.0.0.1:port with any Host header (fetch cannot set Host). */
export function http(
  port: number,
  path: string,
  opts: {
    host?: string
    method?: string
    headers?: Record<string, string>
    body?: string | Buffer
    timeoutMs?: number
    keepAlive?: boolean
  } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        agent: opts.keepAlive === false ? false : agent,
        headers: { ...(opts.host ? { host: opts.host } : {}), ...opts.headers },
        timeout: opts.timeoutMs ?? 10_000,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }),
        )
        res.on('error', reject)
      },
    )
    req.on('timeout', () => req.destroy(new Error(`request to :${port}${path} timed out`)))
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** Counts response bodies (backend ids) over n sequential requests. */
export async function countBackends(
  port: number,
  n: number,
  opts: Parameters<typeof http>[2] = {},
  path = '/',
): Promise<{ counts: Record<string, number>; failures: number; statuses: number[] }> {
  const counts: Record<string, number> = {}
  let failures = 0
  const statuses: number[] = []
  for (let i = 0; i < n; i++) {
    try {
      const r = await http(port, path, opts)
      if (r.status === 200) counts[r.body] = (counts[r.body] ?? 0) + 1
      else {
        failures++
        statuses.push(r.status)
      }
    } catch {
      failures++
      statuses.push(0)
    }
  }
  return { counts, failures, statuses }
}

export interface LoadSample {
  t: number
  backend: string | null
  status: number
  error?: string
}

/**
 * A bounded load loop: `concurrency` workers send GETs until `durationMs` passes or `maxRequests` were sent,
 * whichever comes first. Returns every sample with its time, so tests can ask when a backend first/last answered.
 */
export async function runLoad(
  port: number,
  opts: {
    host?: string
    path?: string
    concurrency?: number
    durationMs: number
    maxRequests?: number
    onSample?: (s: LoadSample) => void
  },
): Promise<LoadSample[]> {
  const samples: LoadSample[] = []
  const end = Date.now() + opts.durationMs
  const max = opts.maxRequests ?? 100_000
  let sent = 0
  const worker = async (): Promise<void> => {
    while (Date.now() < end && sent < max) {
      sent++
      let s: LoadSample
      try {
        const r = await http(port, opts.path ?? '/', { host: opts.host })
        s = {
          t: Date.now(),
          backend: r.status === 200 ? r.body : null,
          status: r.status,
          ...(r.status !== 200 ? { error: r.body } : {}),
        }
      } catch (err) {
        s = { t: Date.now(), backend: null, status: 0, error: (err as Error).message }
      }
      samples.push(s)
      opts.onSample?.(s)
    }
  }
  await Promise.all(Array.from({ length: opts.concurrency ?? 4 }, worker))
  return samples
}

export function firstSeen(samples: LoadSample[], backend: string): number | null {
  for (const s of samples) if (s.backend === backend) return s.t
  return null
}

export function lastSeen(samples: LoadSample[], backend: string): number | null {
  let t: number | null = null
  for (const s of samples) if (s.backend === backend) t = s.t
  return t
}
