import { copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { DockerClient, type DockerTls } from '../src/registrator/docker.js'
import { makeTlsMaterial, signCert, startConsul } from './helpers/consul.js'
import { startDocker, waitFor } from './helpers/docker.js'
import { freePort } from './helpers/ports.js'
import { runCliProcess, stopChild } from './helpers/process.js'
import { tempDir } from './helpers/tmp.js'

/**
 * The registrator's Docker side over TLS (dockerd --tlsverify, TLS material from `consul tls ca create` /
 * `consul tls cert create`): every handshake problem is CLB_DOCKER_TLS naming it and the docker CLI's setting that
 * fixes it, as Consul's are, instead of the generic CLB_DOCKER_UNREACHABLE. Nothing here turns verification off.
 */
t.test('each TLS problem with the engine is coded CLB_DOCKER_TLS and named', async (t) => {
  const tls = makeTlsMaterial(tempDir(t, 'consul-lb-docker-tls-'))
  const other = makeTlsMaterial(tempDir(t, 'consul-lb-docker-other-'))
  const expired = signCert(tls, { name: 'docker-expired-client', days: -1, usage: 'clientAuth' })
  const docker = await startDocker(t, undefined, { tls })
  const port = docker.tls!.port
  const good: DockerTls = { caFile: tls.caFile, certFile: tls.clientCert, keyFile: tls.clientKey }
  const ping = async (url: string, files: DockerTls | null) => {
    const client = new DockerClient({ url, tls: files, timeoutMs: 10_000 })
    try {
      await client.ping()
      return null
    } finally {
      await client.close()
    }
  }
  t.equal(await ping(`https://127.0.0.1:${port}`, good), null, 'the right CA and client certificate: answered')
  const cases: [string, string, DockerTls | null, string, RegExp][] = [
    [
      'a CA that did not sign the engine',
      `https://127.0.0.1:${port}`,
      { ...good, caFile: other.caFile },
      'unknown-ca',
      /not signed by a CA we trust \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\); put the CA that signed it in ca\.pem of DOCKER_CERT_PATH/,
    ],
    [
      // The engine's certificate carries 127.0.0.1, not the IPv4-mapped IPv6 form of the same address.
      'an address the certificate does not carry',
      `https://[::ffff:127.0.0.1]:${port}`,
      good,
      'name-mismatch',
      /not for the name we expect: IP: ::ffff:7f00:1 is not in the cert.s list: 127\.0\.0\.1; give DOCKER_HOST a name/,
    ],
    [
      'no client certificate',
      `https://127.0.0.1:${port}`,
      { ...good, certFile: null, keyFile: null },
      'client-cert-required',
      /requires a client certificate and none was given; the engine runs with --tlsverify: put cert\.pem and key\.pem/,
    ],
    [
      'a client certificate of another CA',
      `https://127.0.0.1:${port}`,
      { ...good, certFile: other.clientCert, keyFile: other.clientKey },
      'client-cert-rejected',
      // OpenSSL 3.0 (Node 20) names the alert SSLV3_/TLSV1_ALERT_…, OpenSSL 3.5 (Node 24) SSL/TLS_ALERT_….
      /refused our client certificate \([\w/]*ALERT_(UNKNOWN_CA|BAD_CERTIFICATE)\): cert\.pem must be signed/,
    ],
    [
      'an expired client certificate',
      `https://127.0.0.1:${port}`,
      { ...good, certFile: expired.cert, keyFile: expired.key },
      'client-cert-expired',
      /refused our client certificate because it expired \([\w/]*ALERT_\w+\) on \d{4}-/,
    ],
    [
      'plain HTTP to the TLS port',
      `http://127.0.0.1:${port}`,
      null,
      'tls-required',
      /speaks HTTPS on this port: set DOCKER_TLS_VERIFY=1/,
    ],
  ]
  for (const [name, url, files, problem, message] of cases)
    await t.rejects(ping(url, files), { code: 'CLB_DOCKER_TLS', problem, message }, name)
})

t.test('the registrator shows an engine TLS problem in /status and its log, coded, and keeps trying', async (t) => {
  const tls = makeTlsMaterial(tempDir(t, 'consul-lb-docker-tls-'))
  const other = makeTlsMaterial(tempDir(t, 'consul-lb-docker-other-'))
  const [consul, docker] = await Promise.all([startConsul(t), startDocker(t, undefined, { tls })])
  // DOCKER_CERT_PATH as an operator who copied the wrong CA into it.
  const certs = join(tempDir(t, 'consul-lb-docker-certs-'), 'certs')
  mkdirSync(certs)
  copyFileSync(other.caFile, join(certs, 'ca.pem'))
  copyFileSync(tls.clientCert, join(certs, 'cert.pem'))
  copyFileSync(tls.clientKey, join(certs, 'key.pem'))
  const admin = await freePort()
  const { proc, output } = runCliProcess(['registrator', '--admin', `127.0.0.1:${admin}`, '--ip', '127.0.0.1'], {
    ...docker.tlsEnv,
    DOCKER_CERT_PATH: certs,
    CONSUL_HTTP_ADDR: consul.httpAddr,
    CONSUL_LB_HOST_ID: 'dtls',
  })
  t.teardown(() => stopChild(proc))
  const lastError = await waitFor(
    'the TLS problem in /status',
    async () => {
      const s = (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as {
        registrator: { docker: { lastError: { code: string; message: string } | null } }
      }
      return s.registrator.docker.lastError
    },
    30_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${output()}`)
  })
  t.match(lastError, { code: 'CLB_DOCKER_TLS', message: /not signed by a CA we trust/ })
  t.match(output(), /"code":"CLB_DOCKER_TLS"/, 'logged with its code')
  t.equal(proc.exitCode, null, 'still running, reconnecting with back-off')
})
