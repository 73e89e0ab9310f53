import { chmodSync, copyFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import type { Report } from '../src/doctor/report.js'
import {
  makeClientCert,
  makeTlsMaterial,
  POLICIES,
  type SecureConsul,
  secureEnv,
  signCert,
  startConsul,
  startSecureConsul,
} from './helpers/consul.js'
import { startFakeDns } from './helpers/fake-dns.js'
import { nginxBinary } from './helpers/nginx.js'
import { freePort } from './helpers/ports.js'
import { runCli } from './helpers/process.js'
import { tempDir } from './helpers/tmp.js'

/**
 * `consul-lb doctor` against real agents, HTTPS only with verify_incoming and default-deny ACLs: a healthy setup
 * (exit 0), and each broken one with the finding and its fix (exit 1); bad usage exits 2.
 */
let consul: SecureConsul
let tokenFile: string
t.before(async () => {
  consul = await startSecureConsul(t, { enableTruncate: true })
  await consul.agent.register({ ID: 'api-1', Name: 'api', Address: '127.0.0.1', Port: 8080 })
  await consul.agent.register({ ID: 'api-2', Name: 'api', Address: '127.0.0.2', Port: 8080 })
  tokenFile = join(tempDir(t, 'consul-lb-doctor-'), 'token')
  writeFileSync(tokenFile, await consul.createToken(POLICIES.doctor, 'doctor'))
})

const env = (extra: Record<string, string> = {}) => secureEnv(consul, { CONSUL_HTTP_TOKEN_FILE: tokenFile, ...extra })

async function doctor(
  args: string[],
  extra: Record<string, string> = {},
): Promise<{ code: number | null; report: Report; text: string }> {
  const r = await runCli(['doctor', '--json', '--dns', consul.agent.dnsAddr, ...args], env(extra))
  let report: Report
  try {
    report = JSON.parse(r.stdout) as Report
  } catch {
    throw new Error(`doctor printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`)
  }
  return { code: r.code, report, text: r.stdout }
}

const find = (r: Report, check: string, subject?: string) =>
  r.findings.find((f) => f.check === check && (subject === undefined || f.subject === subject))

t.test('a healthy setup: exit 0, every check ok, and the text report says so', async (t) => {
  await consul.setDnsToken(await consul.createToken(POLICIES.dns, 'dns'))
  t.teardown(() => consul.setDnsToken(null))
  const { code, report } = await doctor(['--route', 'api.example.com=api'])
  t.equal(code, 0, JSON.stringify(report.findings, null, 1))
  t.equal(report.ok, true)
  for (const check of ['consul.tls', 'consul.client-cert', 'consul.api', 'consul.token', 'consul.version']) {
    t.equal(find(report, check)?.severity, 'ok', check)
  }
  t.match(find(report, 'consul.version')?.summary, /Consul 1\.22\./)
  t.match(find(report, 'consul.acl')?.summary, /ACLs are on, default policy deny/)
  t.equal(find(report, 'dns.truncate')?.severity, 'ok')
  t.match(find(report, 'dns.ttl')?.summary, /TTL 0 .*TTL floor, 1000 ms/)
  t.equal(find(report, 'dns.udp')?.severity, 'ok', 'DNS over UDP')
  t.equal(find(report, 'dns.tcp')?.severity, 'ok', 'DNS over TCP')
  t.match(find(report, 'route', 'api.service.consul'), { severity: 'ok', summary: /DNS 2, HTTP API 2 passing of 2/ })
  const text = await runCli(['doctor', '--dns', consul.agent.dnsAddr, '--route', '/=api'], env())
  t.equal(text.code, 0)
  t.match(text.stdout, /^ok +consul\.api: Consul's HTTP API at https:\/\/127\.0\.0\.1:\d+ answers/m)
  t.match(text.stdout, /consul-lb doctor: no problems found/)
})

t.test('no DNS token on the agent: DNS hides what the API lists, and the fix names the DNS token', async (t) => {
  const { code, report, text } = await doctor(['--route', 'api.example.com=api'])
  t.equal(code, 1)
  t.match(find(report, 'dns.acl'), {
    severity: 'fail',
    summary: /DNS 0, HTTP API 1 passing of 1: .*the agent's DNS token \(acl\.tokens\.dns/,
    fix: /consul acl set-agent-token dns/,
  })
  t.match(find(report, 'route', 'api.service.consul'), { severity: 'fail', summary: /DNS 0, HTTP API 2 passing/ })
  t.notOk(text.includes(consul.managementToken))
})

t.test('no token: a warning, and what the anonymous token cannot do', async (t) => {
  const { code, report } = await doctor([], { CONSUL_HTTP_TOKEN_FILE: '' })
  t.equal(code, 1)
  t.match(find(report, 'consul.token'), { severity: 'warn', summary: /anonymous token/ })
  t.match(find(report, 'consul.agent'), { severity: 'warn', summary: /agent:read/ })
  t.match(
    find(report, 'dns.acl'),
    { severity: 'warn', summary: /the anonymous token .* may not read "consul"/, fix: /service_prefix ""/ },
    "the anonymous token's blindness, not a DNS failure",
  )
})

t.test(
  'a token without agent:read: the DNS settings cannot be checked, and doctor says which right is missing',
  async (t) => {
    const weak = join(tempDir(t, 'consul-lb-doctor-weak-'), 'token')
    writeFileSync(weak, await consul.createToken(POLICIES.readOnly, 'no-agent-read'))
    const { code, report } = await doctor([], { CONSUL_HTTP_TOKEN_FILE: weak })
    t.equal(code, 1)
    t.match(find(report, 'consul.agent'), {
      severity: 'warn',
      summary: /lacks agent:read on "consul-lb-test"/,
      fix: /agent_prefix "" \{ policy = "read" \}/,
    })
  },
)

t.test('TLS problems: an unknown CA, and verification turned off', async (t) => {
  const other = makeTlsMaterial(tempDir(t, 'consul-lb-doctor-ca-'))
  const wrongCa = await doctor([], { CONSUL_CACERT: other.caFile })
  t.equal(wrongCa.code, 1)
  t.match(find(wrongCa.report, 'consul.api'), {
    severity: 'fail',
    summary: /CLB_CONSUL_TLS: .*not signed by a CA we trust/,
  })
  const noVerify = await doctor([], { CONSUL_HTTP_SSL_VERIFY: 'false' })
  t.equal(noVerify.code, 1, 'verification off is a finding even when everything answers')
  t.match(find(noVerify.report, 'consul.tls'), { severity: 'fail', summary: /verification is off/ })
})

t.test('a client certificate about to expire', async (t) => {
  const soon = makeClientCert(consul.tls, 3)
  const { code, report } = await doctor([], { CONSUL_CLIENT_CERT: soon.cert, CONSUL_CLIENT_KEY: soon.key })
  t.equal(code, 1)
  t.match(find(report, 'consul.client-cert'), {
    severity: 'warn',
    summary: /valid until .* \([23] days\)/,
    fix: /rotate/,
  })
})

t.test('DNS unreachable, an unknown route service, and nginx too old for the upstream mode', async (t) => {
  const dead = await freePort()
  const r = await runCli(
    [
      'doctor',
      '--json',
      '--dns',
      `127.0.0.1:${dead}`,
      '--dns-timeout-ms',
      '300',
      '--route',
      'x.example.com=nosuch',
      '--nginx',
      '--mode',
      'upstream',
      '--nginx-bin',
      nginxBinary('1.22'),
    ],
    env(),
  )
  t.equal(r.code, 1)
  const report = JSON.parse(r.stdout) as Report
  t.match(find(report, 'dns.udp'), { severity: 'fail', subject: `127.0.0.1:${dead}` })
  t.match(find(report, 'dns.tcp'), { severity: 'fail', fix: /--dns/ })
  t.match(find(report, 'nginx'), { severity: 'fail', summary: /nginx 1\.22\.\d+, mode upstream/, fix: /1\.27\.3/ })
  t.match(find(report, 'route', 'nosuch.service.consul'), { summary: /no instance of "nosuch"/ })
})

t.test('bad usage exits 2', async (t) => {
  const r = await runCli(['doctor', '--dns', 'not a server'], env())
  t.equal(r.code, 2)
  t.match(r.stderr, /invalid configuration: dns/)
})

t.test('Consul down: the API check fails with its fix, DNS is still checked', async (t) => {
  const dead = await freePort()
  const { code, report } = await doctor([], { CONSUL_HTTP_ADDR: `https://127.0.0.1:${dead}` })
  t.equal(code, 1)
  t.match(find(report, 'consul.api'), {
    severity: 'fail',
    summary: /CLB_CONSUL_UNREACHABLE: Consul at https:\/\/127\.0\.0\.1:\d+ unreachable \(ECONNREFUSED\)/,
    fix: /CONSUL_HTTP_ADDR/,
  })
  t.equal(find(report, 'dns.tcp')?.severity, 'ok', 'the DNS side is checked all the same')
  t.notOk(find(report, 'dns.acl'), 'nothing to compare DNS with')
})

t.test('a DNS port that answers garbage: each transport fails, and DNS is not compared with the API', async (t) => {
  // A fake server: a real Consul agent cannot be made to answer bytes that are not DNS.
  const garbage = await startFakeDns(t, () => Buffer.from('\0\0garbage, not a DNS message at all'))
  const r = await runCli(['doctor', '--json', '--dns', garbage.label, '--dns-timeout-ms', '1000'], env())
  t.equal(r.code, 1)
  const report = JSON.parse(r.stdout) as Report
  for (const check of ['dns.udp', 'dns.tcp'])
    t.match(find(report, check, garbage.label), { severity: 'fail', summary: /is not a response/ }, check)
  t.match(find(report, 'dns.acl'), { severity: 'skip', summary: /DNS gave no answer .*HTTP API 1 passing of 1/ })
  t.equal(garbage.queries.length >= 2, true, 'both transports asked the garbage server')
})

t.test("a doctor token that may not read services: a warning about doctor's token, not a DNS failure", async (t) => {
  await consul.setDnsToken(await consul.createToken(POLICIES.dns, 'dns'))
  t.teardown(() => consul.setDnsToken(null))
  const weak = join(tempDir(t, 'consul-lb-doctor-noread-'), 'token')
  writeFileSync(weak, await consul.createToken('node_prefix "" { policy = "read" }', 'nodes-only'))
  const { code, report } = await doctor(['--route', '/=api'], { CONSUL_HTTP_TOKEN_FILE: weak })
  t.equal(code, 1)
  for (const [check, subject] of [
    ['dns.acl', 'consul.service.consul'],
    ['route', 'api.service.consul'],
  ] as const)
    t.match(find(report, check, subject), {
      severity: 'warn',
      summary: /DNS [12], HTTP API 0 readable: the token from .* may not read/,
      fix: /service_prefix "" and node_prefix "" \{ policy = "read" \}/,
    })
})

t.test('an expired client certificate: the certificate check and the API check both say so', async (t) => {
  const expired = signCert(consul.tls, { name: 'doctor-expired', days: -1, usage: 'clientAuth' })
  const { code, report } = await doctor([], { CONSUL_CLIENT_CERT: expired.cert, CONSUL_CLIENT_KEY: expired.key })
  t.equal(code, 1)
  t.match(find(report, 'consul.client-cert'), { severity: 'fail', summary: /expired on/ })
  t.match(find(report, 'consul.api'), {
    severity: 'fail',
    summary: /refused our client certificate because it expired/,
  })
})

t.test('unusable TLS files are a finding (exit 1) with everything else checked, not a usage error', async (t) => {
  const { code, report } = await doctor([], { CONSUL_CLIENT_KEY: consul.tls.serverKey })
  t.equal(code, 1)
  t.match(find(report, 'consul.settings'), {
    severity: 'fail',
    summary: new RegExp(`CLB_CONSUL_CREDENTIALS: ${consul.tls.serverKey}: unusable`),
    fix: /--consul-client-key \/ CONSUL_CLIENT_KEY/,
  })
  t.equal(find(report, 'dns.tcp')?.severity, 'ok')
})

t.test('credential files others may change (or read)', async (t) => {
  const dir = tempDir(t, 'consul-lb-doctor-modes-')
  const ca = join(dir, 'ca.pem')
  const token = join(dir, 'token')
  copyFileSync(consul.tls.caFile, ca)
  copyFileSync(tokenFile, token)
  chmodSync(ca, 0o666)
  chmodSync(token, 0o644)
  const { code, report } = await doctor([], { CONSUL_CACERT: ca, CONSUL_HTTP_TOKEN_FILE: token })
  t.equal(code, 1)
  t.match(find(report, 'consul.files', ca), {
    severity: 'warn',
    summary:
      /CONSUL_CACERT is writable by every user \(mode 666\): whoever can write it chooses which servers we trust/,
    fix: `chmod go-w ${ca}`,
  })
  t.match(find(report, 'consul.files', token), { severity: 'info', summary: /readable by every user \(mode 644\)/ })
  chmodSync(ca, 0o644)
  chmodSync(token, 0o600)
  const fixed = await doctor([], { CONSUL_CACERT: ca, CONSUL_HTTP_TOKEN_FILE: token })
  t.notOk(find(fixed.report, 'consul.files'), 'nothing to say once fixed')
})

t.test(
  'an agent without ACLs on its unix socket: the API answers there, and "ACLs are off" is said once',
  async (t) => {
    const sock = join(tempDir(t, 'consul-lb-doctor-unix-'), 'http.sock')
    const plain = await startConsul(t, { extra: { addresses: { http: `127.0.0.1 unix://${sock}` } } })
    const r = await runCli(['doctor', '--json', '--dns', plain.dnsAddr], { CONSUL_HTTP_ADDR: `unix://${sock}` })
    const report = JSON.parse(r.stdout) as Report
    t.match(find(report, 'consul.api'), { severity: 'ok', summary: new RegExp(`at unix://${sock} answers`) })
    t.equal(report.findings.filter((f) => f.check === 'consul.acl').length, 1)
    t.match(find(report, 'consul.acl'), { summary: /ACLs are off/ })
    t.equal(find(report, 'dns.acl')?.severity, 'ok')
  },
)
