import { type ConsulConnection, DEFAULT_CONSUL_ADDRESS } from '../consul/connection.js'
import { ConfigError } from '../errors.js'
import { isDomain } from '../routes/names.js'
import type { Route } from '../routes/route.js'
import { CONSUL_FIELDS, consulConnectionFrom } from './consul.js'
import type { FieldSpec } from './fields.js'
import { type ConfigSources, loadFields } from './load.js'
import { NGINX_FIELDS, type NginxModeSetting } from './nginx.js'
import {
  COMMON_FIELDS,
  type DnsServer,
  OTHER_COMMAND_KEYS,
  parseDnsServers,
  parseRoutes,
  SERVE_FIELDS,
} from './serve.js'

const pick = (table: readonly FieldSpec[], keys: string[]) => table.filter((f) => keys.includes(f.key))

/** doctor's own settings; it also reads the DNS, route and Consul settings of serve and the emitter's nginx ones. */
export const DOCTOR_FIELDS: readonly FieldSpec[] = [
  {
    key: 'nginx',
    kind: 'bool',
    default: false,
    help: "also check the nginx emitter's side: the nginx version (--nginx-bin) and whether it can run --mode",
  },
]

/** Every setting `consul-lb doctor` reads: a config file shared with serve, registrator and nginx works as is. */
export const DOCTOR_COMMAND_FIELDS: readonly FieldSpec[] = [
  ...DOCTOR_FIELDS,
  ...COMMON_FIELDS,
  ...CONSUL_FIELDS,
  ...pick(SERVE_FIELDS, ['ttlFloorMs', 'ttlCeilingMs', 'dnsTimeoutMs']),
  ...pick(NGINX_FIELDS, ['mode', 'nginxBin']),
]

export interface DoctorConfig {
  dns: DnsServer[]
  domain: string
  routes: Route[]
  consul: ConsulConnection
  ttlFloorMs: number
  ttlCeilingMs: number
  dnsTimeoutMs: number
  nginx: boolean
  mode: NginxModeSetting
  nginxBin: string
  logLevel: string
}

export function loadDoctorConfig(sources: ConfigSources): DoctorConfig {
  const v = loadFields(DOCTOR_COMMAND_FIELDS, sources, [
    ...OTHER_COMMAND_KEYS,
    ...SERVE_FIELDS.map((f) => f.key),
    ...NGINX_FIELDS.map((f) => f.key),
  ])
  const domain = String(v.domain).toLowerCase().replace(/\.$/, '')
  if (!isDomain(domain)) throw new ConfigError('domain', `"${v.domain}" is not a DNS domain`)
  return {
    dns: parseDnsServers(v.dns as string[], 'dns'),
    domain,
    routes: parseRoutes(v.routes as unknown[], sources.flags?.routes !== undefined ? '--route' : 'routes'),
    // Unusable token or TLS files are findings of doctor's (consul.settings), not a usage error.
    consul: consulConnectionFrom(v, DEFAULT_CONSUL_ADDRESS, false)!,
    ttlFloorMs: v.ttlFloorMs as number,
    ttlCeilingMs: v.ttlCeilingMs as number,
    dnsTimeoutMs: v.dnsTimeoutMs as number,
    nginx: v.nginx === true,
    mode: v.mode as NginxModeSetting,
    nginxBin: String(v.nginxBin),
    logLevel: String(v.logLevel),
  }
}
