import { statSync } from 'node:fs'
import type { DoctorConfig } from '../config/doctor.js'
import { type AgentSelf, ConsulClient } from '../consul/client.js'
import { ConsulAclError, type ConsulApiError, ConsulCredentialError, type CredentialField } from '../consul/errors.js'
import { explainEntries } from '../consul/explainer.js'
import { DnsClient, type DnsResult } from '../dns/client.js'
import type { Logger } from '../log.js'
import { detectNginxVersion, supportsUpstreamResolve } from '../nginx/version.js'
import { serviceDnsName } from '../routes/route.js'
import { type Finding, type Report, reportOf } from './report.js'

/** A client certificate that expires sooner than this is a finding: rotation is due. */
const CERT_WARN_DAYS = 30

/** Consul releases whose DNS is known broken for us: 1.19.0–1.19.1 broke tag and SRV lookups. */
const BAD_CONSUL = /^1\.19\.[01]$/

/**
 * `consul-lb doctor`: checks a setup end to end, in the order a request meets it (settings, the HTTP API, the token,
 * the agent's DNS settings, DNS over UDP and TCP, whether DNS sees what the API sees, each route, nginx), and says for
 * each finding how to fix it. Read-only: it writes nothing to Consul.
 */
export async function runDoctor(cfg: DoctorConfig, log: Logger): Promise<Report> {
  const findings: Finding[] = []
  // Two checks may see the same thing (ACLs off: the token endpoint and the agent's configuration both say so).
  const add = (f: Finding) => {
    if (!findings.some((x) => x.check === f.check && x.subject === f.subject && x.summary === f.summary))
      findings.push(f)
  }
  settingsFindings(cfg, add)
  fileFindings(cfg, add)
  let client: ConsulClient | null = null
  try {
    client = new ConsulClient({ connection: cfg.consul, timeoutMs: 5000, log })
  } catch (err) {
    // A token, CA, certificate or key file that cannot be used (loadDoctorConfig leaves them to this check, so that
    // doctor reports them with everything else instead of stopping at them).
    const e = err as ConsulApiError
    add({
      check: 'consul.settings',
      severity: 'fail',
      summary: `${e.code}: ${e.message}`,
      fix:
        e instanceof ConsulCredentialError
          ? `fix or replace the file given as ${CREDENTIAL_SETTING[e.field]}`
          : 'see the message: it names the setting to change',
    })
  }
  const dns = cfg.dns.map((server) => ({
    server,
    udp: new DnsClient({ servers: [server], transport: 'udp', timeoutMs: cfg.dnsTimeoutMs, udpAnswerLimit: 0 }),
    tcp: new DnsClient({ servers: [server], transport: 'tcp', timeoutMs: cfg.dnsTimeoutMs }),
  }))
  try {
    certificateFindings(client, add)
    const apiUp = client ? await apiFindings(client, cfg, add) : false
    const self = client && apiUp ? await agentFindings(client, cfg, add) : null
    await dnsFindings(dns, cfg, add)
    if (client && apiUp) await visibilityFindings(client, dns[0]!.tcp, cfg, self, add)
    if (cfg.nginx) await nginxFindings(cfg, self, add)
  } finally {
    for (const d of dns) {
      d.udp.close()
      d.tcp.close()
    }
    await client?.destroy()
  }
  return reportOf(findings)
}

function settingsFindings(cfg: DoctorConfig, add: (f: Finding) => void): void {
  const c = cfg.consul
  const where = c.address
  if (c.tls && !c.tls.verify)
    add({
      check: 'consul.tls',
      severity: 'fail',
      summary: `certificate verification is off for ${where} (CONSUL_HTTP_SSL_VERIFY=false): anyone on the path can pose as the agent and read the token`,
      fix: 'give the CA with --consul-ca-file / CONSUL_CACERT and drop CONSUL_HTTP_SSL_VERIFY=false',
    })
  else if (c.tls)
    add({
      check: 'consul.tls',
      severity: 'ok',
      summary: `HTTPS to ${where}, verified against ${c.tls.caFile ?? c.tls.caPath ?? "the system's CAs"}${c.tls.serverName ? ` as ${c.tls.serverName}` : ''}${c.tls.certFile ? ', with a client certificate' : ''}`,
    })
  const local = /^(unix:|https?:\/\/(127\.|localhost|\[::1\]))/.test(where)
  if (!c.tls && !local && (c.token || c.tokenFile))
    add({
      check: 'consul.tls',
      severity: 'warn',
      summary: `the ACL token goes in clear text to ${where} (plain HTTP to another host)`,
      fix: "use the agent's HTTPS port (https://…, CONSUL_CACERT) or a local agent",
    })
  if (c.token && !c.tokenFile)
    add({
      check: 'consul.token',
      severity: 'info',
      summary: 'the token is given as a flag or environment variable, which other users may read in ps or /proc',
      fix: 'prefer --consul-token-file / CONSUL_HTTP_TOKEN_FILE (re-read when it changes)',
    })
}

/** The settings (flag / Consul env name) of each credential file, for fixes. */
const CREDENTIAL_SETTING: Record<CredentialField, string> = {
  tokenFile: '--consul-token-file / CONSUL_HTTP_TOKEN_FILE',
  caFile: '--consul-ca-file / CONSUL_CACERT',
  caPath: '--consul-ca-path / CONSUL_CAPATH',
  certFile: '--consul-client-cert / CONSUL_CLIENT_CERT',
  keyFile: '--consul-client-key / CONSUL_CLIENT_KEY',
}

/**
 * Who else may read or change the credential files. Another user who can write the CA file (or put a file in the CA
 * folder) makes us trust any server, and one who can write the certificate, key or token file chooses who we are:
 * a finding. One who can read the key or the token can act as us: worth saying, but only as information, since
 * Kubernetes mounts secrets readable by all (0644) inside a container that has no other user.
 */
function fileFindings(cfg: DoctorConfig, add: (f: Finding) => void): void {
  const c = cfg.consul
  const files: [CredentialField, string | null, boolean][] = [
    ['tokenFile', c.tokenFile, true],
    ['caFile', c.tls?.caFile ?? null, false],
    ['caPath', c.tls?.caPath ?? null, false],
    ['certFile', c.tls?.certFile ?? null, false],
    ['keyFile', c.tls?.keyFile ?? null, true],
  ]
  for (const [field, path, secret] of files) {
    if (!path) continue
    let mode: number
    try {
      mode = statSync(path).mode
    } catch {
      continue // missing: consul.settings says so
    }
    const octal = (mode & 0o777).toString(8).padStart(3, '0')
    if (mode & 0o022)
      add({
        check: 'consul.files',
        subject: path,
        severity: 'warn',
        summary: `${CREDENTIAL_SETTING[field]} is writable by ${mode & 0o002 ? 'every user' : 'its group'} (mode ${octal}): whoever can write it ${field === 'caFile' || field === 'caPath' ? 'chooses which servers we trust' : 'chooses who we are to Consul'}`,
        fix: `chmod go-w ${path}`,
      })
    else if (secret && mode & 0o004)
      add({
        check: 'consul.files',
        subject: path,
        severity: 'info',
        summary: `${CREDENTIAL_SETTING[field]} is readable by every user (mode ${octal}): any local user can act with it`,
        fix: `chmod 600 ${path} (owned by the user consul-lb runs as)`,
      })
  }
}

function certificateFindings(client: ConsulClient | null, add: (f: Finding) => void): void {
  const m = client?.credentials.tls?.material
  if (!m?.clientCertValidTo) return
  const days = Math.floor((m.clientCertValidTo.getTime() - Date.now()) / 86_400_000)
  const when = m.clientCertValidTo.toISOString()
  if (days < 0)
    add({
      check: 'consul.client-cert',
      severity: 'fail',
      summary: `the client certificate (${m.clientCertSubject}) expired on ${when}`,
      fix: 'issue a new one (consul tls cert create -client) and write it over the old files: it is picked up without restart',
    })
  else
    add({
      check: 'consul.client-cert',
      severity: days < CERT_WARN_DAYS ? 'warn' : 'ok',
      summary: `the client certificate (${m.clientCertSubject}) is valid until ${when} (${days} days)`,
      ...(days < CERT_WARN_DAYS
        ? { fix: 'rotate it soon: write the new certificate and key over the old files (re-read without restart)' }
        : {}),
    })
}

/** The API answers at all (no ACL needed), and what the token is. False when the API cannot be reached. */
async function apiFindings(client: ConsulClient, cfg: DoctorConfig, add: (f: Finding) => void): Promise<boolean> {
  try {
    const leader = await client.leader()
    add({
      check: 'consul.api',
      severity: leader ? 'ok' : 'fail',
      summary: leader
        ? `Consul's HTTP API at ${client.address} answers (raft leader ${leader})`
        : `Consul at ${client.address} answers but has no leader`,
      ...(leader ? {} : { fix: 'the servers have no quorum: see consul operator raft list-peers' }),
    })
  } catch (err) {
    const e = err as ConsulApiError
    add({ check: 'consul.api', severity: 'fail', summary: `${e.code}: ${e.message}`, fix: fixFor(e) })
    return false
  }
  const given = cfg.consul.token !== null || cfg.consul.tokenFile !== null
  try {
    const me = await client.tokenSelf()
    add({
      check: 'consul.token',
      severity: 'ok',
      summary: `${client.credentials.tokenSource}: "${me.description || me.accessorId}" with ${[...me.policies.map((p) => `policy ${p}`), ...me.identities].join(', ') || 'no policy'}${me.expirationTime ? `, expires ${me.expirationTime}` : ''}`,
    })
  } catch (err) {
    const e = err as ConsulApiError
    if (e.httpStatus === 401 || /ACL support disabled/i.test(e.message))
      add({ check: 'consul.acl', severity: 'info', summary: 'ACLs are off on this agent' })
    else if (e instanceof ConsulAclError && e.reason === 'unknown-token' && !given)
      add({
        check: 'consul.token',
        severity: 'warn',
        summary:
          'no token given: every request uses the anonymous token, which default-deny ACLs refuse nearly everything',
        fix: 'give a token with --consul-token-file / CONSUL_HTTP_TOKEN_FILE (see the README for the minimal policies)',
      })
    else if (e instanceof ConsulAclError && e.reason === 'unknown-token')
      add({
        check: 'consul.token',
        severity: 'fail',
        summary: e.message,
        fix: 'check the token file (a stale or mistyped token, or one of another cluster)',
      })
    else add({ check: 'consul.token', severity: 'info', summary: `could not read the token: ${e.message}` })
  }
  return true
}

/** The agent's version, ACL mode and DNS settings from /v1/agent/self (needs agent:read). */
async function agentFindings(
  client: ConsulClient,
  cfg: DoctorConfig,
  add: (f: Finding) => void,
): Promise<AgentSelf | null> {
  let self: AgentSelf
  try {
    self = await client.agentSelf()
  } catch (err) {
    const e = err as ConsulApiError
    add({
      check: 'consul.agent',
      severity: 'warn',
      summary: `cannot read the agent's configuration, so its DNS settings are not checked: ${e.message}`,
      fix:
        e.code === 'CLB_CONSUL_ACL_DENIED'
          ? 'run doctor with a token that also has agent:read (agent_prefix "" { policy = "read" })'
          : fixFor(e),
    })
    return null
  }
  const version = self.Config.Version ?? 'unknown'
  add({
    check: 'consul.version',
    severity: BAD_CONSUL.test(version) ? 'warn' : 'ok',
    summary: `Consul ${version} (node ${self.Config.NodeName}, datacenter ${self.Config.Datacenter})`,
    ...(BAD_CONSUL.test(version)
      ? { fix: 'upgrade: Consul 1.19.0 and 1.19.1 answer tag and SRV lookups wrongly' }
      : {}),
  })
  const d = self.DebugConfig ?? {}
  const aclsOn = d.ACLsEnabled ?? d.ACLResolverSettings?.ACLsEnabled
  if (aclsOn !== undefined)
    add({
      check: 'consul.acl',
      severity: 'info',
      summary: aclsOn
        ? `ACLs are on, default policy ${d.ACLResolverSettings?.ACLDefaultPolicy ?? client.aclDefaultPolicy ?? 'unknown'}`
        : 'ACLs are off on this agent',
    })
  if (d.DNSEnableTruncate === false)
    add({
      check: 'dns.truncate',
      severity: 'warn',
      summary: `dns_config.enable_truncate is off and udp_answer_limit is ${d.DNSUDPAnswerLimit ?? 3}: UDP clients without EDNS (nginx, most resolvers) silently get at most ${d.DNSUDPAnswerLimit ?? 3} instances. consul-lb serve asks over TCP (or EDNS) and is not affected`,
      fix: 'set dns_config { enable_truncate = true } on the agents nginx and other clients ask',
    })
  else if (d.DNSEnableTruncate === true)
    add({
      check: 'dns.truncate',
      severity: 'ok',
      summary: 'dns_config.enable_truncate is on: cut UDP answers carry the TC bit',
    })
  const ttl = serviceTtlMs(d.DNSServiceTTL)
  const used = Math.min(Math.max(ttl ?? 0, cfg.ttlFloorMs), cfg.ttlCeilingMs)
  add({
    check: 'dns.ttl',
    severity: 'info',
    summary:
      ttl === null || ttl === 0
        ? `Consul answers with TTL 0 (dns_config.service_ttl unset): consul-lb caches each answer for its TTL floor, ${cfg.ttlFloorMs} ms`
        : `dns_config.service_ttl gives ${ttl} ms; consul-lb caches answers for ${used} ms (floor ${cfg.ttlFloorMs}, ceiling ${cfg.ttlCeilingMs})`,
  })
  if (d.DNSOnlyPassing === false)
    add({
      check: 'dns.only-passing',
      severity: 'info',
      summary: 'instances whose checks warn stay in DNS answers and get traffic (dns_config.only_passing is off)',
    })
  return self
}

type Dns = { server: { label: string }; udp: DnsClient; tcp: DnsClient }

/** Each DNS server over UDP and TCP, asked for the `consul` service (which every cluster has). */
async function dnsFindings(dns: Dns[], cfg: DoctorConfig, add: (f: Finding) => void): Promise<void> {
  const name = serviceDnsName('consul', null, null, cfg.domain)
  for (const d of dns) {
    for (const transport of ['udp', 'tcp'] as const) {
      try {
        const r = await d[transport].query(name, 'SRV')
        add({
          check: `dns.${transport}`,
          subject: d.server.label,
          severity: 'ok',
          summary: `answers over ${transport.toUpperCase()} (${name}: ${r.kind === 'ok' ? `${r.message.answers.length} record(s)` : r.kind.toUpperCase()})`,
        })
      } catch (err) {
        add({
          check: `dns.${transport}`,
          subject: d.server.label,
          severity: 'fail',
          summary: `no answer over ${transport.toUpperCase()}: ${(err as Error).message}`,
          fix: `check --dns (the agent's DNS port is ports.dns, 8600 by default)${transport === 'tcp' ? '; serve uses TCP by default' : ''}`,
        })
      }
    }
  }
}

/**
 * Whether DNS sees what the HTTP API sees: for the `consul` service and for each route's service, instances passing
 * in the API against records in a DNS answer. The well-known ACL trap (no DNS token on the agent) shows here.
 */
async function visibilityFindings(
  client: ConsulClient,
  dns: DnsClient,
  cfg: DoctorConfig,
  self: AgentSelf | null,
  add: (f: Finding) => void,
): Promise<void> {
  const onlyPassing = self?.DebugConfig?.DNSOnlyPassing === true
  const seen = new Set<string>()
  const targets = [
    { service: 'consul', tag: null, datacenter: null, check: 'dns.acl' },
    ...cfg.routes.map((r) => ({ service: r.service, tag: r.tag, datacenter: r.datacenter, check: 'route' })),
  ]
  for (const target of targets) {
    const id = `${target.service}/${target.tag}/${target.datacenter}`
    if (seen.has(id)) continue
    seen.add(id)
    const name = serviceDnsName(target.service, target.tag, target.datacenter, cfg.domain)
    let dnsCount: number | string
    try {
      const r: DnsResult = await dns.query(name, 'SRV')
      dnsCount = r.kind === 'ok' ? r.message.answers.length : 0
    } catch (err) {
      dnsCount = (err as { code?: string }).code ?? 'error'
    }
    let api: Awaited<ReturnType<ConsulClient['healthService']>>
    try {
      api = await client.healthService(target.service, target)
    } catch (err) {
      const e = err as ConsulApiError
      add({
        check: target.check,
        subject: name,
        severity: 'warn',
        summary: `DNS: ${dnsCount} instance(s); the HTTP API could not be asked: ${e.message}`,
        fix: e.code === 'CLB_CONSUL_ACL_DENIED' ? 'give the doctor token service:read and node:read' : fixFor(e),
      })
      continue
    }
    // Every cluster has a passing `consul` service: an empty answer for it under deny is the token, like any service
    // that DNS shows and the API does not.
    const unreadable =
      api.entries.length === 0 &&
      (api.filteredByAcls ||
        (client.aclDefaultPolicy === 'deny' &&
          (target.service === 'consul' || (typeof dnsCount === 'number' && dnsCount > 0))))
    if (unreadable) {
      // DNS (the agent's DNS token) sees instances the doctor's own token may not read: not a DNS problem.
      add({
        check: target.check,
        subject: name,
        severity: 'warn',
        summary: `DNS ${dnsCount}, HTTP API 0 readable: ${client.credentials.tokenSource} may not read "${target.service}" (${api.filteredByAcls ? 'its instances were filtered by ACLs' : 'default deny'}), so doctor cannot compare DNS with the API`,
        fix: 'run doctor with a token that may read services and nodes (service_prefix "" and node_prefix "" { policy = "read" })',
      })
      continue
    }
    const statuses = api.entries.map((e) => worst(e.Checks.map((c) => c.Status)))
    const passing = statuses.filter((s) => s === 'passing').length
    const warning = statuses.filter((s) => s === 'warning').length
    const expected = passing + (onlyPassing ? 0 : warning)
    if (typeof dnsCount !== 'number') {
      // dns.udp / dns.tcp already fail; what the API alone says of the service is still worth saying.
      const apiCounts = `HTTP API ${passing} passing${warning ? ` + ${warning} warning` : ''} of ${api.entries.length}`
      add({
        check: target.check,
        subject: name,
        ...(expected === 0
          ? {
              severity: 'warn',
              summary: `DNS gave no answer (${dnsCount}), ${apiCounts}: ${explainEntries(target, api.entries, api.filteredByAcls, client.aclDefaultPolicy).text}`,
              fix: 'register the service, or fix its checks',
            }
          : {
              severity: 'skip',
              summary: `DNS gave no answer (${dnsCount}: see dns.udp and dns.tcp), ${apiCounts}: DNS cannot be compared with the API`,
            }),
      })
      continue
    }
    const counts = `DNS ${dnsCount}, HTTP API ${passing} passing${warning ? ` + ${warning} warning` : ''} of ${api.entries.length}`
    if (dnsCount === expected && (expected > 0 || target.check === 'route')) {
      add({
        check: target.check,
        subject: name,
        severity: expected > 0 ? 'ok' : 'warn',
        summary:
          expected > 0
            ? `${counts}: DNS sees what the API sees`
            : `${counts}: ${explainEntries(target, api.entries, api.filteredByAcls, client.aclDefaultPolicy).text}`,
        ...(expected > 0 ? {} : { fix: 'register the service, or fix its checks' }),
      })
      continue
    }
    const why =
      dnsCount === 0 && expected > 0
        ? explainEntries(target, api.entries, api.filteredByAcls, client.aclDefaultPolicy).text
        : dnsCount < expected
          ? 'DNS returns fewer instances than the API lists as passing'
          : api.entries.length === 0
            ? explainEntries(target, api.entries, api.filteredByAcls, client.aclDefaultPolicy).text
            : 'DNS and the HTTP API disagree'
    add({
      check: target.check,
      subject: name,
      severity: 'fail',
      summary: `${counts}: ${why}`,
      fix:
        client.aclDefaultPolicy === 'deny' && dnsCount === 0 && expected > 0
          ? 'give the agent a DNS token that may read every node and service: consul acl set-agent-token dns <secret of a token with node_prefix "" and service_prefix "" { policy = "read" }> (or acl.tokens.dns in the agent config)'
          : 'compare --dns and --consul: are they the same agent and datacenter?',
    })
  }
}

async function nginxFindings(cfg: DoctorConfig, self: AgentSelf | null, add: (f: Finding) => void): Promise<void> {
  let version: Awaited<ReturnType<typeof detectNginxVersion>>
  try {
    version = await detectNginxVersion(cfg.nginxBin)
  } catch (err) {
    add({ check: 'nginx', severity: 'fail', summary: (err as Error).message, fix: 'check --nginx-bin' })
    return
  }
  if (!version) {
    add({
      check: 'nginx',
      severity: 'warn',
      summary: `${cfg.nginxBin} is not installed here: the emitter cannot check its output (--check) nor gate on the version`,
      fix: 'install nginx, or point --nginx-bin at it',
    })
    return
  }
  const upstreamOk = supportsUpstreamResolve(version)
  const needsUpstream = cfg.mode === 'upstream'
  add({
    check: 'nginx',
    severity: needsUpstream && !upstreamOk ? 'fail' : 'ok',
    summary: `nginx ${version.text}${version.plus ? ' (Plus)' : ''}, mode ${cfg.mode}: ${upstreamOk ? 'runs every mode (upstream … resolve since 1.27.3)' : 'the resolver and catalog modes only (upstream … resolve needs 1.27.3)'}`,
    ...(needsUpstream && !upstreamOk ? { fix: 'use --mode resolver with fixed ports, or nginx >= 1.27.3' } : {}),
  })
  if (self?.DebugConfig?.DNSEnableTruncate === false)
    add({
      check: 'nginx.dns',
      severity: 'warn',
      summary: 'nginx sends no EDNS: without enable_truncate on the agent it sees at most 3 instances of a service',
      fix: 'set dns_config { enable_truncate = true } on the Consul agents nginx asks',
    })
}

function worst(statuses: string[]): 'passing' | 'warning' | 'critical' {
  if (statuses.includes('critical')) return 'critical'
  if (statuses.includes('warning')) return 'warning'
  return 'passing'
}

/** The fix sentence for a failed API call; the TLS and ACL messages already say what to do. */
function fixFor(e: ConsulApiError): string {
  if (e.code === 'CLB_CONSUL_UNREACHABLE' || e.code === 'CLB_CONSUL_TIMEOUT')
    return "check --consul / CONSUL_HTTP_ADDR (the agent's ports.http or ports.https) and that the agent runs"
  return 'see the message: it names the setting to change'
}

/** dns_config.service_ttl as the agent reports it (`{"*": "5s"}`): the wildcard's TTL in ms, null when unset. */
function serviceTtlMs(v: Record<string, string | number> | null | undefined): number | null {
  const raw = v?.['*']
  if (raw === undefined) return null
  if (typeof raw === 'number') return Math.round(raw / 1e6) // Go durations in nanoseconds
  let ms = 0
  for (const [, n, unit] of raw.matchAll(/([\d.]+)(ms|h|m|s|us|µs|ns)/g)) {
    const x = Number(n)
    ms += unit === 'h' ? x * 3.6e6 : unit === 'm' ? x * 6e4 : unit === 's' ? x * 1e3 : unit === 'ms' ? x : 0
  }
  return Math.round(ms)
}
