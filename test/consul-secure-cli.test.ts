import { X509Certificate } from 'node:crypto'
import { copyFileSync, existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { ConsulClient } from '../src/consul/client.js'
import type { Logger } from '../src/log.js'
import {
  makeClientCert,
  makeTlsMaterial,
  POLICIES,
  type SecureConsul,
  secureConnection,
  secureEnv,
  signCert,
  startSecureConsul,
} from './helpers/consul.js'
import { startNginx } from './helpers/nginx.js'
import { runCli } from './helpers/process.js'
import { tempDir } from './helpers/tmp.js'

/** HTTPS-only Consul with verify_incoming and ACLs (default deny), as production runs it; one agent for the file. */
let consul: SecureConsul
/** The agent's HTTPS API also listens on this unix socket (addresses.https), as some deployments run it. */
const httpsSocket = join(tempDir(t, 'consul-lb-sec-sock-'), 'https.sock')
t.before(async () => {
  consul = await startSecureConsul(t, { extra: { addresses: { https: `127.0.0.1 unix://${httpsSocket}` } } })
  await consul.agent.register({ ID: 'shop-1', Name: 'shop', Address: '127.0.0.2', Port: 8080 })
})

const consulEnv = (extra: Record<string, string> = {}) => secureEnv(consul, extra)

const catalog = (out: string) => ['nginx', '--mode', 'catalog', '--catalog-port', '8080', '--out', out]

t.test('catalog mode with a read token (from a file) writes the catalog', async (t) => {
  const dir = tempDir(t, 'consul-lb-sec-nginx-')
  const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
  const tokenFile = join(dir, 'token')
  copyTo(tokenFile, token)
  const out = join(dir, 'site.conf')
  const r = await runCli(catalog(out), consulEnv({ CONSUL_HTTP_TOKEN_FILE: tokenFile }))
  t.equal(r.code, 0, r.stderr)
  t.match(readFileSync(out, 'utf8'), /set \$endpoint shop\.service\.consul;/)
  t.notMatch(r.stdout + r.stderr, token, 'the token is not printed')
})

t.test('catalog mode without a token exits non-zero, says it is ACLs, and writes no config', async (t) => {
  const out = join(tempDir(t, 'consul-lb-sec-nginx-'), 'site.conf')
  const r = await runCli(catalog(out), consulEnv())
  t.equal(r.code, 1)
  t.match(r.stderr, /CLB_CONSUL_ACL_DENIED/)
  t.match(r.stderr, /anonymous token/)
  t.match(r.stderr, /service:read/)
  t.notOk(existsSync(out), 'no config written')
})

t.test('catalog mode with a token Consul does not know says so', async (t) => {
  const out = join(tempDir(t, 'consul-lb-sec-nginx-'), 'site.conf')
  const r = await runCli(catalog(out), consulEnv({ CONSUL_HTTP_TOKEN: '6f4dbb0b-8c1a-4a86-a0b3-000000000000' }))
  t.equal(r.code, 1)
  t.match(r.stderr, /CLB_CONSUL_ACL_DENIED.*does not know the given token \(ACL not found/)
  t.notMatch(r.stderr, /6f4dbb0b/, 'not even an unknown token is printed')
  t.notOk(existsSync(out))
})

t.test('TLS failures are refused with the reason, never passed by turning verification off', async (t) => {
  const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
  const other = makeTlsMaterial(tempDir(t, 'consul-lb-other-ca-'))
  const out = join(tempDir(t, 'consul-lb-sec-nginx-'), 'site.conf')
  const cases: [string, Record<string, string>, RegExp][] = [
    ['a CA that did not sign the agent', { CONSUL_CACERT: other.caFile }, /not signed by a CA we trust/],
    ['no CA at all (system roots)', { CONSUL_CACERT: '' }, /not signed by a CA we trust.*CONSUL_CACERT/],
    [
      'a certificate for another name',
      { CONSUL_TLS_SERVER_NAME: 'server.dc2.consul' },
      /not for the name we expect \(server\.dc2\.consul\).*server\.dc1\.consul/,
    ],
    ['no client certificate', { CONSUL_CLIENT_CERT: '', CONSUL_CLIENT_KEY: '' }, /requires a client certificate/],
    [
      'a client certificate from another CA',
      { CONSUL_CLIENT_CERT: other.clientCert, CONSUL_CLIENT_KEY: other.clientKey },
      /refused our client certificate \([\w/]*ALERT_UNKNOWN_CA\)/,
    ],
    [
      'http:// to the HTTPS port',
      {
        CONSUL_HTTP_ADDR: consul.agent.httpAddr.replace('https:', 'http:'),
        CONSUL_CACERT: '',
        CONSUL_CLIENT_CERT: '',
        CONSUL_CLIENT_KEY: '',
      },
      /speaks HTTPS on this port/,
    ],
  ]
  for (const [name, env, reason] of cases) {
    const r = await runCli(catalog(out), consulEnv({ CONSUL_HTTP_TOKEN: token, ...env }))
    t.equal(r.code, 1, `${name}: exit 1`)
    t.match(r.stderr, /CLB_CONSUL_TLS/, `${name}: coded`)
    t.match(r.stderr, reason, `${name}: the reason`)
    t.notOk(existsSync(out), `${name}: nothing written`)
    t.notMatch(r.stderr, token)
  }
})

t.test('a client certificate rotated on disk is picked up without restart', async (t) => {
  const dir = tempDir(t, 'consul-lb-rotate-')
  const other = makeTlsMaterial(tempDir(t, 'consul-lb-other-ca-'))
  const cert = join(dir, 'client.pem')
  const key = join(dir, 'client-key.pem')
  // Installed first: a certificate the agent does not accept (signed by a CA it does not know).
  copyFileSync(other.clientCert, cert)
  copyFileSync(other.clientKey, key)
  const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
  const client = new ConsulClient({
    connection: secureConnection(consul, { token, tls: { certFile: cert, keyFile: key } }),
  })
  t.teardown(() => client.close())
  await t.rejects(client.catalogServices(), { code: 'CLB_CONSUL_TLS', problem: 'client-cert-rejected' })
  // The operator's rotation: the new key and certificate replace the files (same paths).
  copyFileSync(consul.tls.clientKey, key)
  copyFileSync(consul.tls.clientCert, cert)
  const r = await client.catalogServices()
  t.ok('shop' in r.value, 'the same client, the new certificate')
  t.equal(client.credentials.tls?.generation, 1, 're-read once')
})

t.test('a token file rewritten mid-run is used at the next call', async (t) => {
  const dir = tempDir(t, 'consul-lb-token-')
  const tokenFile = join(dir, 'token')
  copyTo(tokenFile, '')
  const client = new ConsulClient({ connection: secureConnection(consul, { tokenFile }), recheckMs: 0 })
  t.teardown(() => client.close())
  await t.rejects(client.catalogServices(), { code: 'CLB_CONSUL_ACL_DENIED' }, 'empty file: the anonymous token')
  copyTo(tokenFile, await consul.createToken(POLICIES.catalogRead, 'catalog'))
  t.ok('shop' in (await client.catalogServices()).value)
})

function copyTo(path: string, text: string): void {
  // Written beside and renamed, as secret managers do (the reader sees the old or the new file, never half of one).
  const tmp = `${path}.tmp`
  writeFileSync(tmp, text)
  renameSync(tmp, path)
}

t.test('a CA folder (CONSUL_CAPATH) verifies the agent like a CA file', async (t) => {
  const dir = tempDir(t, 'consul-lb-capath-')
  const other = makeTlsMaterial(tempDir(t, 'consul-lb-other-ca-'))
  copyFileSync(other.caFile, join(dir, 'a-unrelated-ca.pem'))
  copyFileSync(consul.tls.caFile, join(dir, 'consul-agent-ca.pem'))
  writeFileSync(join(dir, 'README'), 'not a certificate: ignored\n')
  const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
  const client = new ConsulClient({
    connection: secureConnection(consul, { token, tls: { caFile: null, caPath: dir } }),
  })
  t.teardown(() => client.close())
  t.ok('shop' in (await client.catalogServices()).value)
})

t.test("an operator's environment in Consul's own spellings works against the agent, and still verifies", async (t) => {
  const dir = tempDir(t, 'consul-lb-sec-spell-')
  const tokenFile = join(dir, 'token')
  const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
  // Written on Windows: a byte-order mark and CRLF.
  writeFileSync(tokenFile, `\uFEFF${token}\r\n`)
  const out = join(dir, 'site.conf')
  const env = consulEnv({
    // http:// with CONSUL_HTTP_SSL: Consul's client never downgrades, and neither do we.
    CONSUL_HTTP_ADDR: consul.agent.httpAddr.replace('https:', 'http:'),
    CONSUL_HTTP_SSL: 'T',
    CONSUL_HTTP_SSL_VERIFY: 't',
    CONSUL_TLS_SERVER_NAME: 'server.dc1.consul:8501',
    CONSUL_HTTP_TOKEN_FILE: tokenFile,
  })
  const r = await runCli(catalog(out), env)
  t.equal(r.code, 0, r.stderr)
  t.match(readFileSync(out, 'utf8'), /shop\.service\.consul/)
  const other = makeTlsMaterial(tempDir(t, 'consul-lb-other-ca-'))
  const refused = await runCli(catalog(join(dir, 'not.conf')), { ...env, CONSUL_CACERT: other.caFile })
  t.equal(refused.code, 1, 'CONSUL_HTTP_SSL_VERIFY=t verifies')
  t.match(refused.stderr, /CLB_CONSUL_TLS.*not signed by a CA we trust/)
  t.notMatch(r.stdout + r.stderr + refused.stderr, token)
})

t.test('the HTTPS API over a unix socket (CONSUL_HTTP_SSL=true), verified like the TCP one', async (t) => {
  const dir = tempDir(t, 'consul-lb-sec-unix-')
  const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
  const env = consulEnv({
    CONSUL_HTTP_ADDR: `unix://${httpsSocket}`,
    CONSUL_HTTP_SSL: 'true',
    CONSUL_HTTP_TOKEN: token,
  })
  const r = await runCli(catalog(join(dir, 'site.conf')), env)
  t.equal(r.code, 0, r.stderr)
  t.match(readFileSync(join(dir, 'site.conf'), 'utf8'), /shop\.service\.consul/)
  const other = makeTlsMaterial(tempDir(t, 'consul-lb-other-ca-'))
  const wrongCa = await runCli(catalog(join(dir, 'x.conf')), { ...env, CONSUL_CACERT: other.caFile })
  t.equal(wrongCa.code, 1)
  t.match(wrongCa.stderr, /CLB_CONSUL_TLS.*unix:\/\/.*not signed by a CA we trust/)
  const noCert = await runCli(catalog(join(dir, 'x.conf')), { ...env, CONSUL_CLIENT_CERT: '', CONSUL_CLIENT_KEY: '' })
  t.equal(noCert.code, 1)
  t.match(
    noCert.stderr,
    /CLB_CONSUL_TLS.*requires a client certificate/,
    'the probe reads the alert over the socket too',
  )
  const plain = await runCli(catalog(join(dir, 'x.conf')), {
    CONSUL_HTTP_ADDR: `unix://${httpsSocket}`,
    CONSUL_HTTP_TOKEN: token,
  })
  t.equal(plain.code, 1)
  t.match(plain.stderr, /CLB_CONSUL_TLS.*speaks HTTPS on this port/, 'plain HTTP to the HTTPS socket')
  t.notOk(existsSync(join(dir, 'x.conf')))
})

t.test("Consul behind an API gateway: the path prefix of CONSUL_HTTP_ADDR is kept (Consul's PathPrefix)", async (t) => {
  // nginx as the gateway: HTTPS towards us (the agent's server certificate), mTLS towards the agent, /consul/ stripped.
  const tls = consul.tls
  const gateway = await startNginx(
    t,
    '1.22',
    (port) => `server {
  listen 127.0.0.1:${port} ssl;
  ssl_certificate ${tls.serverCert};
  ssl_certificate_key ${tls.serverKey};
  location /consul/ {
    proxy_pass https://127.0.0.1:${consul.agent.httpPort}/;
    proxy_ssl_certificate ${tls.clientCert};
    proxy_ssl_certificate_key ${tls.clientKey};
    proxy_ssl_trusted_certificate ${tls.caFile};
    proxy_ssl_verify on;
    proxy_ssl_name server.dc1.consul;
  }
  location / { return 404 "not the API\n"; }
}
`,
  )
  const dir = tempDir(t, 'consul-lb-sec-gw-')
  const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
  const env = {
    CONSUL_HTTP_ADDR: `https://127.0.0.1:${gateway.port}/consul`,
    CONSUL_CACERT: tls.caFile,
    CONSUL_HTTP_TOKEN: token,
  }
  const r = await runCli(catalog(join(dir, 'site.conf')), env)
  t.equal(r.code, 0, `${r.stderr}\n${gateway.log}`)
  t.match(readFileSync(join(dir, 'site.conf'), 'utf8'), /shop\.service\.consul/)
  const noPrefix = await runCli(catalog(join(dir, 'x.conf')), {
    ...env,
    CONSUL_HTTP_ADDR: `https://127.0.0.1:${gateway.port}`,
  })
  t.equal(noPrefix.code, 1, 'without the prefix the gateway has no API: proof the prefix was used')
  t.match(noPrefix.stderr, /CLB_CONSUL_HTTP.*404/)
})

t.test('an expired client certificate: refused, and the error says it expired and when', async (t) => {
  const expired = signCert(consul.tls, { name: 'expired-client', days: -1, usage: 'clientAuth' })
  const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
  const out = join(tempDir(t, 'consul-lb-sec-exp-'), 'site.conf')
  const r = await runCli(
    catalog(out),
    consulEnv({ CONSUL_CLIENT_CERT: expired.cert, CONSUL_CLIENT_KEY: expired.key, CONSUL_HTTP_TOKEN: token }),
  )
  t.equal(r.code, 1)
  t.match(
    r.stderr,
    /CLB_CONSUL_TLS: .*refused our client certificate because it expired \([\w/]*ALERT_CERTIFICATE_EXPIRED\) on \d{4}-\d\d-\d\dT.*consul tls cert create -client/,
  )
  t.notOk(existsSync(out))
})

t.test(
  'a token file that turns bad or vanishes mid-run: the last good token stays in use, the problem is said',
  async (t) => {
    const dir = tempDir(t, 'consul-lb-token-bad-')
    const tokenFile = join(dir, 'token')
    const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
    copyTo(tokenFile, token)
    const client = new ConsulClient({ connection: secureConnection(consul, { tokenFile }), recheckMs: 0 })
    t.teardown(() => client.close())
    t.ok('shop' in (await client.catalogServices()).value)
    // A secret manager that appended a second line (or wrote two tokens): sending it would fail every request.
    copyTo(tokenFile, `${token}\nsecond-line`)
    t.ok('shop' in (await client.catalogServices()).value, 'the previous token, not the anonymous one')
    t.match(client.credentials.lastError, { code: 'CLB_CONSUL_CREDENTIALS', message: /holds more than one line/ })
    t.notMatch(client.credentials.lastError?.message, token)
    rmSync(tokenFile)
    t.ok('shop' in (await client.catalogServices()).value, 'a vanished file: still the previous token')
    t.match(client.credentials.lastError, { code: 'CLB_CONSUL_CREDENTIALS', message: /cannot read it: ENOENT/ })
    copyTo(tokenFile, '')
    await t.rejects(
      client.catalogServices(),
      { code: 'CLB_CONSUL_ACL_DENIED' },
      'an empty file is the anonymous token, as in Consul',
    )
    const r = await runCli(catalog(join(dir, 'site.conf')), consulEnv({ CONSUL_HTTP_TOKEN_FILE: join(dir, 'nope') }))
    t.equal(r.code, 2, 'a missing token file at start-up is a usage error')
    t.match(r.stderr, /consulTokenFile: .*nope: cannot read it: ENOENT/)
  },
)

t.test(
  'a rotation caught half-way (the new key before its certificate) keeps the old pair until both are there',
  async (t) => {
    const dir = tempDir(t, 'consul-lb-half-rotate-')
    const cert = join(dir, 'client.pem')
    const key = join(dir, 'client-key.pem')
    copyFileSync(consul.tls.clientCert, cert)
    copyFileSync(consul.tls.clientKey, key)
    const next = makeClientCert(consul.tls, 30)
    const token = await consul.createToken(POLICIES.catalogRead, 'catalog')
    const changes: string[] = []
    const log = {
      info: () => changes.push('reloaded'),
      error: (o: { code: string }) => changes.push(o.code),
    } as unknown as Logger
    const client = new ConsulClient({
      connection: secureConnection(consul, { token, tls: { certFile: cert, keyFile: key } }),
      recheckMs: 0,
      log,
    })
    t.teardown(() => client.close())
    t.ok('shop' in (await client.catalogServices()).value)
    copyFileSync(next.key, key)
    t.ok('shop' in (await client.catalogServices()).value, 'the old pair still in use')
    t.equal(client.credentials.tls?.generation, 0, 'not reloaded')
    t.match(client.credentials.lastError, { code: 'CLB_CONSUL_CREDENTIALS', field: 'keyFile', message: /unusable/ })
    copyFileSync(next.cert, cert)
    t.ok('shop' in (await client.catalogServices()).value, 'the new pair')
    t.equal(client.credentials.tls?.generation, 1, 'reloaded once, when the pair matched')
    t.equal(
      client.credentials.tls?.material.clientCertValidTo?.getTime(),
      new Date(new X509Certificate(readFileSync(next.cert)).validTo).getTime(),
    )
    t.same(changes, ['CLB_CONSUL_CREDENTIALS', 'reloaded'], 'the half-way state logged once, then the reload')
  },
)
