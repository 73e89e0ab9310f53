import { execFileSync, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { processTree } from './procs.ts'
import { NGINX_KEEPALIVE, startNginxDaemon, startStack } from './stack.ts'

const stack = await startStack()
const port = 18000 + Math.floor(Math.random() * 1000)
function stat(pid: number) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return { u: Number(f[11]), s: Number(f[12]) }
}
const which = process.env.WHICH ?? 'pt'
const args =
  which === 'relay'
    ? [
        '--import',
        'tsx',
        '/work/wt/i15/bench/tcp-relay.ts',
        '--listen',
        `127.0.0.1:${port}`,
        '--upstreams',
        stack.backends.map((b) => `${b.host}:${b.port}`).join(','),
      ]
    : [
        ...(process.env.PROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/i15/prof'] : []),
        ...(process.env.PERF ? ['--perf-basic-prof'] : []),
        '/work/wt/i15/dist/cli.js',
        'serve',
        '--listen',
        `127.0.0.1:${port}`,
        '--admin',
        'off',
        '--dns',
        stack.consul.dnsAddr,
        '--route',
        '/=web',
        '--data-plane',
        which === 'pt' ? 'passthrough' : 'classic',
        '--log-level',
        'warn',
      ]
let p: any
if (which === 'nginx') {
  const body = [
    ...NGINX_KEEPALIVE,
    'upstream web_static {',
    ...stack.backends.map((b) => `    server ${b.host}:${b.port};`),
    '    keepalive 64;',
    '}',
    'server {',
    `    listen 127.0.0.1:${port};`,
    '    location / {',
    '        proxy_pass http://web_static;',
    '        proxy_http_version 1.1;',
    '        proxy_set_header Connection "";',
    '        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '    }',
    '}',
  ].join('\n')
  const d = await startNginxDaemon(stack.nginxBin, 'nx', body, port, '127.0.0.1', 1)
  p = d.daemon.proc
} else p = spawn(process.execPath, args, { stdio: 'inherit' })
const treeStat = (root: number) => {
  let u = 0,
    s = 0
  for (const pid of processTree(root)) {
    const x = stat(pid)
    u += x.u
    s += x.s
  }
  return { u, s }
}
await new Promise((r) => setTimeout(r, 2500))
try {
  execFileSync('wrk', ['-t1', `-c50`, '-d2s', `http://127.0.0.1:${port}/`])
  const perf = process.env.PERF
    ? spawn(
        'perf',
        ['record', '-F', '4000', '-g', '-o', '/tmp/i15/perf.data', '-p', String(p.pid), '--', 'sleep', '5'],
        { stdio: 'ignore' },
      )
    : null
  const a = treeStat(p.pid!)
  const out = execFileSync(
    'wrk',
    ['-t1', `-c${process.env.C ?? 50}`, '-d5s', `http://127.0.0.1:${port}${process.env.P ?? '/'}`],
    { encoding: 'utf8' },
  )
  const b = treeStat(p.pid!)
  if (perf) await new Promise((r) => perf.once('exit', r))
  const n = Number(/(\d+) requests in/.exec(out)![1])
  console.log(
    which,
    'req/s',
    (n / 5).toFixed(0),
    'user µs/req',
    (((b.u - a.u) * 1e4) / n).toFixed(1),
    'sys µs/req',
    (((b.s - a.s) * 1e4) / n).toFixed(1),
  )
} finally {
  p.kill('SIGTERM')
  await new Promise((r) => p.once('exit', r))
  await stack.cleanup()
}
