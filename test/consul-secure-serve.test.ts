import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startBackend } from './helpers/backends.js'
import { POLICIES, secureEnv, startSecureConsul } from './helpers/consul.js'
import { waitFor } from './helpers/docker.js'
import { http } from './helpers/http.js'
import { freePort } from './helpers/ports.js'
import { runCliProcess, stopChild } from './helpers/process.js'
import { serveArgs } from './helpers/serve.js'
import { tempDir } from './helpers/tmp.js'

/**
 * The trap of Consul's issue tracker ("DNS stopped working after enabling ACLs"): with default deny and no DNS token
 * on the agent, Consul DNS answers NXDOMAIN for every service while the HTTP API lists them passing. serve with
 * --consul (here: Consul's own env names) says which it is, in the 503, the log and /status.
 */
t.test(
  'serve through an agent without a DNS token: the 503 says the DNS token lacks read; with one, traffic flows',
  async (t) => {
    const consul = await startSecureConsul(t)
    const backend = await startBackend('api-1', '127.0.0.1', 0, t)
    await consul.agent.register({ ID: 'api-1', Name: 'api', Address: '127.0.0.1', Port: backend.port })
    await consul.agent.register({
      ID: 'down-1',
      Name: 'down',
      Address: '127.0.0.1',
      Port: 1,
      Check: { CheckID: 'down-ttl', Name: 'down alive', TTL: '60s', Status: 'critical' },
    })
    const reader = await consul.createToken(POLICIES.readOnly, 'serve-explainer')
    const tokenFile = join(tempDir(t, 'consul-lb-serve-token-'), 'token')
    writeFileSync(tokenFile, reader)
    const [port, admin] = [await freePort(), await freePort()]
    const { proc, output } = runCliProcess(
      [...serveArgs(port, admin, consul.agent.dnsAddr), '--negative-ttl-ms', '200'],
      secureEnv(consul, { CONSUL_HTTP_TOKEN_FILE: tokenFile }),
    )
    t.teardown(() => stopChild(proc))
    await waitFor('serve listening', async () => (await http(admin, '/healthz')).status === 200, 30_000).catch(
      (err: Error) => {
        throw new Error(`${err.message}\n${output()}`)
      },
    )
    // The first 503 of a service may come before the explanation (looked up off the request path); the next say it.
    const explained = (host: string, re: RegExp) =>
      waitFor(`${host}: an explained 503`, async () => {
        const r = await http(port, '/', { host })
        return r.status === 503 && re.test(r.body) ? r : null
      })
    const hidden = await explained('api.service.consul', /DNS returns none/)
    t.equal(hidden.headers['x-consul-lb-error'], 'CLB_NO_HEALTHY_INSTANCE')
    t.match(
      hidden.body,
      /the catalog has 1 passing instance\(s\) of "api" but DNS returns none: the agent's DNS token \(acl\.tokens\.dns, else acl\.tokens\.default\) lacks service:read \/ node:read/,
    )
    const critical = await explained('down.service.consul', /failing its checks/)
    t.match(critical.body, /every instance of "down" is failing its checks: 1 critical \(check "down alive"/)
    const unknown = await explained('nosuch.service.consul', /no instance of "nosuch"/)
    t.match(unknown.body, /an unknown service, or one that token may not read/)

    const status = (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as {
      explanations: { service: string; kind: string; why: string }[]
    }
    t.same(
      status.explanations.map((e) => [e.service, e.kind]).sort(),
      [
        ['api', 'dns-hidden'],
        ['down', 'all-critical'],
        ['nosuch', 'unknown-service'],
      ],
      '/status lists each explanation',
    )
    t.match(output(), /why api has no instance: the catalog has 1 passing/, 'the log says it once')

    // The operator gives the agent its DNS token: the same proxy, no restart, now serves api.
    await consul.setDnsToken(await consul.createToken(POLICIES.dns, 'dns'))
    await waitFor('api served once DNS may read it', async () => {
      const r = await http(port, '/', { host: 'api.service.consul' })
      return r.status === 200 && r.headers['x-backend'] === 'api-1'
    })
    const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()
    const everything = `${output()}\n${JSON.stringify(status)}\n${metrics}\n${hidden.body}`
    t.notOk(everything.includes(reader), 'the token is in no log line, answer, /status or /metrics')
  },
)
