import { copyFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { ConsulClient } from '../src/consul/client.js'
import {
  makeTlsMaterial,
  POLICIES,
  type SecureConsul,
  secureConnection,
  secureEnv,
  startSecureConsul,
} from './helpers/consul.js'
import { runCli } from './helpers/process.js'
import { tempDir } from './helpers/tmp.js'

/** HTTPS-only Consul with verify_incoming and ACLs (default deny), as production runs it; one agent for the file. */
let consul: SecureConsul
t.before(async () => {
  consul = await startSecureConsul(t)
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
      /refused our client certificate \(TLSV1_ALERT_UNKNOWN_CA\)/,
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
