import t from 'tap'
import {
  ConsulAclError,
  ConsulClient,
  ConsulExplainer,
  formatReport,
  loadDoctorConfig,
  loadServeConfig,
  runDoctor,
  startProxy,
} from '../src/index.js'
import { silentLogger } from '../src/log.js'
import { POLICIES, secureConnection, startSecureConsul } from './helpers/consul.js'
import { waitFor } from './helpers/docker.js'
import { http } from './helpers/http.js'

/**
 * The embedding API's Consul pieces (src/index.ts) against an HTTPS-only, verify_incoming, default-deny agent: a proxy
 * whose 503s are explained by a ConsulExplainer built from exported parts, the explainer bounded under a flood of
 * invented Host-routed names, the coded errors as classes, and runDoctor without the CLI.
 */
t.test(
  'embedding: an explained proxy, a bounded explainer under a flood of invented names, errors, doctor',
  async (t) => {
    const consul = await startSecureConsul(t)
    await consul.agent.register({ ID: 'api-1', Name: 'api', Address: '127.0.0.1', Port: 1 })
    const token = await consul.createToken(POLICIES.readOnly, 'embedder')
    const settings = {
      listen: '127.0.0.1:0',
      admin: 'off',
      dns: [consul.agent.dnsAddr],
      negativeTtlMs: 100,
      consul: consul.agent.httpAddr,
      consulCaFile: consul.tls.caFile,
      consulClientCert: consul.tls.clientCert,
      consulClientKey: consul.tls.clientKey,
      consulToken: token,
    }
    // Counts the explainer's lookups at the one place they reach Consul.
    let lookups = 0
    class CountingClient extends ConsulClient {
      override healthService(...args: Parameters<ConsulClient['healthService']>) {
        lookups++
        return super.healthService(...args)
      }
    }
    const client = new CountingClient({ connection: loadServeConfig({ object: settings }).consul! })
    t.teardown(() => client.close())
    // 64 remembered instead of 256, so that a 20-second flood at 10 lookups a second overflows it.
    const explainer = new ConsulExplainer({ client, log: silentLogger(), maxServices: 64 })
    t.teardown(() => explainer.close())
    const lb = await startProxy(settings, { explainer, log: silentLogger() })
    t.teardown(() => lb.close())

    // No DNS token on the agent: the catalog's passing instance is hidden from DNS, and the 503 says so.
    const hidden = await waitFor('an explained 503', async () => {
      const r = await http(lb.port, '/', { host: 'api.service.consul' })
      return r.status === 503 && /DNS returns none: the agent's DNS token/.test(r.body) ? r : null
    })
    t.notMatch(hidden.body, token)

    // A client inventing Host names (8 at a time, for as long as the real service is watched: at most 40000 names or
    // 20 s): each is a 503 with an explainer call, but Consul is asked at most 10 times a second and at most 64
    // explanations are kept. (A fixed count of names ended in 4 s on a quiet machine, too few lookups to fill the cache.)
    lookups = 0
    const started = Date.now()
    let sent = 0
    let watching = true
    const statuses = new Set<number>()
    const flood = async () => {
      while (watching && sent < 40_000 && Date.now() - started < 20_000) {
        const r = await http(lb.port, '/', { host: `made-up-${sent++}.service.consul` })
        statuses.add(r.status)
      }
    }
    // Meanwhile a real service that is down, asked now and then (every 7 s: longer than the flood takes to cycle 64
    // entries through a shared cache): each of its 503s keeps its explanation, since the invented names can neither
    // evict it nor take the lookups it needs.
    const apiBodies: string[] = []
    const watchApi = async () => {
      for (let i = 0; i < 3; i++) {
        apiBodies.push((await http(lb.port, '/', { host: 'api.service.consul' })).body)
        if (i < 2) await new Promise((r) => setTimeout(r, 7000))
      }
      watching = false
    }
    await Promise.all([...Array.from({ length: 8 }, flood), watchApi()])
    const seconds = (Date.now() - started) / 1000
    t.same(
      apiBodies.filter((b) => !/DNS returns none: the agent's DNS token/.test(b)),
      [],
      'every 503 of the real service kept saying why',
    )
    t.same([...statuses], [503], 'every invented name: 503')
    t.ok(sent > 20 * seconds, `${sent} invented names in ${seconds.toFixed(1)} s: well above the lookup rate`)
    t.ok(lookups <= 10 * (Math.ceil(seconds) + 1), `${lookups} lookups in ${seconds.toFixed(1)} s: at most 10 a second`)
    t.ok(lookups > 64, 'more names looked up than are kept (the cap is exercised)')
    const invented = explainer.status().filter((e) => e.service.startsWith('made-up-')).length
    t.ok(invented <= 64, `${invented} explanations of invented names kept`)

    // The coded errors are the exported classes.
    const anonymous = new ConsulClient({ connection: secureConnection(consul) })
    t.teardown(() => anonymous.close())
    const denied = await anonymous.catalogServices().catch((e: unknown) => e)
    t.ok(denied instanceof ConsulAclError, 'a catalog emptied by ACLs is a ConsulAclError')
    t.equal((denied as ConsulAclError).code, 'CLB_CONSUL_ACL_DENIED')

    // doctor without the CLI.
    const report = await runDoctor(
      loadDoctorConfig({
        object: { ...settings, consulToken: await consul.createToken(POLICIES.doctor, 'doctor') },
      }),
      silentLogger(),
    )
    t.equal(report.findings.find((f) => f.check === 'consul.api')?.severity, 'ok')
    t.match(
      report.findings.find((f) => f.check === 'dns.acl'),
      { severity: 'fail', fix: /set-agent-token dns/ },
    )
    t.match(formatReport(report), /consul-lb doctor: \d+ problems? found/)
  },
)
