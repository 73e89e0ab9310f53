import t from 'tap'
import type { AgentService } from '../src/consul/client.js'
import { readConventions, serviceSettings } from '../src/registrator/conventions.js'
import {
  type DesiredOptions,
  defaultName,
  desiredForContainer,
  META_OWNER,
  META_SPEC,
} from '../src/registrator/desired.js'
import type { ContainerInspect } from '../src/registrator/docker.js'
import { keepsRegistration } from '../src/registrator/drainer.js'
import type { ConventionWarning } from '../src/registrator/errors.js'
import { planReconcile } from '../src/registrator/reconcile.js'
import { ForcedTags, splitTags } from '../src/registrator/tags.js'

const OPTS: DesiredOptions = {
  hostId: 'host1',
  ip: null,
  internal: false,
  explicit: false,
  forcedTags: new ForcedTags([]),
  ipFromLabel: null,
  requireLabel: false,
  healthTtl: '90s',
}

function container(over: {
  env?: string[]
  labels?: Record<string, string>
  ports?: Record<string, { HostIp: string; HostPort: string }[] | null>
  image?: string
  name?: string
  networkMode?: string
  exposed?: string[]
  networks?: Record<string, { IPAddress: string }>
  health?: string
}): ContainerInspect {
  return {
    Id: 'c0ffee'.padEnd(64, '0'),
    Name: `/${over.name ?? 'web-1'}`,
    State: {
      Status: 'running',
      Running: true,
      Paused: false,
      ExitCode: 0,
      ...(over.health ? { Health: { Status: over.health } } : {}),
    },
    Config: {
      Image: over.image ?? 'example/web:1.2',
      Env: over.env ?? [],
      Labels: over.labels ?? {},
      ExposedPorts: Object.fromEntries((over.exposed ?? ['80/tcp']).map((p) => [p, {}])),
      ...(over.health ? { Healthcheck: { Test: ['CMD-SHELL', 'true'] } } : {}),
    },
    HostConfig: { NetworkMode: over.networkMode ?? 'net1' },
    NetworkSettings: {
      Ports: over.ports ?? { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '32768' }] },
      Networks: over.networks ?? { net1: { IPAddress: '10.0.0.5' } },
    },
  }
}

t.test("an env var wins over a label of the same name, and the prefix is upper case, as gliderlabs'", async (t) => {
  const c = readConventions(['SERVICE_NAME=from-env', 'SERVICE_TAGS=a'], {
    SERVICE_NAME: 'from-label',
    SERVICE_region: 'eu',
    service_ignore: 'true',
    Service_Port: '1',
  })
  const w: ConventionWarning[] = []
  const s = serviceSettings(c, 80, w)
  t.equal(s.name, 'from-env', 'bridge/util.go: "Env take precedence over labels"')
  t.same(s.tags, ['a'])
  t.same(s.meta, { region: 'eu' }, 'the key after the prefix is read in any case')
  t.equal(s.ignore, false, 'service_ignore is not SERVICE_IGNORE (gliderlabs matched the prefix as written)')
  t.same(w, [])
})

t.test(
  'per-port settings win over container-wide ones, for that port only; a container-wide name gets -<port> with several ports, as in registrator',
  async (t) => {
    const d = desiredForContainer(
      container({
        env: ['SERVICE_NAME=all', 'SERVICE_443_NAME=secure', 'SERVICE_TAGS=x', 'SERVICE_443_TAGS=y'],
        ports: {
          '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }],
          '443/tcp': [{ HostIp: '0.0.0.0', HostPort: '8443' }],
        },
        exposed: ['80/tcp', '443/tcp'],
      }),
      OPTS,
    )
    t.same(
      d.services.map((s) => [s.registration.ID, s.registration.Name, s.registration.Tags, s.registration.Port]),
      [
        ['host1:web-1:80', 'all-80', ['x'], 8080],
        ['host1:web-1:443', 'secure', ['y'], 8443],
      ],
    )
    t.equal(
      d.services[0]!.registration.Address,
      undefined,
      "a 0.0.0.0 binding registers no address: Consul uses the agent's",
    )
  },
)

t.test(
  'default names follow gliderlabs: image base name as written, -<port> with several ports; UDP gets :udp and a tag',
  async (t) => {
    t.equal(defaultName(container({ image: 'registry.local:5000/team/nginx:1.25' })), 'nginx')
    t.equal(defaultName(container({ image: 'team/my_app:2' })), 'my_app', 'underscores kept (gliderlabs: my_app)')
    t.equal(defaultName(container({ image: 'Team/MyApp' })), 'MyApp', 'case kept (Consul DNS ignores case)')
    t.equal(defaultName(container({ image: 'httpd@sha256:abcd' })), 'httpd', 'a digest is not part of the name')
    t.equal(
      defaultName(container({ image: 'sha256:0123', name: 'my_box' })),
      'my_box',
      'image by id: the container name',
    )
    const dotted = desiredForContainer(container({ image: 'acme/app.v2:1' }), OPTS)
    t.equal(dotted.services[0]!.registration.Name, 'app.v2', "gliderlabs' name, kept")
    t.match(dotted.warnings, [{ field: 'image', message: /cannot be answered by Consul DNS/ }], 'and the trap is named')
    const d = desiredForContainer(
      container({
        image: 'coredns',
        ports: {
          '53/udp': [{ HostIp: '127.0.0.1', HostPort: '5353' }],
          '53/tcp': [{ HostIp: '127.0.0.1', HostPort: '5354' }],
        },
        exposed: ['53/udp', '53/tcp'],
      }),
      OPTS,
    )
    t.same(
      d.services.map((s) => [s.registration.ID, s.registration.Name, s.registration.Tags]),
      [
        ['host1:web-1:53', 'coredns-53', []],
        ['host1:web-1:53:udp', 'coredns-53', ['udp']],
      ],
    )
  },
)

t.test('unpublished ports are not registered; SERVICE_IGNORE and --explicit skip with a reason', async (t) => {
  t.equal(desiredForContainer(container({ ports: { '80/tcp': null } }), OPTS).skipped, 'no published ports')
  t.equal(desiredForContainer(container({ env: ['SERVICE_IGNORE=1'] }), OPTS).skipped, 'SERVICE_IGNORE')
  const ignoredFalse = desiredForContainer(container({ env: ['SERVICE_IGNORE=false'] }), OPTS)
  t.equal(ignoredFalse.skipped, 'SERVICE_IGNORE', 'gliderlabs ignores on any value, false included')
  t.match(ignoredFalse.warnings, [{ field: 'SERVICE_IGNORE', message: /remove the variable/ }], 'and says so')
  t.equal(desiredForContainer(container({ env: ['SERVICE_IGNORE='] }), OPTS).services.length, 1, 'empty: not set')
  t.match(desiredForContainer(container({}), { ...OPTS, explicit: true }).skipped, /explicit/)
  t.equal(
    desiredForContainer(container({ env: ['SERVICE_80_NAME=x'] }), { ...OPTS, explicit: true }).services.length,
    1,
  )
})

t.test('a bad port in SERVICE_<port>_NAME is reported with its field and the container is still handled', async (t) => {
  const d = desiredForContainer(
    container({
      env: ['SERVICE_99999_NAME=nope', 'SERVICE_8o_NAME=typo', 'SERVICE_81_NAME=unpublished', 'SERVICE_NAME=web'],
    }),
    OPTS,
  )
  t.same(
    d.services.map((s) => s.registration.Name),
    ['web'],
  )
  t.same(d.warnings.map((w) => w.field).sort(), ['SERVICE_81_NAME', 'SERVICE_8o_NAME', 'SERVICE_99999_NAME'])
  t.ok(d.warnings.every((w) => w.code === 'CLB_REG_BAD_CONVENTION'))
  t.match(d.warnings.find((w) => w.field === 'SERVICE_81_NAME')!.message, /not published/)
})

t.test(
  'check settings: HTTP with the published address, bad interval falls back to 10s, bad status/timeout dropped',
  async (t) => {
    const d = desiredForContainer(
      container({
        env: [
          'SERVICE_CHECK_HTTP=health',
          'SERVICE_CHECK_INTERVAL=every 5s',
          'SERVICE_CHECK_TIMEOUT=0s',
          'SERVICE_CHECK_INITIAL_STATUS=green',
          'SERVICE_CHECK_HTTP_METHOD=head',
          'SERVICE_CHECK_DEREGISTER_AFTER=10m',
        ],
      }),
      OPTS,
    )
    t.same(d.services[0]!.registration.Checks, [
      {
        CheckID: 'service:host1:web-1:80',
        Name: 'web http check',
        HTTP: 'http://127.0.0.1:32768/health',
        Method: 'HEAD',
        Interval: '10s',
        DeregisterCriticalServiceAfter: '10m',
      },
    ])
    t.same(d.warnings.map((w) => w.field).sort(), [
      'SERVICE_CHECK_HTTP',
      'SERVICE_CHECK_INITIAL_STATUS',
      'SERVICE_CHECK_INTERVAL',
      'SERVICE_CHECK_TIMEOUT',
    ])
  },
)

t.test('TCP, HTTPS and TTL checks; script checks are refused with a warning', async (t) => {
  const check = (env: string[]) => desiredForContainer(container({ env }), OPTS)
  t.same(check(['SERVICE_CHECK_TCP=true', 'SERVICE_CHECK_TIMEOUT=2s']).services[0]!.registration.Checks![0], {
    CheckID: 'service:host1:web-1:80',
    Name: 'web tcp check',
    TCP: '127.0.0.1:32768',
    Interval: '10s',
    Timeout: '2s',
  })
  t.match(check(['SERVICE_CHECK_HTTPS=/x']).services[0]!.registration.Checks![0], { HTTP: 'https://127.0.0.1:32768/x' })
  t.match(
    check(['SERVICE_CHECK_TTL=30s', 'SERVICE_CHECK_INITIAL_STATUS=passing']).services[0]!.registration.Checks![0],
    { TTL: '30s', Status: 'passing' },
  )
  const script = check(['SERVICE_CHECK_SCRIPT=curl localhost'])
  t.equal(script.services[0]!.registration.Checks, undefined)
  t.equal(script.warnings[0]!.field, 'SERVICE_CHECK_SCRIPT')
})

t.test('unparseable tags and Meta keys: the bad items are dropped and named, the rest kept', async (t) => {
  const d = desiredForContainer(
    container({
      env: ['SERVICE_TAGS=a, ,b c,a,d', 'SERVICE_VERSION=1.2', 'SERVICE_80_REGION=eu', 'SERVICE_CONSUL-X=no'],
    }),
    { ...OPTS, forcedTags: new ForcedTags(['global', 'd']) },
  )
  const reg = d.services[0]!.registration
  t.same(reg.Tags, ['a', 'd', 'global'])
  t.same(
    Object.keys(reg.Meta!).filter((k) => !k.startsWith('clb-')),
    ['region', 'version'],
    'other SERVICE_<KEY> become Meta, lower-cased',
  )
  t.equal(reg.Meta![META_OWNER], 'host1', 'the ownership mark')
  t.same(
    d.warnings.map((w) => w.field).sort(),
    ['SERVICE_CONSUL-X', 'SERVICE_TAGS'],
    'the tag with a space is named; empty items are skipped silently, as gliderlabs does',
  )
})

t.test(
  'host networking registers only named ports; internal mode the container IP, SERVICE_NETWORK choosing it',
  async (t) => {
    const host = desiredForContainer(
      container({
        networkMode: 'host',
        ports: {},
        env: ['SERVICE_9000_NAME=metrics'],
        exposed: ['80/tcp', '9000/tcp'],
      }),
      { ...OPTS, ip: '192.0.2.1' },
    )
    t.same(
      host.services.map((s) => [s.registration.Name, s.registration.Address, s.registration.Port]),
      [['metrics', '192.0.2.1', 9000]],
    )
    t.equal(
      desiredForContainer(container({ networkMode: 'host', ports: {} }), OPTS).skipped,
      'host network: no SERVICE_<port>_NAME',
    )
    const nets = { a: { IPAddress: '10.0.0.5' }, b: { IPAddress: '10.1.0.5' } }
    t.equal(
      desiredForContainer(container({ networks: nets }), { ...OPTS, internal: true }).services[0]!.registration.Address,
      '10.0.0.5',
    )
    const chosen = desiredForContainer(container({ networks: nets, env: ['SERVICE_NETWORK=b'] }), {
      ...OPTS,
      internal: true,
    })
    t.equal(chosen.services[0]!.registration.Address, '10.1.0.5')
    t.equal(chosen.services[0]!.registration.Port, 80)
    const missing = desiredForContainer(container({ networks: nets, env: ['SERVICE_NETWORK=c'] }), {
      ...OPTS,
      internal: true,
    })
    t.equal(
      missing.services[0]!.registration.Address,
      '10.0.0.5',
      'an unknown network falls back to the first, with a warning',
    )
    t.equal(missing.warnings[0]!.field, 'SERVICE_NETWORK')
    t.equal(desiredForContainer(container({ env: ['SERVICE_IP=not-an-ip'] }), OPTS).warnings[0]!.field, 'SERVICE_IP')
    const perPort = desiredForContainer(container({ env: ['SERVICE_80_IP=192.0.2.9'] }), OPTS)
    t.same(
      [perPort.services[0]!.registration.Address, perPort.warnings.map((w) => w.field)],
      ['127.0.0.1', ['SERVICE_80_IP']],
      'a per-port address setting is reported, not silently dropped',
    )
    const published = desiredForContainer(container({ networks: nets, env: ['SERVICE_NETWORK=b'] }), OPTS)
    t.same(
      [published.services[0]!.registration.Address, published.warnings.map((w) => w.field)],
      ['127.0.0.1', ['SERVICE_NETWORK']],
      'SERVICE_NETWORK without internal mode is reported, not silently ignored',
    )
  },
)

t.test('a HEALTHCHECK adds a TTL mirror whose status does not change the registration hash', async (t) => {
  const starting = desiredForContainer(container({ health: 'starting' }), OPTS)
  const healthy = desiredForContainer(container({ health: 'healthy' }), OPTS)
  t.match(starting.services[0]!.registration.Checks![0], {
    CheckID: 'service:host1:web-1:80:docker-health',
    TTL: '90s',
    Status: 'critical',
  })
  t.equal(healthy.health, 'passing')
  t.equal(starting.services[0]!.hash, healthy.services[0]!.hash, 'health flips are TTL updates, not re-registrations')
  t.not(
    desiredForContainer(container({ env: ['SERVICE_TAGS=new'] }), OPTS).services[0]!.hash,
    desiredForContainer(container({}), OPTS).services[0]!.hash,
  )
})

t.test('reconcile: unchanged is left alone, foreign IDs are conflicts, only owned services are removed', async (t) => {
  const desired = desiredForContainer(container({}), OPTS).services
  const own = (id: string, hash: string | null, containerId = 'other'): AgentService => ({
    ID: id,
    Service: 's',
    Address: '',
    Port: 1,
    Tags: [],
    Meta: { [META_OWNER]: 'host1', 'clb-container': containerId, ...(hash ? { [META_SPEC]: hash } : {}) },
  })
  const same = planReconcile(desired, { 'host1:web-1:80': own('host1:web-1:80', desired[0]!.hash) }, 'host1', {
    mayRemove: () => true,
  })
  t.same([same.register.length, same.unchanged], [0, 1])
  const changed = planReconcile(desired, { 'host1:web-1:80': own('host1:web-1:80', 'old') }, 'host1', {
    mayRemove: () => true,
  })
  t.equal(changed.register.length, 1)
  const foreign = planReconcile(
    desired,
    {
      'host1:web-1:80': { ...own('host1:web-1:80', null), Meta: null },
      hand: { ...own('hand', null), Meta: {} },
      other: { ...own('other', null), Meta: { [META_OWNER]: 'host2' } },
    },
    'host1',
    { mayRemove: () => true },
  )
  t.same(
    foreign.conflicts.map((c) => c.id),
    ['host1:web-1:80'],
  )
  t.same(foreign.deregister, [], "neither hand-made nor other hosts' services are removed")
  const gone = planReconcile([], { a: own('a', 'h', 'c1'), b: own('b', 'h', 'c2') }, 'host1', {
    mayRemove: (o) => o.containerId === 'c1',
  })
  t.same(
    gone.deregister.map((o) => o.id),
    ['a'],
  )
})

t.test("SERVICE_TAGS: gliderlabs' escaped commas (its own unit-test table)", async (t) => {
  const cases: [string, string[]][] = [
    ['', []],
    ['foobar', ['foobar']],
    ['foo,bar', ['foo', 'bar']],
    ['foo\\,bar', ['foo,bar']],
    ['foo,bar\\,baz', ['foo', 'bar,baz']],
    ['\\,foobar\\,', [',foobar,']],
    [',,,,foo,,,bar,,,', ['foo', 'bar']],
    [',,,,', []],
    [',,\\,,', [',']],
  ]
  for (const [text, want] of cases) t.same(splitTags(text), want, JSON.stringify(text))
  const d = desiredForContainer(container({ env: ['SERVICE_TAGS=urlprefix-/a\\,b,v1'] }), OPTS)
  t.same(d.services[0]!.registration.Tags, ['urlprefix-/a,b', 'v1'])
})

t.test('checks: HTTPS uses SERVICE_CHECK_HTTPS_METHOD, gRPC with TLS switches, as gliderlabs', async (t) => {
  const check = (env: string[]) => {
    const d = desiredForContainer(container({ env }), OPTS)
    return { check: d.services[0]!.registration.Checks?.[0], warnings: d.warnings }
  }
  const https = check([
    'SERVICE_CHECK_HTTPS=/health',
    'SERVICE_CHECK_HTTPS_METHOD=HEAD',
    'SERVICE_CHECK_HTTP_METHOD=POST',
    'SERVICE_CHECK_TLS_SKIP_VERIFY=true',
  ])
  t.match(https.check, { HTTP: 'https://127.0.0.1:32768/health', Method: 'HEAD', TLSSkipVerify: true })
  t.match(https.warnings, [{ field: 'SERVICE_CHECK_HTTP_METHOD', message: /HTTP checks only/ }])
  t.match(check(['SERVICE_CHECK_HTTP=/h', 'SERVICE_CHECK_HTTP_METHOD=post']).check, { Method: 'POST' })
  t.notOk(
    'Method' in (check(['SERVICE_CHECK_HTTP=/h', 'SERVICE_CHECK_HTTPS_METHOD=HEAD']).check ?? {}),
    'the HTTPS method is not applied to an HTTP check',
  )
  const grpc = check(['SERVICE_CHECK_GRPC=true', 'SERVICE_CHECK_GRPC_USE_TLS=1', 'SERVICE_CHECK_TLS_SKIP_VERIFY=1'])
  t.match(grpc.check, { GRPC: '127.0.0.1:32768', GRPCUseTLS: true, TLSSkipVerify: true, Interval: '10s' })
  t.same(grpc.warnings, [], 'SERVICE_CHECK_GRPC is known')
  const plain = check(['SERVICE_CHECK_GRPC=true', 'SERVICE_CHECK_TLS_SKIP_VERIFY=1'])
  t.notOk('GRPCUseTLS' in plain.check!)
  t.notOk('TLSSkipVerify' in plain.check!, 'skip-verify needs TLS (gliderlabs)')
  t.match(check(['SERVICE_CHECK_GRPC=1', 'SERVICE_CHECK_GRPC_USE_TLS=false']).warnings, [
    { field: 'SERVICE_CHECK_GRPC_USE_TLS', message: /false included/ },
  ])
})

t.test('--require-label, --use-ip-from-label, NetworkMode container:<id> and --tags templates', async (t) => {
  t.match(desiredForContainer(container({}), { ...OPTS, requireLabel: true }).skipped, /SERVICE_REGISTER/)
  t.equal(
    desiredForContainer(container({ labels: { SERVICE_REGISTER: 'true' } }), { ...OPTS, requireLabel: true }).services
      .length,
    1,
  )
  const labelled = desiredForContainer(container({ labels: { 'net.ip': '10.9.8.7/24' } }), {
    ...OPTS,
    ipFromLabel: 'net.ip',
  })
  t.equal(labelled.services[0]!.registration.Address, '10.9.8.7', 'the label, without its prefix length')
  const pod = container({ networkMode: `container:${'a'.repeat(64)}`, ports: {}, exposed: ['8080/tcp'] })
  const owner = container({ networks: { bridge: { IPAddress: '172.17.0.9' } } })
  const inPod = desiredForContainer(pod, OPTS, owner)
  t.same(
    inPod.services.map((s) => [s.registration.Address, s.registration.Port]),
    [['172.17.0.9', 8080]],
    "the exposed port at the network owner's address",
  )
  t.match(desiredForContainer(pod, OPTS, null).skipped, /no IP address/)
  const tagged = desiredForContainer(container({ labels: { team: 'pay' } }), {
    ...OPTS,
    forcedTags: new ForcedTags(['env-{{index .Config.Labels "team"}},{{ strSlice .ID 0 6 }}', 'a\\,b', '{{.Nope}}']),
  })
  t.same(tagged.services[0]!.registration.Tags, ['env-pay', 'c0ffee', 'a,b'])
  t.match(tagged.warnings, [{ field: '--tags', value: '{{.Nope}}', message: /can't evaluate field Nope/ }])
})

t.test('--deregister: on-success deregisters exits by a signal as gliderlabs; never keeps every exit', async (t) => {
  t.equal(keepsRegistration('always', 1), false)
  t.equal(keepsRegistration('on-success', 0), false)
  t.equal(keepsRegistration('on-success', 3), true)
  t.equal(keepsRegistration('on-success', 137), false, 'docker kill')
  t.equal(keepsRegistration('on-success', 143), false, 'docker stop')
  t.equal(keepsRegistration('never', 0), true)
  t.equal(keepsRegistration('never', 143), true)
})

/** An agent service as gliderlabs wrote it: no Meta mark, an address; `web` on the container's published port. */
function reg(id: string, over: Partial<AgentService> = {}): AgentService {
  return { ID: id, Service: 'web', Address: '192.0.2.1', Port: 32768, Tags: [], Meta: {}, ...over }
}

t.test('reconcile: gliderlabs registrations of this host are adopted or removed; others never', async (t) => {
  const desired = desiredForContainer(container({}), OPTS).services
  const agent = {
    'host1:web-1:80': reg('host1:web-1:80'),
    'host1:gone:80': reg('host1:gone:80', { Service: 'gone' }),
    'host1:stopped:80': reg('host1:stopped:80', { Service: 'stopped' }),
    'host1:alive:9000': reg('host1:alive:9000', { Service: 'alive' }),
    'host2:gone:80': reg('host2:gone:80'),
    'host1:noaddr:80': reg('host1:noaddr:80', { Address: '' }),
    'by-hand': reg('by-hand'),
  }
  const containers = {
    byName: new Map([
      ['web-1', 'c0ffee'.padEnd(64, '0')],
      ['stopped', 'stopped-id'],
      ['alive', 'alive-id'],
    ]),
    running: new Set(['web-1', 'alive']),
    cleanup: true,
  }
  const plan = planReconcile(desired, agent, 'host1', {
    mayRemove: (o) => o.containerId !== 'kept-id',
    containers,
  })
  t.equal(plan.adopted, 1, "the running container's registration is taken over")
  t.same(
    plan.register.map((d) => d.registration.ID),
    ['host1:web-1:80'],
  )
  t.same(
    plan.deregister.map((o) => [o.id, o.containerId]).sort(),
    [
      ['host1:gone:80', ''],
      ['host1:stopped:80', 'stopped-id'],
    ],
    "this host's registrations of containers that are not running",
  )
  t.same(
    plan.conflicts.map((c) => c.id),
    ['host1:alive:9000'],
    'a running container registered by gliderlabs beyond what is wanted is left alone (and reported)',
  )
  const handMade = planReconcile(desired, { 'host1:web-1:80': reg('host1:web-1:80', { Port: 1234 }) }, 'host1', {
    mayRemove: () => true,
  })
  t.equal(handMade.adopted, 0)
  t.match(handMade.conflicts, [{ id: 'host1:web-1:80', reason: /registered as web:1234/ }])
  const other = planReconcile(
    desired,
    { 'host1:web-1:80': reg('host1:web-1:80', { Meta: { [META_OWNER]: 'h2' } }) },
    'host1',
    {
      mayRemove: () => true,
    },
  )
  t.match(other.conflicts, [{ reason: /host h2/ }])
  const kept = planReconcile([], { 'host1:stopped:80': agent['host1:stopped:80'] }, 'host1', {
    mayRemove: (o) => o.containerId !== 'stopped-id',
    containers,
  })
  t.same(kept.deregister, [], 'a container --deregister keeps is not removed')
})

t.test('reconcile: what only looks like gliderlabs is never adopted, and gone ones wait for --cleanup', async (t) => {
  const desired = desiredForContainer(container({}), OPTS).services
  const adopt = (existing: AgentService, d = desired) =>
    planReconcile(d, { [existing.ID]: existing }, 'host1', { mayRemove: () => true })
  // Same ID, name and port as the container wants, but no address: a person's entry, never gliderlabs'.
  const noAddress = adopt(reg('host1:web-1:80', { Address: '' }))
  t.same([noAddress.adopted, noAddress.register.length], [0, 0])
  t.match(noAddress.conflicts, [{ id: 'host1:web-1:80', reason: /without an address/ }])
  // A container's SERVICE_ID copying another host's gliderlabs ID (its registrator may register on this agent).
  const copied = desiredForContainer(container({ env: ['SERVICE_ID=host2:web-1:80'] }), OPTS).services
  const otherHost = adopt(reg('host2:web-1:80'), copied)
  t.equal(otherHost.adopted, 0)
  t.match(otherHost.conflicts, [{ reason: /another host's name \(host2\)/ }])
  // Host names that are prefixes of each other, or hold a colon, are other hosts.
  for (const id of ['host10:web-1:80', 'host1:x:web-1:80', 'host:web-1:80']) {
    const other = planReconcile([], { [id]: reg(id) }, 'host1', {
      mayRemove: () => true,
      containers: { byName: new Map(), running: new Set(), cleanup: true },
    })
    t.same([other.deregister, other.conflicts], [[], []], `${id}: not this host's`)
  }
  // Without --cleanup a gone container's gliderlabs entry stays (as with gliderlabs) and is reported.
  const gone = { 'host1:gone:80': reg('host1:gone:80', { Service: 'gone' }) }
  const scope = (cleanup: boolean) => ({
    mayRemove: () => true,
    containers: { byName: new Map<string, string>(), running: new Set<string>(), cleanup },
  })
  const kept = planReconcile([], gone, 'host1', scope(false))
  t.same(kept.deregister, [], 'no --cleanup: left in place')
  t.match(kept.conflicts, [{ id: 'host1:gone:80', reason: /only with --cleanup/ }])
  t.same(
    planReconcile([], gone, 'host1', scope(true)).deregister.map((o) => o.id),
    ['host1:gone:80'],
    '--cleanup: removed',
  )
})
