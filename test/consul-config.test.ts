import { copyFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadNginxConfig } from '../src/config/nginx.js'
import { loadRegistratorConfig } from '../src/config/registrator.js'
import { loadServeConfig } from '../src/config/serve.js'
import { ConsulCredentials } from '../src/consul/credentials.js'
import { ConfigError } from '../src/errors.js'
import { makeTlsMaterial } from './helpers/consul.js'
import { tempDir } from './helpers/tmp.js'

const fails = (fn: () => unknown): ConfigError => {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error('accepted')
}

t.test("Consul's own environment names configure every command the same way", async (t) => {
  const tls = makeTlsMaterial(tempDir(t, 'consul-lb-cfg-tls-'))
  const dir = tempDir(t, 'consul-lb-cfg-')
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, ' s3cret-from-file \n')
  const env = {
    CONSUL_HTTP_ADDR: 'consul.internal:8501',
    CONSUL_HTTP_SSL: 'true',
    CONSUL_CACERT: tls.caFile,
    CONSUL_CLIENT_CERT: tls.clientCert,
    CONSUL_CLIENT_KEY: tls.clientKey,
    CONSUL_TLS_SERVER_NAME: 'server.dc1.consul',
    CONSUL_HTTP_TOKEN_FILE: tokenFile,
  }
  const expected = {
    address: 'https://consul.internal:8501',
    token: null,
    tokenFile,
    tls: {
      caFile: tls.caFile,
      caPath: null,
      certFile: tls.clientCert,
      keyFile: tls.clientKey,
      serverName: 'server.dc1.consul',
      verify: true,
    },
  }
  t.same(loadRegistratorConfig({ env }).consul, expected, 'registrator')
  t.same(loadNginxConfig({ env, flags: { mode: 'catalog' } }).consul, expected, 'nginx')
  t.same(loadServeConfig({ env }).consul, expected, 'serve (its explainer)')
  t.equal(loadServeConfig({ env: {} }).consul, null, 'serve without any Consul address explains nothing')
  t.equal(
    loadServeConfig({ env: {}, flags: { registrator: true } }).consul?.address,
    'http://127.0.0.1:8500',
    "serve --registrator explains with the registrator's agent",
  )
  t.same(
    loadRegistratorConfig({ env: { CONSUL_HTTP_ADDR: 'unix:///run/consul/http.sock' } }).consul,
    { address: 'unix:///run/consul/http.sock', token: null, tokenFile: null, tls: null },
    'a unix socket',
  )
  t.equal(
    loadRegistratorConfig({ env: { ...env, CONSUL_HTTP_SSL_VERIFY: 'false' } }).consul.tls?.verify,
    false,
    'CONSUL_HTTP_SSL_VERIFY=false is honoured (doctor reports it)',
  )
  t.equal(
    loadRegistratorConfig({ env: { CONSUL_LB_CONSUL_CA_FILE: tls.caFile, CONSUL_LB_CONSUL: 'https://c:8501' } }).consul
      .tls?.caFile,
    tls.caFile,
    'CONSUL_LB_* names too',
  )
})

t.test('bad Consul connection settings fail at start-up, naming the setting', async (t) => {
  const tls = makeTlsMaterial(tempDir(t, 'consul-lb-cfg-tls-'))
  const https = { consul: 'https://127.0.0.1:8501' }
  t.equal(
    fails(() => loadRegistratorConfig({ flags: { ...https, consulCaFile: '/nonexistent' } })).field,
    'consulCaFile',
  )
  t.equal(
    fails(() => loadRegistratorConfig({ flags: { ...https, consulClientCert: tls.clientCert } })).field,
    'consulClientKey',
    'a certificate without its key',
  )
  t.equal(
    fails(() =>
      loadRegistratorConfig({ flags: { ...https, consulClientCert: tls.clientCert, consulClientKey: tls.serverKey } }),
    ).field,
    'consulClientKey',
    'a key that does not match its certificate',
  )
  t.equal(
    fails(() => loadRegistratorConfig({ flags: { consul: 'http://127.0.0.1:8500', consulCaFile: tls.caFile } })).field,
    'consulCaFile',
    'TLS settings with a plain http:// address are a mistake, not silently ignored',
  )
  t.equal(fails(() => loadRegistratorConfig({ flags: { consulTokenFile: '/nonexistent' } })).field, 'consulTokenFile')
  const e = fails(() => loadRegistratorConfig({ flags: { consul: 'https://tok3n@consul:8501' } }))
  t.equal(e.field, 'consul')
  t.notMatch(e.message, /tok3n/, 'credentials in the address are refused without being echoed')
  t.notMatch(
    fails(() => loadRegistratorConfig({ flags: { consulToken: 'not-shown-1', resync: 'x' } })).message,
    /not-shown-1/,
  )
})

t.test(
  "Docker over TLS as the docker CLI reads it: DOCKER_TLS_VERIFY and DOCKER_CERT_PATH's ca/cert/key.pem",
  async (t) => {
    const tls = makeTlsMaterial(tempDir(t, 'consul-lb-cfg-tls-'))
    const certs = tempDir(t, 'consul-lb-docker-certs-')
    const env = { DOCKER_HOST: 'tcp://127.0.0.1:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs }
    t.equal(fails(() => loadRegistratorConfig({ env })).field, 'dockerCertPath', 'verification needs ca.pem')
    copyFileSync(tls.caFile, join(certs, 'ca.pem'))
    copyFileSync(tls.clientCert, join(certs, 'cert.pem'))
    t.equal(fails(() => loadRegistratorConfig({ env })).field, 'dockerCertPath', 'cert.pem needs key.pem')
    copyFileSync(tls.clientKey, join(certs, 'key.pem'))
    const c = loadRegistratorConfig({ env })
    t.equal(c.dockerUrl, 'https://127.0.0.1:2376')
    t.same(c.dockerTls, {
      caFile: join(certs, 'ca.pem'),
      certFile: join(certs, 'cert.pem'),
      keyFile: join(certs, 'key.pem'),
    })
    const plain = loadRegistratorConfig({ env: { ...env, DOCKER_TLS_VERIFY: '0' } })
    t.equal(plain.dockerUrl, 'http://127.0.0.1:2376', 'DOCKER_TLS_VERIFY=0: plain TCP')
    t.equal(plain.dockerTls, null)
    t.equal(
      fails(() => loadRegistratorConfig({ env: { DOCKER_TLS_VERIFY: '1' } })).field,
      'dockerTlsVerify',
      'a unix socket has no TLS',
    )
  },
)

t.test(
  "Consul's CLI conventions: ParseBool spellings, https over http:// with CONSUL_HTTP_SSL, a gateway prefix, a server name with a port",
  async (t) => {
    const addr = (env: Record<string, string>) => loadRegistratorConfig({ env }).consul
    for (const [v, verify] of [
      ['t', true],
      ['T', true],
      ['TRUE', true],
      ['True', true],
      ['1', true],
      ['f', false],
      ['F', false],
      ['FALSE', false],
      ['False', false],
      ['0', false],
    ] as const)
      t.equal(
        addr({ CONSUL_HTTP_ADDR: 'https://c:8501', CONSUL_HTTP_SSL_VERIFY: v }).tls?.verify,
        verify,
        `verify=${v}`,
      )
    t.equal(fails(() => addr({ CONSUL_HTTP_SSL_VERIFY: 'maybe' })).field, 'env CONSUL_HTTP_SSL_VERIFY', 'not a guess')
    t.equal(
      addr({ CONSUL_HTTP_ADDR: 'http://c:8501', CONSUL_HTTP_SSL: 'T' }).address,
      'https://c:8501',
      'as Consul: CONSUL_HTTP_SSL never lets http:// downgrade',
    )
    t.equal(addr({ CONSUL_HTTP_ADDR: 'https://c:8501', CONSUL_HTTP_SSL: 'false' }).address, 'https://c:8501')
    t.equal(
      addr({ CONSUL_HTTP_ADDR: 'https://gw.example:8443/consul/' }).address,
      'https://gw.example:8443/consul',
      "an API gateway's path prefix is kept (Consul's PathPrefix)",
    )
    t.equal(fails(() => addr({ CONSUL_HTTP_ADDR: 'https://c:8501/?x=1' })).field, 'consul', 'no query string')
    const withName = (n: string) =>
      addr({ CONSUL_HTTP_ADDR: 'https://c:8501', CONSUL_TLS_SERVER_NAME: n }).tls?.serverName
    t.equal(
      withName('server.dc1.consul:8501'),
      'server.dc1.consul',
      "the port of a server name goes, as in Consul's client",
    )
    t.equal(withName('[::1]:8501'), '::1')
    t.equal(withName('server.dc1.consul'), 'server.dc1.consul')
    const e = fails(() => addr({ CONSUL_HTTP_ADDR: 'https://user:pa55w0rd@c:85 01' }))
    t.equal(e.field, 'consul')
    t.notMatch(e.message, /pa55w0rd/, 'an address that does not parse is echoed without its credentials')
  },
)

t.test(
  'a token is one line of visible characters: anything else fails at start-up, naming the setting, not the token',
  async (t) => {
    const dir = tempDir(t, 'consul-lb-cfg-token-')
    const file = join(dir, 'token')
    for (const [content, token] of [
      ['abc-123\r\n', 'abc-123'],
      ['\uFEFFabc-123\r\n', 'abc-123'],
      ['  abc-123  \n\n', 'abc-123'],
    ] as const) {
      writeFileSync(file, content)
      t.equal(
        new ConsulCredentials(loadRegistratorConfig({ env: { CONSUL_HTTP_TOKEN_FILE: file } }).consul).token,
        token,
        `${JSON.stringify(content)}: trimmed as Consul's CLI does (and a BOM)`,
      )
    }
    for (const content of ['s3cret-1\nsecond', 's3cret-1\u0000', 's3cret 1', 's3cret-1é']) {
      writeFileSync(file, content)
      const err = fails(() => loadRegistratorConfig({ env: { CONSUL_HTTP_TOKEN_FILE: file } }))
      t.equal(err.field, 'consulTokenFile', JSON.stringify(content))
      t.match(err.message, /holds (more than one line|characters a token cannot have)/)
      t.notMatch(err.message, /s3cret/)
      const direct = fails(() => loadRegistratorConfig({ env: { CONSUL_HTTP_TOKEN: content } }))
      t.equal(direct.field, 'consulToken')
      t.notMatch(direct.message, /s3cret/)
    }
  },
)
