import { execFileSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import t from 'tap'

/**
 * The image's entrypoint (scripts/docker-entrypoint.sh), run with stand-ins for `node` and `setpriv` that print what
 * they were given: the registrator (both syntaxes) keeps root for the Docker socket; everything else drops privileges.
 * The image itself cannot be built here (no registry), so this is where its privilege rule is checked.
 */

const SCRIPT = resolve(import.meta.dirname, '..', 'scripts', 'docker-entrypoint.sh')

t.test('the registrator keeps root; serve, nginx and the rest run as the node user', async (t) => {
  const bin = mkdtempSync(join(tmpdir(), 'clb-entry-'))
  t.teardown(() => rmSync(bin, { recursive: true, force: true }))
  // The image puts /app/bin (the consul-lb launcher) on PATH; here a stand-in takes its place.
  for (const name of ['consul-lb', 'setpriv']) {
    writeFileSync(join(bin, name), `#!/bin/sh\necho ${name} "$@"\n`)
    chmodSync(join(bin, name), 0o755)
  }
  const run = (...args: string[]) =>
    execFileSync('/bin/sh', [SCRIPT, ...args], { env: { PATH: `${bin}:/usr/bin:/bin` }, encoding: 'utf8' }).trim()
  t.equal(run('registrator', '--resync', '30'), 'consul-lb registrator --resync 30')
  t.equal(
    run('-ip=10.0.0.5', '-resync', '30', 'consul://127.0.0.1:8500'),
    'consul-lb -ip=10.0.0.5 -resync 30 consul://127.0.0.1:8500',
    "gliderlabs' command line as `docker run <image> …` gives it",
  )
  t.equal(run('consul://127.0.0.1:8500'), 'consul-lb consul://127.0.0.1:8500')
  t.equal(
    run('serve', '--listen', '0.0.0.0:8080'),
    'setpriv --reuid=node --regid=node --init-groups consul-lb serve --listen 0.0.0.0:8080',
  )
  t.match(run('nginx', '--mode', 'catalog'), /^setpriv --reuid=node .* nginx --mode catalog$/)
  t.match(run('doctor'), /^setpriv /)
})
