import { spawn } from 'node:child_process'
import { resolve } from 'node:path'
import t from 'tap'
import { sleep, startConsul } from './helpers/consul.js'
import { startDocker, waitFor } from './helpers/docker.js'
import { countBackends } from './helpers/http.js'
import { freePort } from './helpers/ports.js'
import { serveArgs } from './helpers/serve.js'

const CLI = resolve(import.meta.dirname, '..', 'src', 'cli.ts')

t.test(
  'serve --registrator: one process registers containers and balances over them; /status shows both views',
  async (t) => {
    const docker = await startDocker(t)
    const consul = await startConsul(t)
    docker.removeOnTeardown(t, 'emb-1', 'emb-2')
    for (const n of [1, 2])
      await docker.run({
        name: `emb-${n}`,
        publish: ['80'],
        env: { SERVICE_80_NAME: 'emb', SERVICE_80_CHECK_HTTP: '/index.html', SERVICE_80_CHECK_INTERVAL: '1s' },
      })
    const port = await freePort()
    const admin = await freePort()
    const proc = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        CLI,
        ...serveArgs(port, admin, consul.dnsAddr),
        '--log-level',
        'warn',
        '--registrator',
        '--docker',
        docker.url,
        '--consul',
        consul.httpAddr,
        '--ip',
        '127.0.0.1',
        '--host-id',
        'embedded',
        '--resync',
        '2',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    proc.stdout!.on('data', (b: Buffer) => {
      out += b
    })
    proc.stderr!.on('data', (b: Buffer) => {
      out += b
    })
    const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)))
    t.teardown(() => {
      if (proc.exitCode === null) proc.kill('SIGKILL')
    })
    await consul.waitPassing('emb', 2, 30_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${out}`)
    })
    await waitFor(
      'both containers in the rotation',
      async () =>
        Object.keys((await countBackends(port, 4, { host: 'emb.service.consul' }, '/host')).counts).length === 2,
      15_000,
    )
    const r = await countBackends(port, 20, { host: 'emb.service.consul' }, '/host')
    t.equal(r.failures, 0)
    t.same(Object.values(r.counts), [10, 10], `balanced over both containers (${JSON.stringify(r.counts)})`)
    const status = (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as {
      proxy: unknown
      registrator: { hostId: string; registrationsOwned: number }
    }
    t.ok(status.proxy, '/status has the proxy view')
    t.equal(status.registrator.hostId, 'embedded')
    t.equal(status.registrator.registrationsOwned, 2, '/status has the registrator view')
    t.match(
      await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text(),
      /consul_lb_registrator_/,
      'registrator metrics on the proxy admin',
    )
    await sleep(100)
    proc.kill('SIGTERM')
    t.equal(await exited, 0, 'SIGTERM stops both, exit 0')
  },
)
