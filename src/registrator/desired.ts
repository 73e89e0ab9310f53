import { createHash } from 'node:crypto'
import { isIP } from 'node:net'
import type { AgentServiceRegistration } from '../consul/client.js'
import { isServiceName, NAME_RULE } from '../routes/names.js'
import {
  addressSettings,
  type CheckSpec,
  type ContainerConventions,
  cleanTags,
  readConventions,
  serviceSettings,
} from './conventions.js'
import type { ContainerInspect } from './docker.js'
import { type ConventionWarning, conventionWarning } from './errors.js'
import type { ForcedTags } from './tags.js'

/**
 * Desired state: what one container should look like in Consul, computed from its inspect data alone (no I/O), so
 * that the same container always yields byte-identical registrations and reconcile can tell "unchanged" apart.
 */

/** Meta key holding the registrator's host id: the mark of ownership. Consul reserves the `consul-` prefix. */
export const META_OWNER = 'clb-registrator'
/** Meta key holding the full container id, so one container's services can be found without guessing from the ID. */
export const META_CONTAINER = 'clb-container'
/** Meta key holding a hash of the registration: reconcile re-registers only when it differs (no churn). */
export const META_SPEC = 'clb-spec'

export interface DesiredOptions {
  readonly hostId: string
  /** --ip: the address registered for published ports (and host-networked containers). */
  readonly ip: string | null
  readonly internal: boolean
  readonly explicit: boolean
  /** --tags: added to every service (Go templates evaluated per container). */
  readonly forcedTags: ForcedTags
  /** --use-ip-from-label: a label holding the address to register (`10.0.0.5` or `10.0.0.5/24`), as gliderlabs. */
  readonly ipFromLabel: string | null
  /** --require-label: only containers with a SERVICE_REGISTER label are registered (gliderlabs' -require-label). */
  readonly requireLabel: boolean
  /** TTL of the check that mirrors a Docker HEALTHCHECK; refreshed well within it. */
  readonly healthTtl: string
}

export type HealthStatus = 'passing' | 'warning' | 'critical'

export interface DesiredService {
  readonly registration: AgentServiceRegistration
  readonly hash: string
}

export interface ContainerDesired {
  readonly containerId: string
  readonly containerName: string
  readonly services: DesiredService[]
  readonly warnings: ConventionWarning[]
  /** Why the container has no services (ignored, no published ports, --explicit without a name). */
  readonly skipped: string | null
  /** Current status of its Docker HEALTHCHECK as a Consul check status; null without a HEALTHCHECK. */
  readonly health: HealthStatus | null
}

interface PortCandidate {
  port: number
  proto: string
  hostPort: number
  hostIp: string | undefined
}

export function healthCheckId(serviceId: string): string {
  return `service:${serviceId}:docker-health`
}

export function containerName(c: ContainerInspect): string {
  return c.Name.replace(/^\//, '')
}

/**
 * `peer`: for `NetworkMode container:<id>` (a pod's containers sharing one network namespace), the container whose
 * network it uses (inspected by the caller); null when it could not be inspected.
 */
export function desiredForContainer(
  c: ContainerInspect,
  opts: DesiredOptions,
  peer: ContainerInspect | null = null,
): ContainerDesired {
  const name = containerName(c)
  const conv = readConventions(c.Config.Env, c.Config.Labels)
  const warnings = [...conv.warnings]
  const health = healthOf(c)
  const result = (services: DesiredService[], skipped: string | null): ContainerDesired => ({
    containerId: c.Id,
    containerName: name,
    services,
    warnings: dedupe(warnings),
    skipped,
    health,
  })

  if (opts.requireLabel && c.Config.Labels?.SERVICE_REGISTER === undefined)
    return result([], '--require-label and no SERVICE_REGISTER label')
  const addr = addressSettings(conv, warnings)
  const labelIp = ipFromLabel(c, opts.ipFromLabel, warnings)
  const networkMode = c.HostConfig.NetworkMode ?? ''
  const hostNet = networkMode === 'host'
  const internal = addr.internal ?? opts.internal
  let candidates: PortCandidate[]
  if (networkMode.startsWith('container:')) {
    // Docker keeps no port bindings for a container that shares another's network: gliderlabs registers its exposed
    // ports at the address of the container that owns the network (bridge.go newService, "kubernetes pods").
    const ip = labelIp ?? addr.ip ?? (peer ? containerIp(peer, undefined, conv, warnings) : undefined)
    if (!ip) return result([], `network of container ${networkMode.slice(10, 22)}: it has no IP address (or is gone)`)
    candidates = exposedPorts(c).map(([port, proto]) => ({ port, proto, hostPort: port, hostIp: ip }))
  } else if (hostNet) {
    // Every EXPOSEd port of a host-networked image would be registered otherwise, listening or not (registrator's
    // bug): only the ports the user named are services.
    candidates = [...conv.ports.entries()]
      .filter(([, attrs]) => attrs.get('name')?.value.trim())
      .map(([port]) => ({
        port,
        proto: protoOf(c, port),
        hostPort: port,
        hostIp: labelIp ?? addr.ip ?? opts.ip ?? undefined,
      }))
  } else if (internal) {
    const ip = labelIp ?? addr.ip ?? containerIp(c, addr.network, conv, warnings)
    if (!ip) return result([], 'internal mode: the container has no IP address on any network')
    candidates = exposedPorts(c).map(([port, proto]) => ({ port, proto, hostPort: port, hostIp: ip }))
  } else {
    candidates = publishedPorts(c).map((p) => ({ ...p, hostIp: labelIp ?? addr.ip ?? opts.ip ?? p.hostIp }))
  }
  if (addr.network !== undefined && (hostNet || !internal)) {
    // Only a container IP belongs to a Docker network; a published port or the host's network has none to choose.
    const a = conv.base.get('network')!
    warnings.push(
      conventionWarning(
        a.field,
        a.value,
        `applies only in internal mode (--internal or SERVICE_INTERNAL=true); the ${hostNet ? "host's" : 'published'} address is registered`,
      ),
    )
  }
  for (const port of conv.ports.keys()) {
    if (!hostNet && !candidates.some((p) => p.port === port)) {
      const first = conv.ports.get(port)!.values().next().value!
      warnings.push(
        conventionWarning(
          first.field,
          first.value,
          `port ${port} is not ${internal ? 'exposed' : 'published'} by the container; setting ignored`,
        ),
      )
    }
  }
  if (candidates.length === 0)
    return result(
      [],
      hostNet ? 'host network: no SERVICE_<port>_NAME' : internal ? 'no exposed ports' : 'no published ports',
    )
  // registrator decides "several ports" before ignores are applied; keep that so default names and IDs match its.
  const isGroup = candidates.length > 1
  const services: DesiredService[] = []
  const baseIgnore = serviceSettings({ ...conv, ports: new Map() }, 0, []).ignore
  const forced = cleanTags(opts.forcedTags.forContainer(c, warnings), '--tags', '', warnings)
  const imageName = defaultName(c)
  for (const cand of candidates) {
    const s = serviceSettings(conv, cand.port, warnings)
    if (s.ignore) continue
    if (opts.explicit && !s.name) continue
    const udp = cand.proto === 'udp'
    const perPortId = conv.ports.get(cand.port)?.get('id')?.value.trim()
    const id = s.id
      ? isGroup && !perPortId
        ? `${s.id}:${cand.port}${udp ? ':udp' : ''}`
        : s.id
      : `${opts.hostId}:${name}:${cand.port}${udp ? ':udp' : ''}`
    if (services.some((x) => x.registration.ID === id)) {
      warnings.push(
        conventionWarning(
          `SERVICE_${cand.port}_ID`,
          id,
          'service ID already used by another port of this container; port skipped',
        ),
      )
      continue
    }
    // registrator's rule: with several ports, a name that is not the port's own (SERVICE_NAME, or the image's) gets
    // `-<port>`, so each port stays its own service (SERVICE_NAME=db on 6379 and 6380: db-6379, db-6380).
    const isPortName = !!conv.ports.get(cand.port)?.get('name')?.value.trim()
    const baseName = s.name ?? imageName
    const svcName = isGroup && !isPortName ? `${baseName}-${cand.port}` : baseName
    if (!s.name && !isServiceName(svcName))
      warnings.push(
        conventionWarning(
          'image',
          c.Config.Image,
          `default name "${svcName}" (gliderlabs' rule, kept for a drop-in) cannot be answered by Consul DNS nor routed (${NAME_RULE}); set SERVICE_NAME`,
        ),
      )
    const tags = [...s.tags]
    for (const t of [...forced, ...(udp ? ['udp'] : [])]) if (!tags.includes(t)) tags.push(t)
    const meta: Record<string, string> = {}
    for (const k of Object.keys(s.meta).sort()) meta[k] = s.meta[k]!
    meta[META_OWNER] = opts.hostId
    meta[META_CONTAINER] = c.Id
    const checks: Record<string, unknown>[] = []
    if (s.check) checks.push(consulCheck(id, svcName, s.check, cand.hostIp, cand.hostPort))
    if (health)
      checks.push({
        CheckID: healthCheckId(id),
        Name: `Docker HEALTHCHECK of ${name}`,
        TTL: opts.healthTtl,
        Status: health,
      })
    const registration: AgentServiceRegistration = {
      ID: id,
      Name: svcName,
      Tags: tags,
      ...(cand.hostIp ? { Address: cand.hostIp } : {}),
      Port: cand.hostPort,
      Meta: meta,
      ...(checks.length ? { Checks: checks } : {}),
    }
    const hash = specHash(registration)
    meta[META_SPEC] = hash
    services.push({ registration, hash })
  }
  if (services.length === 0)
    return result(
      [],
      baseIgnore
        ? 'SERVICE_IGNORE'
        : opts.explicit
          ? '--explicit and no SERVICE_NAME / SERVICE_<port>_NAME'
          : 'every port ignored',
    )
  return result(services, null)
}

/**
 * Hash of everything we register except the live status of the HEALTHCHECK mirror (that changes through TTL updates,
 * and must not cause a re-register that would wake every watcher of the service).
 */
function specHash(reg: AgentServiceRegistration): string {
  const checks = reg.Checks?.map((ch) =>
    String(ch.CheckID).endsWith(':docker-health') ? { ...ch, Status: undefined } : ch,
  )
  return createHash('sha256')
    .update(JSON.stringify({ ...reg, Checks: checks }))
    .digest('hex')
    .slice(0, 16)
}

function consulCheck(
  serviceId: string,
  serviceName: string,
  spec: CheckSpec,
  address: string | undefined,
  port: number,
): Record<string, unknown> {
  // Without a specific address the service is reached through the agent's node address; the check runs on that
  // agent (the registrator's model: one agent per Docker host), so loopback reaches the published port.
  const host = address ?? '127.0.0.1'
  const hostPort = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
  const check: Record<string, unknown> = { CheckID: `service:${serviceId}`, Name: `${serviceName} ${spec.kind} check` }
  if (spec.kind === 'http' || spec.kind === 'https') {
    check.HTTP = `${spec.kind}://${hostPort}${spec.path ?? '/'}`
    if (spec.method) check.Method = spec.method
  } else if (spec.kind === 'tcp') {
    check.TCP = hostPort
  } else if (spec.kind === 'grpc') {
    check.GRPC = hostPort
    if (spec.grpcUseTls) check.GRPCUseTLS = true
  } else {
    check.TTL = spec.ttl
  }
  if (spec.tlsSkipVerify) check.TLSSkipVerify = true
  if (spec.kind !== 'ttl') check.Interval = spec.interval
  if (spec.timeout && spec.kind !== 'ttl') check.Timeout = spec.timeout
  if (spec.initialStatus) check.Status = spec.initialStatus
  if (spec.deregisterAfter) check.DeregisterCriticalServiceAfter = spec.deregisterAfter
  return check
}

function healthOf(c: ContainerInspect): HealthStatus | null {
  const test = c.Config.Healthcheck?.Test
  if (!test || test.length === 0 || test[0] === 'NONE') return null
  return healthFromDocker(c.State.Health?.Status)
}

/** Docker health → Consul check status. "starting" is critical: the container has not shown it can serve yet. */
export function healthFromDocker(status: string | undefined): HealthStatus {
  return status === 'healthy' ? 'passing' : 'critical'
}

/**
 * gliderlabs' default name, as written (bridge.go: `strings.Split(path.Base(container.Config.Image), ":")[0]`): the
 * image's last path element up to the first colon, case and `_` kept (`registry:5000/team/my_app:1.2` → `my_app`).
 * Two cases where gliderlabs' rule gives no usable name differ: a digest (`app@sha256:…` → gliderlabs `app@sha256`,
 * here `app`) and an image given by id (`sha256:…` → gliderlabs `sha256`, here the container name).
 */
export function defaultName(c: ContainerInspect): string {
  const image = c.Config.Image
  if (/^sha256:[0-9a-f]+$/i.test(image)) return containerName(c) || 'container'
  const base = (image.replace(/\/+$/, '').split('/').pop() ?? '').split(':')[0]!.replace(/@.*$/, '')
  return base || containerName(c) || 'container'
}

/** --use-ip-from-label: gliderlabs takes the label's value up to a `/` (a CIDR suffix); a missing label is no error. */
function ipFromLabel(c: ContainerInspect, label: string | null, warnings: ConventionWarning[]): string | undefined {
  if (!label) return undefined
  const raw = c.Config.Labels?.[label]?.trim()
  if (!raw) return undefined
  const slash = raw.lastIndexOf('/')
  const ip = slash === -1 ? raw : raw.slice(0, slash)
  if (isIP(ip)) return ip
  warnings.push(conventionWarning(label, raw, 'not an IP address (or IP/prefix); the usual address is registered'))
  return undefined
}

function parsePortKey(key: string): [number, string] | null {
  const m = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/.exec(key)
  return m ? [Number(m[1]), m[2] ?? 'tcp'] : null
}

function protoOf(c: ContainerInspect, port: number): string {
  return exposedPorts(c).find(([p]) => p === port)?.[1] ?? 'tcp'
}

function exposedPorts(c: ContainerInspect): [number, string][] {
  const keys = new Set([...Object.keys(c.Config.ExposedPorts ?? {}), ...Object.keys(c.NetworkSettings.Ports ?? {})])
  return [...keys]
    .map(parsePortKey)
    .filter((p): p is [number, string] => p !== null)
    .sort((a, b) => a[0] - b[0] || a[1].localeCompare(b[1]))
}

function publishedPorts(c: ContainerInspect): PortCandidate[] {
  const out: PortCandidate[] = []
  for (const [key, bindings] of Object.entries(c.NetworkSettings.Ports ?? {})) {
    const parsed = parsePortKey(key)
    if (!parsed || !bindings || bindings.length === 0) continue
    // Docker lists one binding per address family for `-p 80`; prefer IPv4, as registrator did.
    const b = bindings.find((x) => !x.HostIp.includes(':')) ?? bindings[0]!
    const hostPort = Number(b.HostPort)
    if (!(hostPort >= 1 && hostPort <= 65535)) continue
    const unspecified = b.HostIp === '' || b.HostIp === '0.0.0.0' || b.HostIp === '::'
    out.push({ port: parsed[0], proto: parsed[1], hostPort, hostIp: unspecified ? undefined : b.HostIp })
  }
  return out.sort((a, b) => a.port - b.port || a.proto.localeCompare(b.proto))
}

function containerIp(
  c: ContainerInspect,
  network: string | undefined,
  conv: ContainerConventions,
  warnings: ConventionWarning[],
): string | undefined {
  const networks = c.NetworkSettings.Networks ?? {}
  const ipOf = (n: { IPAddress?: string; GlobalIPv6Address?: string } | undefined) =>
    n?.IPAddress || n?.GlobalIPv6Address || undefined
  if (network) {
    const ip = ipOf(networks[network])
    if (ip) return ip
    const a = conv.base.get('network')!
    warnings.push(
      conventionWarning(
        a.field,
        a.value,
        `the container has no address on network "${network}" (it has ${Object.keys(networks).join(', ') || 'none'}); the first network's address is used`,
      ),
    )
  }
  for (const n of Object.keys(networks).sort()) {
    const ip = ipOf(networks[n])
    if (ip) return ip
  }
  return undefined
}

function dedupe(warnings: ConventionWarning[]): ConventionWarning[] {
  const seen = new Set<string>()
  return warnings.filter((w) => {
    const k = `${w.field}\0${w.message}`
    if (seen.has(k)) return false
    seen.add(k)
    return true
  })
}
