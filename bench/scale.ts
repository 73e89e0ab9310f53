/**
 * `npm run bench:scale`: the cost of a request as the work grows. 1, 100, 1 000 and 5 000 services, one instance
 * each (its own loopback address, so each is its own upstream with its own connections), routed by Host
 * (`s<i>.service.consul`) and by configured route (`/s<i>=s<i>`), on both data planes; 32 keep-alive clients spread
 * their requests over all services (wrk picks one at random per request). Reports req/s and the proxy's RSS at the
 * end of each run, with the 1-service run of the same kind as the reference. Writes bench/results/scale.{json,md}.
 *
 * The `nginx` plane is the reference at the same scale: one nginx worker proxying with what consul-template would
 * render for those services (a static `upstream` with keepalive per service; by Host one `server` block per service
 * name, by route one `location` per prefix), no DNS at all. Part of what a request costs grows with the number of
 * services for any proxy (each request touches another upstream's connection, kernel socket and backend socket);
 * the column "× nginx" divides that out.
 *
 *   npm run bench:scale
 *   npm run bench:scale -- --counts 1,100,1000 --duration 5 --planes passthrough
 *   npm run bench:scale -- --ttl-floors 1000,10000   (each run once per --ttl-floor-ms: the DNS refresh share)
 *   npm run bench:scale -- --shared-instances 3      (every service on the same 3 instances: the services' own share)
 *
 * Every service in use is looked up once per TTL (Consul answers TTL 0, so once per --ttl-floor-ms): with requests
 * spread over 5 000 services at the default 1 s floor, that is up to 5 000 DNS queries a second to the agent on the
 * same cores. Runs at a longer floor show the request path's own cost apart from that refresh.
 *
 * With --shared-instances k, service i's instance is instance i mod k: the services, their routes, answers and
 * balancer state grow as before, but the upstream connections, kernel sockets and backend sockets do not (the
 * data plane pools connections per instance address). What still grows is the cost of the services themselves.
 * Results go to scale-shared<k>.{json,md}.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { startConsul } from '../test/helpers/consul.js'
import { freePort } from '../test/helpers/ports.js'
import { PROXY_HEADERS, waitServing } from './contenders.js'
import { wrkBinary } from './load.js'
import { killAllTrackedSync, sampleTree, sleep, spawnConsulLb, spawnTracked, stopTracked } from './procs.js'
import { nginxBinary, ROOT, SMALL_BODY, waitListening } from './stack.js'

const { values: args } = parseArgs({
  options: {
    counts: { type: 'string', default: '1,100,1000,5000' },
    planes: { type: 'string', default: 'passthrough,classic,nginx' },
    modes: { type: 'string', default: 'host,route' },
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '32' },
    'ttl-floors': { type: 'string', default: '1000' },
    'shared-instances': { type: 'string', default: '0' },
    out: { type: 'string', default: join(ROOT, 'bench', 'results') },
  },
})

process.on('exit', killAllTrackedSync)
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.on(sig, () => {
    killAllTrackedSync()
    process.exit(130)
  })

const counts = args.counts.split(',').map(Number)
const planes = args.planes.split(',') as Plane[]
for (const p of planes)
  if (!['passthrough', 'classic', 'nginx'].includes(p)) throw new Error(`--planes: unknown plane ${JSON.stringify(p)}`)
const modes = args.modes.split(',') as ('host' | 'route')[]
const durationS = Number(args.duration)
const connections = Number(args.connections)
const ttlFloors = args['ttl-floors'].split(',').map(Number)
const shared = Number(args['shared-instances'])
if (!Number.isInteger(shared) || shared < 0)
  throw new Error(`--shared-instances: expected a whole number ≥ 0, got ${JSON.stringify(args['shared-instances'])}`)
const outName = shared === 0 ? 'scale' : `scale-shared${shared}`
const note = (m: string): void => {
  process.stderr.write(`bench:scale: ${m}\n`)
}

/** Instance j's loopback address (127.1.x.y); one port shared by all. */
function addressOf(j: number): string {
  return `127.1.${Math.floor(j / 250)}.${(j % 250) + 1}`
}

/** Service i's instance: its own, or with --shared-instances k, instance i mod k. */
function instanceOf(i: number): number {
  return shared === 0 ? i : i % shared
}

type Plane = 'passthrough' | 'classic' | 'nginx'

interface Row {
  services: number
  plane: Plane
  mode: string
  /** 0 for the nginx reference, which has its addresses in its config and asks no DNS. */
  ttlFloorMs: number
  rps: number
  rssMb: number
  errors: number
  loadavg: string
}

/** wrk's Lua: a random service per request, by Host or by path. */
function wrkScript(n: number, mode: 'host' | 'route'): string {
  return `${[
    `local n = ${n}`,
    'math.randomseed(os.time())',
    'request = function()',
    '  local i = math.random(0, n - 1)',
    mode === 'host'
      ? '  return wrk.format("GET", "/", { ["Host"] = "s" .. i .. ".service.consul" })'
      : '  return wrk.format("GET", "/s" .. i .. "/x")',
    'end',
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format("WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d}\\n", summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout))',
    'end',
  ].join('\n')}\n`
}

/** A whole nginx.conf with one worker and room for thousands of connections; `body` goes inside `http {}`. */
function nginxConf(dir: string, body: string[]): string {
  return `${[
    'worker_processes 1;',
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
    'worker_rlimit_nofile 30000;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log;`,
    'events { worker_connections 20000; }',
    'http {',
    '  access_log off;',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/tmp;`),
    '  keepalive_requests 1000000;',
    '  keepalive_timeout 75s;',
    ...body.map((l) => `  ${l}`),
    '}',
  ].join('\n')}\n`
}

/**
 * The reference proxy for n services: what consul-template renders for nginx, one static upstream per service
 * (keepalive as many connections as there are clients), found by server name (Host) or by location prefix (route).
 */
function nginxProxyConf(dir: string, n: number, mode: 'host' | 'route', listen: string, backendPort: number): string {
  const body: string[] = ['server_names_hash_max_size 16384;', 'server_names_hash_bucket_size 64;']
  for (let i = 0; i < n; i++)
    body.push(`upstream s${i} { server ${addressOf(instanceOf(i))}:${backendPort}; keepalive ${connections}; }`)
  const headers = PROXY_HEADERS.map((l) => `    ${l}`)
  if (mode === 'host')
    for (let i = 0; i < n; i++)
      body.push(
        `server { listen ${listen}; server_name s${i}.service.consul;`,
        '  location / {',
        `    proxy_pass http://s${i};`,
        ...headers,
        '  }',
        '}',
      )
  else {
    body.push(`server { listen ${listen};`)
    for (let i = 0; i < n; i++) body.push(`  location /s${i}/ {`, `    proxy_pass http://s${i}/;`, ...headers, '  }')
    body.push('}')
  }
  return nginxConf(dir, body)
}

async function main(): Promise<void> {
  const wrk = wrkBinary()
  if (!wrk) throw new Error('wrk is required (apt-get install wrk)')
  const max = Math.max(...counts)
  const instances = shared === 0 ? max : Math.min(shared, max)
  const nginxBin = nginxBinary()
  const dir = mkdtempSync(join(tmpdir(), 'consul-lb-bench-scale-'))
  const consul = await startConsul(undefined)
  const rows: Row[] = []
  try {
    // One nginx answering on every service's address (listen sockets are cheap; one worker, as the main bench).
    const port = await freePort()
    const listens = Array.from({ length: instances }, (_, j) => `  listen ${addressOf(j)}:${port};`).join('\n')
    writeFileSync(
      join(dir, 'nginx.conf'),
      nginxConf(dir, [
        'server {',
        listens,
        '  default_type text/plain;',
        `  location / { return 200 '${SMALL_BODY}'; }`,
        '}',
      ]),
    )
    const nginx = spawnTracked(nginxBin, ['-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'])
    await waitListening(addressOf(instances - 1), port, nginx, 'nginx')
    let registered = 0
    for (const n of counts) {
      note(`registering services up to ${n}`)
      while (registered < n) {
        const batch = []
        for (let k = 0; k < 50 && registered < n; k++, registered++)
          batch.push(
            consul.register({
              ID: `s${registered}`,
              Name: `s${registered}`,
              Address: addressOf(instanceOf(registered)),
              Port: port,
            }),
          )
        await Promise.all(batch)
      }
      for (const mode of modes) {
        const script = join(dir, `wrk-${mode}-${n}.lua`)
        writeFileSync(script, wrkScript(n, mode))
        const config = join(dir, `routes-${n}.json`)
        writeFileSync(config, JSON.stringify({ routes: Array.from({ length: n }, (_, i) => `/s${i}=s${i},strip`) }))
        for (const [f, ttlFloorMs] of ttlFloors.entries())
          for (const plane of planes) {
            // nginx asks no DNS: one run per count and routing is its reference.
            if (plane === 'nginx' && f > 0) continue
            const lbPort = await freePort()
            const url = `http://127.0.0.1:${lbPort}`
            const name = plane === 'nginx' ? 'nginx (reference proxy)' : `consul-lb ${plane}`
            let d: ReturnType<typeof spawnTracked>
            if (plane === 'nginx') {
              const ndir = join(dir, `proxy-${n}-${mode}`)
              mkdirSync(join(ndir, 'tmp'), { recursive: true })
              writeFileSync(join(ndir, 'nginx.conf'), nginxProxyConf(ndir, n, mode, `127.0.0.1:${lbPort}`, port))
              d = spawnTracked(nginxBin, ['-p', `${ndir}/`, '-c', join(ndir, 'nginx.conf'), '-g', 'daemon off;'])
            } else
              d = spawnConsulLb(join(ROOT, 'dist', 'cli.js'), [
                'serve',
                '--listen',
                `127.0.0.1:${lbPort}`,
                '--admin',
                'off',
                '--dns',
                consul.dnsAddr,
                '--data-plane',
                plane,
                '--ttl-floor-ms',
                String(ttlFloorMs),
                '--log-level',
                'warn',
                ...(mode === 'route' ? ['--config', config] : []),
              ])
            try {
              await waitListening('127.0.0.1', lbPort, d, name, 120_000)
              if (mode === 'route') await waitServing(`${url}/s0`, d, name, 120_000)
              // Warm-up: every service's answer cached and an upstream connection made, not measured.
              execFileSync(
                wrk,
                ['-t1', `-c${connections}`, `-d${Math.max(3, Math.ceil(n / 1500))}s`, '-s', script, url],
                {
                  stdio: 'ignore',
                },
              )
              const out = execFileSync(
                wrk,
                ['-t1', `-c${connections}`, `-d${durationS}s`, '--timeout', '5s', '-s', script, url],
                { encoding: 'utf8' },
              )
              const j = JSON.parse(
                out
                  .split('\n')
                  .find((l) => l.startsWith('WRKJSON '))!
                  .slice(8),
              ) as {
                requests: number
                duration_us: number
                errors: number
              }
              const rss = sampleTree(d.proc.pid!).rssKb / 1024
              const row: Row = {
                services: n,
                plane,
                mode,
                ttlFloorMs: plane === 'nginx' ? 0 : ttlFloorMs,
                rps: j.requests / (j.duration_us / 1e6),
                rssMb: rss,
                errors: j.errors,
                loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
              }
              rows.push(row)
              note(
                `${n} services, ${mode}, ${plane}${plane === 'nginx' ? '' : `, TTL floor ${ttlFloorMs} ms`}: ${Math.round(row.rps)} req/s, ${row.rssMb.toFixed(0)} MB, ${row.errors} errors`,
              )
            } finally {
              await stopTracked(d.proc, 12_000)
            }
            await sleep(300)
          }
      }
    }
    await stopTracked(nginx.proc)
  } finally {
    await consul.stop()
    rmSync(consul.dir, { recursive: true, force: true })
    rmSync(dir, { recursive: true, force: true })
  }
  mkdirSync(args.out, { recursive: true })
  writeFileSync(
    join(args.out, `${outName}.json`),
    `${JSON.stringify({ finishedAt: new Date().toISOString(), sharedInstances: shared, rows }, null, 2)}\n`,
  )
  const md = markdown(rows)
  writeFileSync(join(args.out, `${outName}.md`), md)
  process.stdout.write(md)
}

function markdown(rows: Row[]): string {
  const lines = [
    '# consul-lb: cost per request as the number of services grows',
    '',
    `${new Date().toISOString()} · wrk -t1 -c${connections}, ${durationS} s per run after a warm-up, a random service per request; ${shared === 0 ? 'one instance per service (own loopback address)' : `every service on the same ${shared} instance${shared === 1 ? '' : 's'} (service i on instance i mod ${shared}, so connections do not grow with services)`}, one nginx answering all; load average at the end of each run in the last column.`,
    '',
    'The nginx rows are the reference at the same scale: one nginx worker proxying with a static upstream (keepalive) per service, found by server name or location prefix, no DNS (what consul-template renders). "× nginx" is req/s over that run\'s (same services, same routing).',
    '',
    '| services | routed by | TTL floor | data plane | req/s | × its 1-service run | × nginx | RSS MB | errors | load avg |',
    '|---:|---|---:|---|---:|---:|---:|---:|---:|---|',
  ]
  const fewest = Math.min(...counts)
  for (const r of rows) {
    const base = rows.find(
      (x) => x.services === fewest && x.plane === r.plane && x.mode === r.mode && x.ttlFloorMs === r.ttlFloorMs,
    )
    const ref =
      r.plane === 'nginx'
        ? undefined
        : rows.find((x) => x.plane === 'nginx' && x.services === r.services && x.mode === r.mode)
    lines.push(
      `| ${r.services.toLocaleString('en-US')} | ${r.mode === 'host' ? 'Host' : 'configured route'} | ${r.plane === 'nginx' ? 'static' : `${r.ttlFloorMs / 1000} s`} | ${r.plane} | ${Math.round(r.rps).toLocaleString('en-US')} | ${base ? (r.rps / base.rps).toFixed(2) : '–'} | ${ref ? (r.rps / ref.rps).toFixed(2) : '–'} | ${r.rssMb.toFixed(0)} | ${r.errors} | ${r.loadavg} |`,
    )
  }
  return `${lines.join('\n')}\n`
}

main().catch((err: unknown) => {
  note(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
  process.exitCode = 1
})
