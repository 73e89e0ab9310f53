import { readdirSync } from 'node:fs'
import type { Test } from 'tap'
import type { ConsulAgent } from './consul.js'
import { startTestProxy } from './proxy.js'
import { type Script, type ScriptedBackend, startScriptedBackend } from './scripted-backend.js'

/**
 * What the edge suites (test/helpers/edge-defects.ts, edge-hostile.ts) need of a running proxy, whatever its data
 * plane: where it listens, and the state that must come back to zero after every case. A data plane runs the same
 * suites by passing its own StartEdgeProxy (see test/proxy-defects.test.ts).
 */
export interface EdgeProxy {
  port: number
  adminPort: number | null
  /** Requests and tunnels holding an instance slot now (Upstream.inflight summed over every instance). */
  slotsInUse(): number
  /** Client connections the proxy holds open now. */
  clientConnections(): number
  /** Upgrades (pending or tunnelled) not finished. */
  openTunnels(): number
}

/** Starts a proxy against `consul` with the config-file `settings`; closed in teardown. */
export type StartEdgeProxy = (t: Test, consul: ConsulAgent, settings: Record<string, unknown>) => Promise<EdgeProxy>

/** The node:http data plane (src/proxy/proxy.ts). */
export const startNodeEdge: StartEdgeProxy = async (t, consul, settings) => {
  const p = await startTestProxy(t, consul, { dataPlane: 'classic', ...settings })
  return {
    port: p.port,
    adminPort: p.adminPort,
    slotsInUse: () => p.proxy.upstreams.slotsInUse(),
    clientConnections: () => p.proxy.clientConnections,
    openTunnels: () => p.proxy.openUpgrades,
  }
}

/** A scripted backend registered in Consul as `service` (no health check: passing). */
export async function scriptedService(
  t: Test,
  consul: ConsulAgent,
  service: string,
  script: Script,
): Promise<ScriptedBackend> {
  const b = await startScriptedBackend(t, script)
  await consul.register({ ID: `${service}-1`, Name: service, Address: b.host, Port: b.port })
  return b
}

/** Polls `cond` until it holds or `ms` pass; returns whether it held. */
export async function eventually(cond: () => boolean, ms = 3000, stepMs = 25): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() >= deadline) return cond()
    await new Promise((r) => setTimeout(r, stepMs))
  }
  return true
}

/** Every instance slot and tunnel the case used came back (the case's own assertion, with the counts). */
export async function assertSettled(t: Test, p: EdgeProxy, ms = 3000): Promise<void> {
  await eventually(() => p.slotsInUse() === 0 && p.openTunnels() === 0, ms)
  t.equal(p.slotsInUse(), 0, 'every instance slot returned')
  t.equal(p.openTunnels(), 0, 'no upgrade left open')
}

/** Open descriptors of this process (the proxy runs in it): sockets the proxy failed to release show up here. */
export function openDescriptors(): number {
  return readdirSync('/proc/self/fd').length
}

/** The header block of the first response in `text` as lower-cased name → value (several fields joined by ", "). */
export function headersOf(text: string): Record<string, string> {
  const end = text.indexOf('\r\n\r\n')
  const out: Record<string, string> = {}
  for (const line of text
    .slice(0, end === -1 ? text.length : end)
    .split('\r\n')
    .slice(1)) {
    const colon = line.indexOf(':')
    if (colon === -1) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    out[name] = out[name] === undefined ? value : `${out[name]}, ${value}`
  }
  return out
}

/** The status codes of every response in `text`, in order (1xx included; a body must not look like a status line). */
export function statusesOf(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]))
}

export const WS_UPGRADE = (path: string, host: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
  'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'
