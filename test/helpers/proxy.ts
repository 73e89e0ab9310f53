import { type RunningProxy, startProxy } from '../../src/index.js'
import { createLogger, silentLogger } from '../../src/log.js'
import type { ConsulAgent } from './consul.js'

/** Starts a proxy on 127.0.0.1:0 (admin too) against a Consul agent; closed in teardown even if the test fails. */
export async function startTestProxy(
  t: { teardown(fn: () => unknown): void },
  consul: ConsulAgent | { dnsAddr: string },
  settings: Record<string, unknown> = {},
): Promise<RunningProxy> {
  const p = await startProxy(
    {
      listen: '127.0.0.1:0',
      admin: '127.0.0.1:0',
      dns: [consul.dnsAddr],
      ttlFloorMs: 1000,
      ...(testDataPlane() === undefined ? {} : { dataPlane: testDataPlane() }),
      ...settings,
    },
    { log: process.env.TEST_LOG ? createLogger('debug') : silentLogger() },
  )
  t.teardown(() => p.close())
  return p
}

/**
 * The data plane proxy tests run on: CONSUL_LB_DATA_PLANE (the product's own variable, so `consul-lb serve` processes
 * a test starts inherit it), set by the `*.classic.test.ts` files that run a proxy test file again on the classic
 * data plane; the default (pass-through) otherwise.
 */
export function testDataPlane(): string | undefined {
  return process.env.CONSUL_LB_DATA_PLANE
}
