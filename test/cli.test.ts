import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { startBackend } from './helpers/backends.js'
import { sleep, startConsul } from './helpers/consul.js'
import { countBackends } from './helpers/http.js'
import { freePort } from './helpers/ports.js'
import { runCli } from './helpers/process.js'
import { serveArgs, startServe } from './helpers/serve.js'

/** `consul-lb ARGS` to its end (helpers/process.ts). */
const run = (args: string[], env: Record<string, string> = {}, timeoutMs = 90_000) => runCli(args, env, timeoutMs)

function tmp(t: { teardown(fn: () => unknown): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'consul-lb-cli-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

t.test('bad flags, env and config exit with code 2 and a message naming the field', async (t) => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [['serve', '--listen', 'nonsense'], {}, /--listen: expected HOST:PORT/],
    [['serve', '--route', 'x'], {}, /--route "x": expected \[HOST\]\[\/PATH\]=SERVICE\[:PORT\]/],
    [
      ['serve', '--route', 'a.example.com=svc:99999'],
      {},
      /--route "a.example.com=svc:99999": port 99999 is out of range/,
    ],
    [['serve', '--balancer', 'random'], {}, /random.*Allowed choices are round-robin, least-connections, p2c/s],
    [['serve', '--no-such-flag'], {}, /unknown option '--no-such-flag'/],
    [['serve'], { CONSUL_LB_TTL_FLOOR_MS: 'soon' }, /env CONSUL_LB_TTL_FLOOR_MS: expected an integer/],
    [['serve', '--ttl-floor-ms', '5000', '--ttl-ceiling-ms', '1000'], {}, /ttlCeilingMs: must be >= ttlFloorMs/],
    [['serve', '--dns', '127.0.0.1:abc'], {}, /dns: "127.0.0.1:abc": expected HOST:PORT/],
    [
      ['serve'],
      { CONSUL_LB_TTL_FLOR_MS: '100' },
      /env CONSUL_LB_TTL_FLOR_MS: unknown setting; did you mean CONSUL_LB_TTL_FLOOR_MS\?/,
    ],
    [
      ['serve', '--client-headers-timeout-ms', '9000', '--client-request-timeout-ms', '5000'],
      {},
      /clientHeadersTimeoutMs: must be <= clientRequestTimeoutMs/,
    ],
    [['serve', '--listen', '999.1.1.1:80'], {}, /--listen: expected HOST:PORT/],
  ]
  for (const [args, env, re] of cases) {
    const r = await run(args, env)
    t.equal(r.code, 2, `${args.join(' ')} ${JSON.stringify(env)} → exit 2`)
    t.match(r.stderr, re, `message: ${r.stderr.trim().split('\n')[0]}`)
  }
  const dir = tmp(t)
  const file = join(dir, 'lb.yaml')
  writeFileSync(file, 'listen: 127.0.0.1:0\nttlFlorMs: 100\n')
  const typo = await run(['serve', '--config', file])
  t.equal(typo.code, 2)
  t.match(typo.stderr, /lb\.yaml: ttlFlorMs: unknown setting; did you mean "ttlFloorMs"\?/)
  writeFileSync(file, 'routes:\n  - service: "bad name"\n')
  const badRoute = await run(['serve', '--config', file])
  t.equal(badRoute.code, 2)
  t.match(badRoute.stderr, /routes\[0\]: service "bad name"/)
})

t.test('--help documents every flag with its env var and default', async (t) => {
  const r = await run(['serve', '--help'])
  t.equal(r.code, 0)
  r.stdout = r.stdout.replace(/\s+/g, ' ')
  for (const flag of [
    '--listen',
    '--dns',
    '--domain',
    '--admin',
    '--route',
    '--ttl-floor-ms',
    '--stale-if-error-ms',
    '--balancer',
    '--retries',
    '--empty-pool',
    '--workers',
    '--registrator',
  ])
    t.match(r.stdout, flag)
  t.match(r.stdout, /env CONSUL_LB_LISTEN\) \[default: "0\.0\.0\.0:8080"\]/)
  const top = await run(['--help'])
  for (const c of ['serve', 'registrator', 'nginx', 'dev']) t.match(top.stdout, new RegExp(`\\b${c}\\b`))
})

t.test(
  'consul-lb serve as a process: routes from a config file, env and flags (flags win); SIGTERM exits 0',
  async (t) => {
    const consul = await startConsul(t)
    const bs = [await startBackend('cli-1', '127.0.0.1', 0, t), await startBackend('cli-2', '127.0.0.1', 0, t)]
    for (const b of bs) await consul.register({ ID: b.id, Name: 'cli', Address: b.host, Port: b.port })
    const dir = tmp(t)
    const file = join(dir, 'lb.yaml')
    writeFileSync(file, `dns: ["127.0.0.1:1"]\nroutes:\n  - /from-file=cli,strip\nlogLevel: warn\n`)
    // The file's DNS server is wrong on purpose: the env var must win over it, and the flag over the env's route list.
    const s = await startServe(t, ['--config', file, '--route', '/from-flag=cli,strip'], {
      CONSUL_LB_DNS: consul.dnsAddr,
      CONSUL_LB_ROUTES: '/from-env=cli',
    })
    const viaFlag = await countBackends(s.port, 10, {}, '/from-flag/')
    t.same(viaFlag.counts, { 'cli-1': 5, 'cli-2': 5 }, 'flag route served')
    const viaFile = await countBackends(s.port, 2, {}, '/from-file/')
    t.equal(viaFile.failures, 2, 'routes given as flags replace the file and env routes')
    const status = (await (await fetch(`http://127.0.0.1:${s.admin}/status`)).json()) as {
      proxy: { dns: { servers: string[] } }
    }
    t.same(status.proxy.dns.servers, [consul.dnsAddr], 'env DNS server won over the file')
    s.proc.kill('SIGTERM')
    t.equal(await s.exited, 0, 'SIGTERM → exit 0')
  },
)

t.test('--workers 2: both workers serve, metrics are aggregated, SIGTERM stops all', async (t) => {
  const consul = await startConsul(t)
  const b = await startBackend('wk-1', '127.0.0.1', 0, t)
  await consul.register({ ID: b.id, Name: 'wk', Address: b.host, Port: b.port })
  const s = await startServe(t, ['--dns', consul.dnsAddr, '--workers', '2', '--log-level', 'warn'])
  // The primary's admin answers before the workers listen: wait for the first proxied answer.
  const ready = Date.now() + 60_000
  while (
    (await countBackends(s.port, 1, { host: 'wk.service.consul', keepAlive: false })).failures > 0 &&
    Date.now() < ready
  )
    await sleep(200)
  const before = Number(
    /consul_lb_requests_total\{service="wk",code="2xx"\} (\d+)/.exec(
      await (await fetch(`http://127.0.0.1:${s.admin}/metrics`)).text(),
    )?.[1] ?? 0,
  )
  const r = await countBackends(s.port, 40, { host: 'wk.service.consul', keepAlive: false })
  t.same(r.counts, { 'wk-1': 40 })
  const metrics = await (await fetch(`http://127.0.0.1:${s.admin}/metrics`)).text()
  const after = Number(/consul_lb_requests_total\{service="wk",code="2xx"\} (\d+)/.exec(metrics)?.[1] ?? 0)
  t.equal(after - before, 40, 'counts from both workers add up')
  const status = (await (await fetch(`http://127.0.0.1:${s.admin}/status`)).json()) as { workers: { pid: number }[] }
  t.equal(status.workers.length, 2, 'status lists both workers')
  t.not(status.workers[0]!.pid, status.workers[1]!.pid)
  s.proc.kill('SIGTERM')
  t.equal(await s.exited, 0)
})

t.test('a process that cannot start fully fails with exit 1 instead of running half-started', async (t) => {
  const busy = await import('node:net').then((net) => net.createServer())
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => busy.close())
  const taken = (busy.address() as { port: number }).port
  const port = await freePort()
  const admin = await run(serveArgs(port, taken, '127.0.0.1:1', '--log-level', 'silent'))
  t.equal(admin.code, 1, 'admin port taken → exit 1 (not a proxy without admin)')
  t.match(admin.stderr, /EADDRINUSE/)
  const workers = await run([
    'serve',
    '--workers',
    '2',
    '--listen',
    `127.0.0.1:${taken}`,
    '--admin',
    'off',
    '--dns',
    '127.0.0.1:1',
    '--log-level',
    'silent',
  ])
  t.equal(workers.code, 1, 'workers that cannot listen → exit 1, not a restart loop')
  t.match(workers.stderr, /CLB_WORKER_START_FAILED/)
})
