import { Registry } from 'prom-client'
import { loadRegistratorConfig } from '../../src/config/registrator.js'
import { type Logger, silentLogger } from '../../src/log.js'
import { Registrator } from '../../src/registrator/index.js'
import type { ConsulAgent } from './consul.js'
import type { DockerDaemon } from './docker.js'

/** Starts a Registrator against a test engine and agent, configured like a config file would (so config is tested
 * too), closed in teardown. Short resync and reconnect periods keep the tests fast. */
export async function startRegistrator(
  t: { teardown(fn: () => unknown): void },
  docker: DockerDaemon,
  consul: ConsulAgent,
  settings: Record<string, unknown> = {},
  log: Logger = silentLogger(),
): Promise<Registrator> {
  const config = loadRegistratorConfig({
    object: {
      docker: docker.url,
      consul: consul.httpAddr,
      admin: 'off',
      resync: 2,
      retryInterval: 200,
      reconnectMaxMs: 1000,
      ...settings,
    },
    env: {},
  })
  const registrator = new Registrator(config, { log, registry: new Registry() })
  t.teardown(() => registrator.close())
  await registrator.start()
  await registrator.ready(20_000)
  return registrator
}

export interface CatalogInstance {
  ServiceID: string
  ServiceName: string
  ServiceAddress: string
  ServicePort: number
  ServiceTags: string[]
  ServiceMeta: Record<string, string>
}

/** The agent's view of services whose ID starts with `prefix` (a test's host id), keyed by ID. */
export async function agentServicesOf(
  consul: ConsulAgent,
  prefix: string,
): Promise<
  Record<
    string,
    { ID: string; Service: string; Address: string; Port: number; Tags: string[]; Meta: Record<string, string> }
  >
> {
  const all = (await consul.api('GET', '/v1/agent/services')) as Record<
    string,
    { ID: string; Service: string; Address: string; Port: number; Tags: string[]; Meta: Record<string, string> }
  >
  return Object.fromEntries(Object.entries(all).filter(([id]) => id.startsWith(prefix)))
}
