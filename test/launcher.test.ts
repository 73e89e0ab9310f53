import { execFileSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import t from 'tap'
import { loadDoctorConfig } from '../src/config/doctor.js'
import { loadNginxConfig } from '../src/config/nginx.js'
import { loadRegistratorConfig } from '../src/config/registrator.js'
import { loadServeConfig } from '../src/config/serve.js'
import { ConfigError } from '../src/errors.js'
import { freePort } from './helpers/ports.js'
import { spawnLogged, stopChild } from './helpers/process.js'
import { serveArgs, waitHealthy } from './helpers/serve.js'
import { tempDir } from './helpers/tmp.js'

/**
 * bin/consul-lb, the command npm installs (package.json "bin"), the image runs (its PATH) and `npm run demo` starts:
 * it runs dist/cli.js on the `node` first on PATH with the V8 options the proxy is measured with (the young
 * generation capped: README, "Memory"). First with a stand-in `node` that prints what it was given, then for real.
 */

const ROOT = resolve(import.meta.dirname, '..')
const LAUNCHER = join(ROOT, 'bin', 'consul-lb')
const CLI = join(ROOT, 'dist', 'cli.js')
const CAP = '--max-semi-space-size=2'

/**
 * A folder with a stand-in `node` (one argument per line) and a symbolic link to the launcher, as npm makes one in
 * node_modules/.bin: relative (`../<package>/bin/consul-lb`, here through a second link standing for the package).
 */
function standIn(
  t: { teardown(fn: () => unknown): void },
  script = 'for a in "$@"; do printf "%s\\n" "$a"; done',
): { link: string; path: string } {
  const dir = tempDir(t, 'clb-launcher-')
  writeFileSync(join(dir, 'node'), `#!/bin/sh\n${script}\n`)
  chmodSync(join(dir, 'node'), 0o755)
  mkdirSync(join(dir, '.bin'))
  symlinkSync(ROOT, join(dir, 'consul-lb'))
  const link = join(dir, '.bin', 'consul-lb')
  symlinkSync('../consul-lb/bin/consul-lb', link)
  return { link, path: `${dir}:/usr/bin:/bin` }
}

function argsGiven(link: string, args: string[], env: Record<string, string>): string[] {
  return execFileSync(link, args, { env, encoding: 'utf8' }).split('\n').slice(0, -1)
}

t.test('through a symbolic link it finds the package and starts dist/cli.js, every argument as given', async (t) => {
  const { link, path } = standIn(t)
  t.same(argsGiven(link, ['serve', '--route', 'a b.example=svc', '*'], { PATH: path }), [
    CAP,
    CLI,
    'serve',
    '--route',
    'a b.example=svc',
    '*',
  ])
})

t.test('CONSUL_LB_NODE_OPTIONS replaces the V8 options; empty means none', async (t) => {
  const { link, path } = standIn(t)
  t.same(argsGiven(link, ['--version'], { PATH: path, CONSUL_LB_NODE_OPTIONS: '' }), [CLI, '--version'])
  t.same(
    argsGiven(link, ['--version'], {
      PATH: path,
      CONSUL_LB_NODE_OPTIONS: '--max-semi-space-size=8 --stack-size=900',
    }),
    ['--max-semi-space-size=8', '--stack-size=900', CLI, '--version'],
  )
})

t.test(
  "glibc's mmap threshold is fixed at 128 KiB, unless the environment already chose (empty: dynamic)",
  async (t) => {
    // The stand-in prints what the launcher exported (README, "Memory": a dynamic threshold kept freed blocks resident).
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansions for the stand-in, not a template
    const { link, path } = standIn(t, 'printf "%s|%s\\n" "${MALLOC_MMAP_THRESHOLD_-unset}" "${GLIBC_TUNABLES-unset}"')
    const given = (env: Record<string, string>): string => execFileSync(link, [], { env, encoding: 'utf8' }).trim()
    t.equal(given({ PATH: path }), '131072|unset', 'set when nothing chose one')
    t.equal(given({ PATH: path, MALLOC_MMAP_THRESHOLD_: '' }), 'unset|unset', "empty: glibc's dynamic threshold")
    t.equal(given({ PATH: path, MALLOC_MMAP_THRESHOLD_: '262144' }), '262144|unset', "the operator's value is kept")
    t.equal(
      given({ PATH: path, GLIBC_TUNABLES: 'glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=262144' }),
      'unset|glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=262144',
      'a threshold chosen through GLIBC_TUNABLES is left alone',
    )
    t.equal(
      given({ PATH: path, GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }),
      '131072|glibc.malloc.arena_max=2',
      'other tunables do not stop it',
    )
  },
)

t.test('the real Node takes the options: --version, and a serve process that answers with them', async (t) => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first (npm test does)`)
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version
  t.equal(
    execFileSync(LAUNCHER, ['--version'], {
      encoding: 'utf8',
      env: { ...process.env, CONSUL_LB_NODE_OPTIONS: CAP },
    }).trim(),
    version,
  )

  const admin = await freePort()
  const listen = await freePort()
  // No Consul is needed to start: the resolver asks only when a request names a service.
  // The launcher's own defaults, whatever this shell says.
  const { CONSUL_LB_NODE_OPTIONS: _o, MALLOC_MMAP_THRESHOLD_: _m, GLIBC_TUNABLES: _g, ...env } = process.env
  const s = spawnLogged(LAUNCHER, serveArgs(listen, admin, '127.0.0.1:9', '--log-level', 'warn'), { env })
  t.teardown(() => stopChild(s.proc))
  await waitHealthy(s.proc, s.output, admin, 'bin/consul-lb serve', 30_000)
  // The launcher execs: the PID spawned is Node's own, and its command line carries the cap.
  const cmdline = readFileSync(`/proc/${s.proc.pid}/cmdline`, 'utf8').split('\0')
  t.ok(cmdline.includes(CAP), `node runs with ${CAP}: ${cmdline.join(' ')}`)
  t.ok(cmdline.includes(CLI), 'and runs dist/cli.js')
  const environ = readFileSync(`/proc/${s.proc.pid}/environ`, 'utf8').split('\0')
  t.ok(environ.includes('MALLOC_MMAP_THRESHOLD_=131072'), "with glibc's mmap threshold fixed")
  s.proc.kill('SIGTERM')
  t.equal(await s.exited, 0, 'SIGTERM → exit 0')
})

t.test("the launcher's and the entrypoint's variables are not settings; a misspelt one still fails", async (t) => {
  const env = { CONSUL_LB_NODE_OPTIONS: '--max-semi-space-size=4', CONSUL_LB_USER: 'node' }
  t.doesNotThrow(() => loadServeConfig({ env }), 'serve runs with them')
  t.doesNotThrow(() => loadRegistratorConfig({ env }), 'the registrator runs with them')
  t.doesNotThrow(() => loadNginxConfig({ env, flags: { routes: ['/=web:80'] } }), 'nginx runs with them')
  t.doesNotThrow(() => loadDoctorConfig({ env }), 'doctor runs with them')
  t.throws(
    () => loadServeConfig({ env: { CONSUL_LB_NODE_OPTION: '' } }),
    new ConfigError('env CONSUL_LB_NODE_OPTION', 'unknown setting'),
  )
})
