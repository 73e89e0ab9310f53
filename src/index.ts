/**
 * The embedding API: start a proxy from a config object (validated exactly like a config file), and the pieces an
 * embedding user may want. The CLI is a thin layer over these.
 */
import type { Registry } from 'prom-client'
import { type AdminServer, startAdmin } from './admin/server.js'
import { loadServeConfig, type ServeConfig } from './config/serve.js'
import type { Logger } from './log.js'
import { adminViewOf, createProxy } from './proxy/create.js'
import type { LoadBalancer } from './proxy/proxy.js'
import type { NoInstanceExplainer } from './proxy/target.js'
// Loading these registers their keys, so a config object shared by every subcommand is accepted here too.
import './config/registrator.js'
import './config/nginx.js'

// Consul's HTTP API as production runs it (TLS, ACL tokens), the 503 explainer over it, and doctor.
export { type DoctorConfig, loadDoctorConfig } from './config/doctor.js'
export { loadNginxConfig, type NginxConfig } from './config/nginx.js'
export { loadRegistratorConfig } from './config/registrator.js'
export { loadServeConfig, type ServeConfig } from './config/serve.js'
export { ConsulClient, type ConsulClientOptions } from './consul/client.js'
export type { ConsulConnection, ConsulTls } from './consul/connection.js'
export {
  ConsulAclError,
  ConsulApiError,
  ConsulCredentialError,
  ConsulTlsError,
  type TlsProblem,
} from './consul/errors.js'
export { ConsulExplainer, type ExplainerOptions } from './consul/explainer.js'
export { runDoctor } from './doctor/doctor.js'
export { type Finding, formatReport, type Report, type Severity } from './doctor/report.js'
export {
  BodyTooLargeError,
  ClientRequestError,
  ConfigError,
  ConsulLbError,
  NoHealthyInstanceError,
  NoRouteError,
  ServiceNotAllowedError,
  UpstreamError,
} from './errors.js'
export * from './nginx/index.js'
export { type CreatedProxy, type CreateProxyOptions, createProxy } from './proxy/create.js'
export { LoadBalancer } from './proxy/proxy.js'
export type { NoInstanceExplainer } from './proxy/target.js'
export { DockerError, DockerTlsError } from './registrator/errors.js'
export { Registrator, type RegistratorConfig } from './registrator/index.js'
export { parseRoute, type Route } from './routes/route.js'

export interface RunningProxy {
  proxy: LoadBalancer
  admin: AdminServer | null
  /** Port the proxy listens on (useful with listen port 0). */
  port: number
  adminPort: number | null
  close(): Promise<void>
}

/**
 * Starts a proxy (and its admin listener unless `admin: 'off'`). `settings` uses the config file's keys
 * (`{ listen: '127.0.0.1:8080', routes: ['/api=api'] }`); invalid settings throw a ConfigError naming the key.
 */
export async function startProxy(
  settings: Record<string, unknown>,
  opts: { log?: Logger; registry?: Registry; explainer?: NoInstanceExplainer } = {},
): Promise<RunningProxy> {
  const config: ServeConfig = loadServeConfig({ object: settings })
  const { proxy, log, registry, port } = await createProxy(config, opts)
  let admin: AdminServer | null = null
  if (config.admin) {
    try {
      admin = await startAdmin({ ...config.admin, log, registry, ...adminViewOf(proxy) })
    } catch (err) {
      await proxy.close(0)
      throw err
    }
  }
  return {
    proxy,
    admin,
    port,
    adminPort: admin?.port ?? null,
    close: async () => {
      await proxy.close()
      await admin?.close()
    },
  }
}
