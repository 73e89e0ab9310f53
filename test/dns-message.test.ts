import { createRequire } from 'node:module'
import t from 'tap'
import { decodeResponse, encodeQuery, TYPE_A, TYPE_AAAA, TYPE_SRV } from '../src/dns/message.js'
import { DnsError } from '../src/errors.js'

// The wire codec (dns-packet) against another one: dns2, which the tests' fake DNS server is built on, encodes the
// answers here, so a mistake shared by the encoder and decoder of one library cannot hide.
const require = createRequire(import.meta.url)
const { Packet } = require('dns2') as {
  Packet: {
    new (): {
      header: Record<string, number>
      questions: unknown[]
      answers: unknown[]
      additionals: unknown[]
      toBuffer(): Buffer
    }
    parse(b: Buffer): {
      header: Record<string, number>
      questions: { name: string; type: number }[]
      additionals: unknown[]
    }
    TYPE: Record<string, number>
    Resource: { EDNS(rdata: unknown[], opts?: { udpPayloadSize?: number }): unknown }
  }
}

function consulAnswer(n: number, tc = 0): Buffer {
  const p = new Packet()
  p.header.id = 4242
  p.header.qr = 1
  p.header.aa = 1
  p.header.tc = tc
  p.questions.push({ name: 'web.service.consul', type: Packet.TYPE.SRV, class: 1 })
  for (let i = 0; i < n; i++) {
    const target = `0a0000${String(i).padStart(2, '0')}.addr.dc1.consul.`
    p.answers.push({
      name: 'web.service.consul',
      type: Packet.TYPE.SRV,
      class: 1,
      ttl: 30,
      priority: 1,
      weight: 1 + i,
      port: 8000 + i,
      target,
    })
    p.additionals.push({ name: target, type: Packet.TYPE.A, class: 1, ttl: 30, address: `10.0.0.${i}` })
    p.additionals.push({
      name: `Node${i}.node.dc1.consul`,
      type: Packet.TYPE.TXT,
      class: 1,
      ttl: 30,
      data: 'consul-network-segment=',
    })
  }
  p.additionals.push({ name: 'v6.addr.dc1.consul', type: Packet.TYPE.AAAA, class: 1, ttl: 5, address: '::1' })
  p.additionals.push(Packet.Resource.EDNS([], { udpPayloadSize: 4096 }))
  return p.toBuffer()
}

t.test('a Consul-shaped SRV answer decodes: every record, lower-case names without the root dot, no OPT', async (t) => {
  const m = decodeResponse(consulAnswer(40), 'udp://test')
  t.equal(m.id, 4242)
  t.equal(m.rcode, 0)
  t.equal(m.truncated, false)
  t.equal(m.answers.length, 40, 'all 40 SRV records, none capped')
  t.same(m.answers[7], {
    name: 'web.service.consul',
    type: TYPE_SRV,
    ttl: 30,
    priority: 1,
    weight: 8,
    port: 8007,
    target: '0a000007.addr.dc1.consul',
  })
  t.same(m.additionals.filter((r) => r.type === TYPE_A).length, 40)
  t.same(m.additionals.find((r) => r.type === TYPE_A && r.name === '0a000003.addr.dc1.consul')?.address, '10.0.0.3')
  t.same(m.additionals.find((r) => r.type === TYPE_AAAA)?.address, '::1')
  t.equal(m.additionals.filter((r) => r.type === 0).length, 40, 'TXT records kept as type 0: the resolver uses none')
  t.equal(m.additionals.length, 81, 'the OPT pseudo-record is left out')
})

t.test('queries: no recursion asked, EDNS payload size advertised only when given', async (t) => {
  const withEdns = Packet.parse(encodeQuery(7, 'web.service.consul', 'SRV', 4096))
  t.equal(withEdns.header.id, 7)
  t.equal(withEdns.header.rd, 0)
  t.equal(withEdns.header.qr, 0)
  t.same(
    withEdns.questions.map((q) => [q.name, q.type]),
    [['web.service.consul', TYPE_SRV]],
  )
  t.equal(withEdns.additionals.length, 1)
  t.equal(Packet.parse(encodeQuery(8, 'web.service.consul', 'A', 0)).additionals.length, 0)
})

t.test(
  'damage: a cut answer with TC asks for TCP, without TC it is CLB_DNS_MALFORMED; a query is not a response',
  async (t) => {
    const whole = consulAnswer(5, 1)
    const cut = whole.subarray(0, 120)
    const m = decodeResponse(cut, 'udp://test')
    t.same([m.truncated, m.answers.length, m.id], [true, 0, 4242], 'TC and cut mid-record: truncated, nothing used')
    const noTc = Buffer.from(cut)
    noTc[2] = noTc[2]! & ~0x02
    t.throws(() => decodeResponse(noTc, 'udp://test'), {
      code: 'CLB_DNS_MALFORMED',
      message: /malformed DNS response from udp:\/\/test/,
    })
    t.throws(() => decodeResponse(encodeQuery(1, 'x.service.consul', 'A', 0), 'tcp://test'), {
      code: 'CLB_DNS_MALFORMED',
      message: /is not a response/,
    })
    t.throws(() => decodeResponse(Buffer.alloc(5), 'tcp://test'), { code: 'CLB_DNS_MALFORMED', message: /5 bytes/ })
    // A compression pointer to itself: refused, not followed forever.
    const loop = Buffer.from(whole.subarray(0, 12 + 4 + 20))
    loop.writeUInt16BE(1, 6)
    loop.writeUInt16BE(0, 4)
    loop.writeUInt16BE(0, 8)
    loop.writeUInt16BE(0, 10)
    loop.writeUInt16BE(0xc00c, 12)
    loop[2] = loop[2]! & ~0x02
    const err = t.throws(() => decodeResponse(loop, 'tcp://test')) as unknown
    t.ok(err instanceof DnsError, 'a pointer loop is a coded DNS error')
  },
)
