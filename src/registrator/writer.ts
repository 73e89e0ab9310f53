import type { Logger } from '../log.js'
import { asRegistratorError, type RecentErrors } from './errors.js'
import type { RegistratorMetrics } from './metrics.js'

export type ConsulWriteOp = 'register' | 'deregister' | 'maintenance_on' | 'maintenance_off' | 'ttl'

/**
 * Every Consul write of the registrator goes through run(): logged, counted by operation and result, its failure
 * recorded for /status. It answers true or false instead of throwing, so one service Consul refuses does not stop the
 * writes for the others; callers count the false ones and fail their operation as a whole (retried later).
 */
export class ConsulWriter {
  constructor(
    private readonly log: Logger,
    private readonly metrics: RegistratorMetrics,
    private readonly errors: RecentErrors,
  ) {}

  async run(op: ConsulWriteOp, write: () => Promise<void>, fields: Record<string, unknown>): Promise<boolean> {
    try {
      await write()
      this.metrics.operations.inc({ op, result: 'ok' })
      // TTL refreshes run for every container on every tick: not worth an info line each.
      this.log[op === 'ttl' ? 'debug' : 'info'](fields, op)
      return true
    } catch (err) {
      const e = asRegistratorError(err)
      this.metrics.operations.inc({ op, result: e.code })
      this.errors.record(e)
      this.log.warn({ ...fields, code: e.code, err: e.message }, `${op} failed`)
      return false
    }
  }
}
