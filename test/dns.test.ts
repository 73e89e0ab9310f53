import t from 'tap'
import { DnsClient } from '../src/dns/client.js'
import { TYPE_SRV } from '../src/dns/message.js'
import { silentLogger } from '../src/log.js'
import { addressFromAddrName, instancesFromSrv } from '../src/resolver/instances.js'
import { ServiceResolver } from '../src/resolver/resolver.js'
import { startConsul } from './helpers/consul.js'
import { srvInstances, startFakeDns } from './helpers/fake-dns.js'

// Fake servers here: a real Consul cannot be told to stay silent, send garbage, or cap UDP and not TCP on demand.

function client(servers: { port: number; label: string }[], transport: 'udp' | 'tcp', timeoutMs = 300): DnsClient {
  return new DnsClient({
    servers: servers.map((s) => ({ host: '127.0.0.1', port: s.port, label: s.label })),
    transport,
    timeoutMs,
  })
}

t.test('.addr. SRV targets decode to IPv4 and IPv6 addresses', async (t) => {
  t.equal(addressFromAddrName('7f000001.addr.dc1.consul'), '127.0.0.1')
  t.equal(addressFromAddrName('0a0b0c0d.addr.dc2.consul'), '10.11.12.13')
  t.equal(addressFromAddrName('00000000000000000000000000000001.addr.dc1.consul'), '0:0:0:0:0:0:0:1')
  t.equal(addressFromAddrName('node1.node.dc1.consul'), null)
})

t.test('a UDP answer capped at 3 records without TC is asked again over TCP, and flagged capped', async (t) => {
  // What Consul does with udp_answer_limit=3 and enable_truncate off, to a client without EDNS.
  const fake = await startFakeDns(t, (q) => ({ srv: srvInstances(q.proto === 'udp' ? 3 : 5) }))
  const c = client([fake], 'udp')
  t.teardown(() => c.close())
  const r = await c.query('web.service.consul', 'SRV')
  t.equal(r.transport, 'tcp')
  t.equal(r.capped, true)
  t.equal(instancesFromSrv(r.message).instances.length, 5)
})

t.test('a UDP answer with the TC bit is retried over TCP', async (t) => {
  const fake = await startFakeDns(t, (q) =>
    q.proto === 'udp' ? { tc: true, srv: srvInstances(1) } : { srv: srvInstances(7) },
  )
  const c = client([fake], 'udp')
  t.teardown(() => c.close())
  const r = await c.query('web.service.consul', 'SRV')
  t.equal(r.transport, 'tcp')
  t.equal(instancesFromSrv(r.message).instances.length, 7)
})

t.test('TCP transport reuses one connection for many queries', async (t) => {
  const fake = await startFakeDns(t, () => ({ srv: srvInstances(2) }))
  const c = client([fake], 'tcp')
  t.teardown(() => c.close())
  await Promise.all(Array.from({ length: 20 }, () => c.query('web.service.consul', 'SRV')))
  for (let i = 0; i < 10; i++) await c.query('web.service.consul', 'SRV')
  t.equal(fake.queries.length, 30)
  t.equal(fake.tcpConnections, 1)
})

t.test('a silent server times out (CLB_DNS_TIMEOUT) and the next server answers', async (t) => {
  const silent = await startFakeDns(t, () => 'silence')
  const good = await startFakeDns(t, () => ({ srv: srvInstances(2) }))
  for (const transport of ['udp', 'tcp'] as const) {
    const c = client([silent, good], transport, 200)
    const r = await c.query('web.service.consul', 'SRV')
    t.equal(r.server, good.label, `${transport}: failed over`)
    const alone = client([silent], transport, 200)
    await t.rejects(alone.query('web.service.consul', 'SRV'), { code: 'CLB_DNS_TIMEOUT' })
    c.close()
    alone.close()
  }
})

t.test('SERVFAIL and malformed answers fail over with stable codes', async (t) => {
  const servfail = await startFakeDns(t, () => ({ rcode: 2 }))
  // A header promising 1 answer followed by nothing: what a cut or corrupted packet looks like.
  const garbage = await startFakeDns(t, () => Buffer.from([0, 0, 0x84, 0, 0, 1, 0, 1, 0, 0, 0, 0, 3, 0x77, 0x65]))
  const good = await startFakeDns(t, () => ({ srv: srvInstances(1) }))
  for (const [bad, code] of [
    [servfail, 'CLB_DNS_SERVFAIL'],
    [garbage, 'CLB_DNS_MALFORMED'],
  ] as const) {
    const alone = client([bad], 'udp')
    await t.rejects(alone.query('web.service.consul', 'SRV'), { code })
    alone.close()
    const c = client([bad, good], 'udp')
    t.equal((await c.query('web.service.consul', 'SRV')).server, good.label)
    c.close()
  }
})

function resolverFor(
  c: DnsClient,
  over: Partial<ConstructorParameters<typeof ServiceResolver>[1]> = {},
): ServiceResolver {
  return new ServiceResolver(c, {
    domain: 'consul',
    ttlFloorMs: 200,
    ttlCeilingMs: 5000,
    staleIfErrorMs: 800,
    negativeTtlMs: 100,
    maxLookups: 32,
    log: silentLogger(),
    ...over,
  })
}

/** Acquires a service entry and waits for its first answer. */
async function firstAnswer(r: ServiceResolver, service: string) {
  const e = r.acquire({ service, tag: null, datacenter: null, port: null })
  r.touch(e, Date.now())
  await r.waitFor(e, 2000, 'answer')
  return e
}

t.test('one query in flight per name, however many callers (no thundering herd)', async (t) => {
  let answering = true
  const fake = await startFakeDns(t, () => (answering ? { srv: srvInstances(3) } : 'silence'))
  const c = client([fake], 'tcp')
  const r = resolverFor(c)
  t.teardown(() => {
    r.close()
    c.close()
  })
  const e = r.acquire({ service: 'web', tag: null, datacenter: null, port: null })
  await Promise.all(Array.from({ length: 50 }, () => r.refresh(e)))
  t.equal(fake.queries.filter((q) => q.type === TYPE_SRV).length, 1)
  t.equal(e.instances.length, 3)
  answering = false
})

t.test('stale-if-error: the last good answer is served while DNS fails, then dropped after the window', async (t) => {
  let answering = true
  const fake = await startFakeDns(t, () => (answering ? { srv: srvInstances(3) } : 'silence'))
  const c = client([fake], 'tcp', 100)
  const r = resolverFor(c, { staleIfErrorMs: 1500 })
  t.teardown(() => {
    r.close()
    c.close()
  })
  const e = await firstAnswer(r, 'web')
  t.equal(e.source, 'fresh')
  answering = false
  // Requests keep reading the answer (a name nobody asks for is not refreshed, so never learns DNS is down).
  for (const until = Date.now() + 800; Date.now() < until; ) {
    r.touch(e, Date.now())
    await new Promise((res) => setTimeout(res, 50))
  }
  t.equal(e.source, 'stale', 'stale while DNS is down')
  t.equal(e.instances.length, 3, 'instances kept')
  t.equal(e.lastError?.code, 'CLB_DNS_TIMEOUT')
  const deadline = Date.now() + 5000
  while (e.instances.length > 0 && Date.now() < deadline) {
    r.touch(e, Date.now())
    await new Promise((res) => setTimeout(res, 100))
  }
  t.equal(e.instances.length, 0, 'dropped after staleIfErrorMs')
  answering = true
  const back = Date.now() + 5000
  while (e.instances.length === 0 && Date.now() < back) {
    r.touch(e, Date.now())
    await new Promise((res) => setTimeout(res, 100))
  }
  t.equal(e.source, 'fresh', 'fresh again when DNS answers')
})

t.test('NXDOMAIN is cached briefly as a negative answer, not treated as an error', async (t) => {
  const fake = await startFakeDns(t, () => ({ rcode: 3 }))
  const c = client([fake], 'udp')
  const r = resolverFor(c, { negativeTtlMs: 5000 })
  t.teardown(() => {
    r.close()
    c.close()
  })
  const e = await firstAnswer(r, 'nope')
  t.equal(e.source, 'negative')
  t.equal(e.lastError, null)
  const n = fake.queries.length
  await new Promise((res) => setTimeout(res, 300))
  t.equal(fake.queries.length, n, 'no new query within the negative TTL')
})

t.test('TTL floor and ceiling clamp the refresh interval', async (t) => {
  const fake = await startFakeDns(t, () => ({ srv: srvInstances(1), ttl: 0 }))
  const c = client([fake], 'udp')
  const r = resolverFor(c, { ttlFloorMs: 500, ttlCeilingMs: 600 })
  t.teardown(() => {
    r.close()
    c.close()
  })
  const e = await firstAnswer(r, 'web')
  t.equal(e.ttlMs, 500, 'TTL 0 raised to the floor')
  fake.handler = () => ({ srv: srvInstances(1), ttl: 3600 })
  await r.refresh(e)
  t.equal(e.ttlMs, 600, 'TTL 3600 s lowered to the ceiling')
})

t.test('real Consul: SRV over TCP and UDP+EDNS see all 5 instances; UDP without EDNS would see 3', async (t) => {
  const consul = await startConsul(t)
  for (let i = 1; i <= 5; i++)
    await consul.register({ ID: `web${i}`, Name: 'web', Address: `127.0.0.${i}`, Port: 9000 + i })
  await consul.register({ ID: 'nodeaddr', Name: 'nodeaddr', Port: 7000 })
  for (const transport of ['tcp', 'udp'] as const) {
    const c = new DnsClient({
      servers: [{ host: '127.0.0.1', port: consul.dnsPort, label: consul.dnsAddr }],
      transport,
      timeoutMs: 1000,
    })
    const r = await c.query('web.service.consul', 'SRV')
    t.equal(instancesFromSrv(r.message).instances.length, 5, `${transport}: 5 instances`)
    const node = instancesFromSrv((await c.query('nodeaddr.service.consul', 'SRV')).message)
    t.same(
      node.instances.map((i) => i.key),
      ['127.0.0.1:7000'],
      `${transport}: node-name target resolved from the additional A record`,
    )
    t.equal((await c.query('nope.service.consul', 'SRV')).kind, 'nxdomain')
    c.close()
  }
})

/**
 * A DnsClient whose queries wait until the test lets them go, counting how many are out at once and in what order
 * they were asked (a real Consul answers too fast for a queue to be seen).
 */
function gatedClient(inner: DnsClient) {
  const g = {
    inFlight: 0,
    maxInFlight: 0,
    asked: [] as string[],
    held: [] as (() => void)[],
    /** Lets the oldest held query go; resolves once it has been sent on. */
    releaseOne(): void {
      g.held.shift()?.()
    },
    async query(name: string, type: 'SRV' | 'A' | 'AAAA') {
      g.asked.push(name)
      g.inFlight++
      g.maxInFlight = Math.max(g.maxInFlight, g.inFlight)
      await new Promise<void>((r) => g.held.push(r))
      try {
        return await inner.query(name, type)
      } finally {
        g.inFlight--
      }
    },
  }
  return g
}

async function until(check: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check() && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5))
}

t.test('at most maxLookups lookups in flight; names a request waits for go ahead of refreshes', async (t) => {
  const fake = await startFakeDns(t, () => ({ srv: srvInstances(1) }))
  const c = client([fake], 'tcp')
  const g = gatedClient(c)
  const r = new ServiceResolver(g as unknown as DnsClient, {
    domain: 'consul',
    ttlFloorMs: 60_000,
    ttlCeilingMs: 60_000,
    staleIfErrorMs: 1000,
    negativeTtlMs: 100,
    maxLookups: 4,
    log: silentLogger(),
  })
  t.teardown(() => {
    r.close()
    c.close()
  })
  const key = (service: string) => ({ service, tag: null, datacenter: null, port: null })
  const cold = Array.from({ length: 20 }, (_, i) => r.acquire(key(`cold${i}`)))
  const waits = cold.map((e) => {
    r.touch(e, Date.now())
    return r.waitFor(e, 10_000, 'answer')
  })
  await until(() => g.inFlight === 4)
  t.equal(g.inFlight, 4, '4 lookups out')
  t.equal(r.queuedLookups, 16, 'the other 16 wait for a slot')
  while (g.asked.length < 20 || g.held.length > 0) {
    g.releaseOne()
    await new Promise((res) => setTimeout(res, 2))
  }
  await Promise.all(waits)
  t.equal(g.maxInFlight, 4, 'never more than maxLookups at once')
  t.ok(
    cold.every((e) => e.instances.length === 1),
    'every name answered',
  )
  // Four refreshes hold the slots, four more wait in the background queue; a cold name a request waits for is
  // asked before them.
  g.asked.length = 0
  for (const e of cold.slice(0, 8)) void r.refresh(e)
  await until(() => g.inFlight === 4)
  const urgent = r.acquire(key('urgent'))
  r.touch(urgent, Date.now())
  const urgentAnswer = r.waitFor(urgent, 10_000, 'answer')
  g.releaseOne()
  await until(() => g.asked.length === 5)
  t.equal(g.asked[4], 'urgent.service.consul', 'the waited-for name takes the first free slot')
  while (g.asked.length < 9 || g.held.length > 0) {
    g.releaseOne()
    await new Promise((res) => setTimeout(res, 2))
  }
  await urgentAnswer
  t.equal(urgent.instances.length, 1)
})

t.test(
  'refresh ahead follows demand: a name nobody reads is not asked again; its next request revalidates',
  async (t) => {
    let port = 9000
    const fake = await startFakeDns(t, () => ({ srv: srvInstances(1, port) }))
    const c = client([fake], 'tcp')
    const r = resolverFor(c, { ttlFloorMs: 200, ttlCeilingMs: 200 })
    t.teardown(() => {
      r.close()
      c.close()
    })
    const read = await firstAnswer(r, 'read')
    const unread = await firstAnswer(r, 'unread')
    const asked = (name: string) => fake.queries.filter((q) => q.name === `${name}.service.consul`).length
    t.equal(asked('read'), 1)
    t.equal(asked('unread'), 1)
    // One second: 'read' is read every 20 ms, 'unread' not at all.
    let waited = 0
    for (const end = Date.now() + 1000; Date.now() < end; ) {
      r.touch(read, Date.now())
      if (read.revalidating) waited++
      await new Promise((res) => setTimeout(res, 20))
    }
    t.equal(waited, 0, 'a name in demand never makes a request wait')
    t.ok(asked('read') >= 4, `the name in demand was refreshed ahead of expiry (${asked('read')} lookups in 1 s)`)
    t.ok(asked('read') <= 8, `about one lookup per TTL (${asked('read')} in 1 s at a 200 ms TTL)`)
    t.equal(asked('unread'), 1, 'the name nobody read was not asked again')
    t.equal(unread.instances[0]?.port, 9000, 'it keeps its answer')
    // Its next request finds the answer expired: it waits for a fresh one (and sees the change).
    port = 9100
    r.touch(unread, Date.now())
    t.ok(unread.revalidating, 'an expired answer is revalidated before use')
    await r.waitFor(unread, 2000, 'revalidated')
    t.equal(unread.instances[0]?.port, 9100, 'the request sees the current instances')
    t.equal(asked('unread'), 2)
  },
)
