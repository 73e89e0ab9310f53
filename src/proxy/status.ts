import type { LoadBalancer } from './proxy.js'

/**
 * The /status view of a proxy: JSON that explains itself. Per service: where the answer came from (fresh, stale,
 * negative), over which transport, how old it is, whether Consul looked to cap it, each instance with its load (and
 * whether it is full: at its connection cap, it gets no new request), and if ejected, why and for how much longer.
 * Reads state only.
 */
export function proxyStatus(p: LoadBalancer): unknown {
  const now = Date.now()
  const c = p.config
  const seen = new Set<string>()
  const services = []
  for (const t of p.targets()) {
    const e = t.entry
    const id = `${e.key}`
    if (seen.has(id)) continue
    seen.add(id)
    services.push({
      service: e.service,
      dnsName: e.name,
      lookup: e.port === null ? 'SRV (ports from Consul)' : `A/AAAA, fixed port ${e.port}`,
      answer: e.source,
      answerMeaning: SOURCE_MEANING[e.source],
      transport: e.transport,
      server: e.server,
      capped: e.capped,
      cappedMeaning: e.capped
        ? 'a UDP answer held only part of the instances (Consul udp_answer_limit / no TC bit); the full TCP answer is used'
        : undefined,
      ageMs: e.fetchedAt ? now - e.fetchedAt : null,
      ttlMs: e.ttlMs,
      expiresInMs: e.expiresAt ? e.expiresAt - now : null,
      refreshes: e.refreshCount,
      lastError: e.lastError ? { ...e.lastError, agoMs: now - e.lastError.at } : null,
      panicPicks: t.pool.panics,
      instances: t.pool.members().map((m) => {
        const u = m.upstream
        const ejected = u.isEjected(now)
        return {
          instance: u.key,
          priority: m.priority,
          weight: m.weight,
          inflight: u.inflight,
          tunnels: u.tunnels,
          maxConnections: u.maxConnections,
          full: !u.hasCapacity(),
          available: u.isAvailable(now),
          requests: u.requests,
          failures: u.failures,
          ejected,
          ejectedForMs: ejected ? u.ejectedUntil - now : 0,
          ejectReason: ejected ? u.ejectReason : null,
          lastFailure: u.lastFailure ? { code: u.lastFailure.code, agoMs: now - u.lastFailure.at } : null,
        }
      }),
    })
  }
  return {
    state: p.isClosing ? 'closing' : 'serving',
    uptimeS: Math.round((now - p.startedAt) / 1000),
    pid: process.pid,
    listen: `${c.listen.host}:${p.port}`,
    inflight: p.inFlight,
    openUpgrades: p.openUpgrades,
    clientConnections: p.clientConnections,
    dns: {
      servers: c.dns.map((d) => d.label),
      transport: c.dnsTransport,
      domain: c.domain,
      ttlFloorMs: c.ttlFloorMs,
      ttlCeilingMs: c.ttlCeilingMs,
      staleIfErrorMs: c.staleIfErrorMs,
    },
    balancer: c.balancer,
    passiveHealth: { maxFails: c.maxFails, failWindowMs: c.failWindowMs, ejectForMs: c.ejectForMs },
    routes: c.routes.map((r) => r.source),
    hostRouting: c.hostRouting
      ? {
          domain: c.domain,
          allowServices: c.allowServices.length ? c.allowServices : 'any',
          consulServiceReachable: c.allowConsulService,
        }
      : false,
    services,
  }
}

const SOURCE_MEANING: Record<string, string> = {
  fresh: 'current answer from Consul DNS',
  stale: 'Consul DNS is failing; serving the last good answer (stale-if-error)',
  negative: 'Consul answered NXDOMAIN or no records: unknown service, or no passing instance',
  none: 'no usable answer (never resolved, or the stale window ran out)',
}
