import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { POLICIES, secureEnv, startSecureConsul } from './helpers/consul.js'
import { startDocker, waitFor } from './helpers/docker.js'
import { freePort } from './helpers/ports.js'
import { runCliProcess, stopChild } from './helpers/process.js'
import { tempDir } from './helpers/tmp.js'

/**
 * The registrator as production runs it: Docker over TLS (DOCKER_HOST=tcp://, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH),
 * Consul over HTTPS with a client certificate (verify_incoming), ACLs with default deny, and the token in a file,
 * everything given under the docker CLI's and Consul's own environment names.
 */
t.test(
  'registrator over mTLS: a read-only token is denied (alive, retried, shown, nothing registered); the token file rewritten with a write token heals it without restart',
  async (t) => {
    const consul = await startSecureConsul(t)
    const docker = await startDocker(t, undefined, { tls: consul.tls })
    const readOnly = await consul.createToken(POLICIES.readOnly, 'read-only')
    const writer = await consul.createToken(POLICIES.registrator, 'registrator')
    // May write secweb and halfa, not halfb: the two-service container must not end up half registered.
    const partial = await consul.createToken(
      'service "secweb" { policy = "write" }\nservice "halfa" { policy = "write" }\nnode_prefix "" { policy = "read" }',
      'partial',
    )
    const dir = tempDir(t, 'consul-lb-secure-reg-')
    const tokenFile = join(dir, 'token')
    writeFileSync(tokenFile, `${readOnly}\n`)
    docker.removeOnTeardown(t, 'sec-web', 'sec-two')
    await docker.run({ name: 'sec-web', publish: ['80'], env: { SERVICE_NAME: 'secweb', SERVICE_TAGS: 'a' } })
    await docker.run({
      name: 'sec-two',
      publish: ['80', '81'],
      env: { SERVICE_80_NAME: 'halfa', SERVICE_81_NAME: 'halfb' },
    })
    const admin = await freePort()
    const { proc, output } = runCliProcess(['registrator', '--admin', `127.0.0.1:${admin}`, '--ip', '127.0.0.1'], {
      ...docker.tlsEnv,
      ...secureEnv(consul, { CONSUL_HTTP_TOKEN_FILE: tokenFile }),
      CONSUL_LB_HOST_ID: 'sec',
      CONSUL_LB_RESYNC: '2',
      CONSUL_LB_RETRY_INTERVAL: '200',
    })
    t.teardown(() => stopChild(proc))
    const status = async () =>
      (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as {
        registrator: {
          docker: { eventStream: string }
          consul: { token: string; aclDenied: { permission: string; count: number; message: string } | null }
          registrationsOwned: number
          errors: { code: string }[]
        }
      }
    const metrics = async () => await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text()

    const denied = await waitFor(
      'the denial in /status',
      async () => {
        const s = await status()
        return (s.registrator.consul.aclDenied?.count ?? 0) >= 2 ? s : null
      },
      30_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${output()}`)
    })
    t.equal(
      denied.registrator.docker.eventStream,
      'connected',
      'Docker over TLS (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) works',
    )
    t.equal(denied.registrator.consul.aclDenied!.permission, 'service:write on "secweb"', 'the missing permission')
    t.match(denied.registrator.consul.token, /from file/, '/status says where the token comes from')
    t.ok(
      denied.registrator.errors.some((e) => e.code === 'CLB_CONSUL_ACL_DENIED'),
      'recent errors carry the code',
    )
    t.equal(proc.exitCode, null, 'still running')
    t.same(await consul.agent.api('GET', '/v1/agent/services'), {}, 'nothing registered')
    const m = await metrics()
    t.match(m, /consul_lb_registrator_consul_acl_denied 1/, 'the denial gauge is up')
    t.match(m, /consul_lb_registrator_operations_total\{op="register",result="CLB_CONSUL_ACL_DENIED"\} [2-9]/)
    await waitFor('a retried sync, denied again', async () =>
      /consul_lb_registrator_syncs_total\{reason="(retry|periodic)",result="CLB_REG_SYNC_FAILED"\} [1-9]/.test(
        await metrics(),
      ),
    )
    t.equal(proc.exitCode, null, 'retried with back-off, still running')

    // A token that may write some of a container's services but not all: none of that container's are left behind.
    writeFileSync(tokenFile, partial)
    await waitFor(
      'halfb denied twice with the partial token',
      async () => {
        const d = (await status()).registrator.consul.aclDenied
        return d?.permission === 'service:write on "halfb"' && d.count >= 3
      },
      30_000,
    )
    const names = async () =>
      Object.values((await consul.agent.api('GET', '/v1/agent/services')) as Record<string, { Service: string }>)
        .map((s) => s.Service)
        .sort()
    // Each retry registers halfa again and undoes it once halfb is denied, and the denial is counted before the undo
    // finishes: so the catalog is read until that undo is seen, not once.
    let seen: string[] = []
    await waitFor(
      'halfa rolled back',
      async () => {
        seen = await names()
        return seen.length === 1 && seen[0] === 'secweb'
      },
      15_000,
      50,
    ).catch(() => {})
    t.same(seen, ['secweb'], 'secweb registered; halfa rolled back with its container, halfb denied')
    t.match(output(), /rollback: halfb was denied/, 'halfa was registered, then undone when halfb was denied')

    // Rotation: the operator writes the new token into the same file; no restart.
    writeFileSync(tokenFile, writer)
    await waitFor(
      'the registration with the new token',
      async () => {
        const s = await status()
        return s.registrator.registrationsOwned === 3 && s.registrator.consul.aclDenied === null
      },
      30_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${output()}`)
    })
    t.same(await names(), ['halfa', 'halfb', 'secweb'], 'everything registered with the write token')
    const after = await metrics()
    t.match(after, /consul_lb_registrator_consul_acl_denied 0/, 'the gauge falls back after a clean sync')
    t.match(output(), /token file changed/, 'the reload is logged')

    const everything = `${output()}\n${JSON.stringify(await status())}\n${after}`
    for (const secret of [readOnly, partial, writer])
      t.notOk(everything.includes(secret), 'no token in the logs, /status or /metrics')
    t.equal(proc.exitCode, null)
    await stopChild(proc)
    t.equal(proc.exitCode, 0, 'SIGTERM: exit 0')
  },
)

t.test(
  "the README's registrator policy is enough: service_prefix write alone registers, mirrors health, drains and deregisters (no node_prefix read)",
  async (t) => {
    const consul = await startSecureConsul(t)
    const docker = await startDocker(t)
    const tokenFile = join(tempDir(t, 'consul-lb-minpol-'), 'token')
    writeFileSync(tokenFile, await consul.createToken(POLICIES.registrator, 'registrator-minimal'))
    t.notMatch(POLICIES.registrator, /node_prefix/, 'the policy under test has no node rule')
    docker.removeOnTeardown(t, 'minpol')
    await docker.run({ name: 'minpol', publish: ['80'], env: { SERVICE_NAME: 'minpol' }, healthCmd: 'true' })
    const admin = await freePort()
    const { proc, output } = runCliProcess(['registrator', '--admin', `127.0.0.1:${admin}`, '--ip', '127.0.0.1'], {
      DOCKER_HOST: docker.url,
      ...secureEnv(consul, { CONSUL_HTTP_TOKEN_FILE: tokenFile }),
      CONSUL_LB_HOST_ID: 'minpol',
      CONSUL_LB_RESYNC: '2',
    })
    t.teardown(() => stopChild(proc))
    const checks = async () =>
      (await consul.agent.api('GET', '/v1/agent/checks')) as Record<string, { ServiceID: string; Status: string }>
    const serviceId = async () =>
      Object.keys((await consul.agent.api('GET', '/v1/agent/services')) as Record<string, unknown>).find((id) =>
        id.includes(':minpol:'),
      )
    const step = (what: string, fn: () => Promise<unknown>) =>
      waitFor(what, fn, 30_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${output()}`)
      })
    const id = (await step('registered', serviceId)) as string
    await step('the Docker health mirrored into its TTL check (passing)', async () =>
      Object.values(await checks()).some((c) => c.ServiceID === id && c.Status === 'passing'),
    )
    await docker.docker(['pause', 'minpol'])
    await step('maintenance on while paused', async () => `_service_maintenance:${id}` in (await checks()))
    await docker.docker(['unpause', 'minpol'])
    await step('maintenance off again', async () => !(`_service_maintenance:${id}` in (await checks())))
    await docker.docker(['stop', '-t', '1', 'minpol'])
    await step('deregistered when the container stopped', async () => (await serviceId()) === undefined)
    const status = (await (await fetch(`http://127.0.0.1:${admin}/status`)).json()) as {
      registrator: { consul: { aclDenied: unknown }; errors: { code: string }[] }
    }
    t.equal(status.registrator.consul.aclDenied, null, 'never denied')
    t.notOk(
      status.registrator.errors.some((e) => e.code === 'CLB_CONSUL_ACL_DENIED'),
      'no ACL error among the recent ones',
    )
    t.notMatch(output(), /CLB_CONSUL_ACL_DENIED/)
  },
)
