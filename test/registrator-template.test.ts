import t from 'tap'
import { type DesiredOptions, desiredForContainer } from '../src/registrator/desired.js'
import type { ContainerInspect } from '../src/registrator/docker.js'
import type { ConventionWarning } from '../src/registrator/errors.js'
import { ForcedTags } from '../src/registrator/tags.js'
import { compileTemplate, MAX_OUTPUT, TemplateError } from '../src/registrator/template.js'

/**
 * The `-tags` Go-template evaluator: gliderlabs' helpers and Go's rules where people rely on them, and bounded on the
 * data a container controls (labels and env vars of any size and content). The operator writes the template; a
 * container must not be able to make its evaluation hang, eat memory, reach JavaScript internals or fail the sync of
 * other containers.
 */

function inspect(over: { labels?: Record<string, string>; env?: string[]; name?: string } = {}): ContainerInspect {
  return {
    Id: 'e20f9c1a76565d62ae24a3bb877b17b862b6eab94f4e95a0e07ccf25087aaf4f',
    Name: `/${over.name ?? 'web-1'}`,
    State: { Status: 'running', Running: true, Paused: false, ExitCode: 0 },
    // What Docker's inspect holds beyond the fields the registrator reads (the template sees all of it).
    Config: {
      Hostname: 'e20f9c1a7656',
      Image: 'example/web:1',
      Env: over.env ?? ['ENVIRONMENT=test', 'SERVICE_8105_NAME=foo', 'HOME=/home/foobar', 'SERVICE_9404_NAME=bar'],
      Labels: over.labels ?? {
        'com.amazonaws.ecs.task-arn': 'arn:aws:ecs:region:xxxxxxxxxxxx:task/368f4403-0ee4-4f4c-b7a5-be50c57db5cf',
      },
      ExposedPorts: { '80/tcp': {} },
    } as ContainerInspect['Config'],
    HostConfig: { NetworkMode: 'bridge' },
    NetworkSettings: { Ports: { '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '32768' }] }, Networks: {} },
  }
}

const run = (src: string, data: unknown = inspect()) => compileTemplate(src).execute(data)

t.test("gliderlabs' helpers give the outputs of its own documentation", async (t) => {
  t.equal(run('{{strSlice .ID 0 12}}'), 'e20f9c1a7656')
  t.equal(run('{{sIndex 0 .Config.Env}}'), 'ENVIRONMENT=test')
  t.equal(run('{{sIndex -1 .Config.Env}}'), 'SERVICE_9404_NAME=bar', 'negative: from the end')
  t.equal(run('{{sIndex 99 .Config.Env}}'), 'SERVICE_9404_NAME=bar', 'past the end: the last one')
  t.equal(
    run('{{mIndex "com.amazonaws.ecs.task-arn" .Config.Labels | splitIndex -1 "/"}}'),
    '368f4403-0ee4-4f4c-b7a5-be50c57db5cf',
  )
  t.equal(run('{{toUpper "foo"}}-{{toLower "FoO"}}'), 'FOO-foo')
  t.equal(run('{{replace -1 "=" "" "=foo="}}'), 'foo')
  t.equal(run('{{replace 1 "=" "" "=foo="}}'), 'foo=')
  t.equal(run('{{replace -1 "" "-" "añb"}}'), '-a-ñ-b-', 'Go: an empty old matches before every rune and at the end')
  t.equal(run('{{replace 2 "" "-" "ab"}}'), '-a-b')
  t.equal(
    run('{{join "," .Config.Env}}'),
    'ENVIRONMENT=test,SERVICE_8105_NAME=foo,HOME=/home/foobar,SERVICE_9404_NAME=bar',
  )
  t.equal(run('{{split "," "/proc/bus,/proc/fs,/proc/irq"}}'), '[/proc/bus /proc/fs /proc/irq]')
  t.equal(run('{{matchFirstElement "^SERVICE_" .Config.Env}}'), 'SERVICE_8105_NAME=foo')
  t.equal(run('{{matchAllElements "^SERVICE_" .Config.Env}}'), '[SERVICE_8105_NAME=foo SERVICE_9404_NAME=bar]')
  t.equal(run('{{matchFirstElement "(?i)^home=" .Config.Env}}', inspect()), 'HOME=/home/foobar', "Go's (?i) syntax")
})

t.test("Go's rules: map keys may be missing, fields may not; only the data's own keys are fields", async (t) => {
  t.equal(run('{{.Config.Labels.nope}}'), '', 'a missing label is the empty string (map[string]string)')
  t.throws(() => run('{{.Config.Nope}}'), TemplateError, 'a missing field is an error, as in Go')
  t.throws(() => run('{{.State.String}}'), TemplateError, "go-dockerclient's methods are not there")
  t.throws(() => run('{{.Config.constructor}}'), /can't evaluate field constructor/)
  t.throws(() => run('{{.Config.__proto__}}'), TemplateError)
  t.equal(run('{{.Config.Labels.constructor}}'), '', 'a label named constructor is a missing label')
  t.equal(run('{{index .Config.Labels "toString"}}'), '')
  t.equal(run('{{mIndex "hasOwnProperty" .Config.Labels}}'), '')
  for (const fn of ['constructor', 'toString', '__defineGetter__', 'hasOwnProperty'])
    t.throws(() => compileTemplate(`{{${fn} "x" .Name}}`), /not defined/, `${fn} is no function of a template`)
  t.throws(() => run('{{index .Config.Env 9}}'), /out of range/)
  t.throws(() => run('{{strSlice .ID -1}}'), /negative index/, 'Go panics on a negative slice index')
  t.throws(() => run('{{printf "%x" 1}}'), /verb %x is not supported/)
  t.throws(() => compileTemplate('{{httpGet "http://169.254.169.254/"}}'), /does not fetch URLs/)
})

t.test('hostile data is bounded: output, work, memory and regular expressions', async (t) => {
  const big = 'a'.repeat(200_000)
  const hostile = inspect({
    labels: { big, width: '999999999', re: '(a+)+$', aaa: `${'a'.repeat(5000)}!`, nested: '{{.Config.Env}}' },
    env: Array.from({ length: 5000 }, (_, i) => `E${i}=${'a'.repeat(40)}!`),
  })
  const cases: [string, RegExp][] = [
    ['{{.Config.Labels.big}}', /output longer than/],
    ['{{replace -1 "" .Config.Labels.big .Config.Labels.big}}', /replace: result longer than/],
    ['{{printf (print "%" .Config.Labels.width "s") "x"}}', /width .* is beyond/],
    ['{{range .Config.Env}}{{range $.Config.Env}}x{{end}}{{end}}', /more than \d+ steps/],
    ['{{.Config.Env | join "" | replace -1 "a" "aaaa"}}', /longer than/],
  ]
  for (const [src, re] of cases) {
    const started = Date.now()
    t.throws(() => run(src, hostile), re, src)
    t.ok(Date.now() - started < 5000, `${src}: stopped early`)
  }
  // A backtracking engine takes 2^40 steps for (a+)+$ on 40 a's and a '!'; RE2 is linear (the pattern may even come
  // from a label).
  for (const src of [
    '{{matchFirstElement .Config.Labels.re .Config.Env}}',
    '{{matchAllElements "^(a+)+$" .Config.Env}}',
  ]) {
    const started = Date.now()
    t.equal(run(src, hostile), src.includes('All') ? '[]' : '', src)
    t.ok(Date.now() - started < 5000, `${src}: linear time (${Date.now() - started} ms)`)
  }
  t.equal(run('{{index .Config.Labels "nested"}}', hostile), '{{.Config.Env}}', 'a template in a label is text')
  t.throws(() => compileTemplate(`{{${'('.repeat(500)}.ID${')'.repeat(500)}}}`), /nested deeper/)
  t.throws(() => compileTemplate(`${'{{if 1}}'.repeat(500)}x${'{{end}}'.repeat(500)}`), /nested deeper/)
  t.ok(MAX_OUTPUT >= 4096, 'room for any real tag list')
})

t.test("a hostile container loses its own -tags item, never the other containers' registrations", async (t) => {
  const opts: DesiredOptions = {
    hostId: 'host1',
    ip: null,
    internal: false,
    explicit: false,
    forcedTags: new ForcedTags([
      'team-{{index .Config.Labels "team"}}',
      '{{replace -1 "" .Config.Labels.x .Config.Labels.x}}',
    ]),
    ipFromLabel: null,
    requireLabel: false,
    healthTtl: '90s',
  }
  const bad = desiredForContainer(
    inspect({ name: 'bad', env: [], labels: { team: 'red', x: 'x'.repeat(100_000) } }),
    opts,
  )
  t.same(bad.services[0]!.registration.Tags, ['team-red'], 'registered, without the item that failed')
  t.match(bad.warnings, [{ field: '--tags', message: /replace: result longer than/ }])
  const good = desiredForContainer(inspect({ name: 'good', env: [], labels: { team: 'blue', x: 'ab' } }), opts)
  t.same(
    good.services[0]!.registration.Tags,
    ['team-blue', 'abaabbab'],
    'Go: an empty old matches before every character and at the end',
  )
  // SERVICE_TAGS is never a template (gliderlabs evaluated only -tags).
  const own = desiredForContainer(inspect({ env: ['SERVICE_TAGS={{.Config.Env}}'] }), {
    ...opts,
    forcedTags: new ForcedTags([]),
  })
  t.same(own.services[0]!.registration.Tags, ['{{.Config.Env}}'])
  const w: ConventionWarning[] = []
  t.same(new ForcedTags(['{{.ID | strSlice 0 1}}']).forContainer(inspect(), w), [])
  t.match(
    w,
    [{ field: '--tags', message: /template failed/ }],
    'an argument of the wrong type is a warning, not a throw',
  )
})
