import { ConsulAclError } from '../consul/errors.js'
import type { ConsulLbError } from '../errors.js'
import type { Logger } from '../log.js'
import { asRegistratorError, type RecentErrors } from './errors.js'
import type { RegistratorMetrics } from './metrics.js'

export type ConsulWriteOp = 'register' | 'deregister' | 'maintenance_on' | 'maintenance_off' | 'ttl'

/** The last write Consul refused for want of an ACL permission, for /status (the token itself is never shown). */
export interface AclDenial {
  readonly at: string
  readonly op: ConsulWriteOp
  readonly operation: string
  readonly permission: string | null
  readonly message: string
  /** Denied writes since the last sync without one. */
  readonly count: number
}

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

  private denial: AclDenial | null = null

  /** The last ACL denial since clearAclDenial(); null when Consul refused nothing for want of a permission. */
  get aclDenial(): AclDenial | null {
    return this.denial
  }

  /** After a sync that wrote everything it had to: the token is good enough (again). */
  clearAclDenial(): void {
    this.denial = null
    this.metrics.aclDenied.set(0)
  }

  /** `onFailure` sees the coded error of a failed write (a caller that must tell an ACL denial from an outage). */
  async run(
    op: ConsulWriteOp,
    write: () => Promise<void>,
    fields: Record<string, unknown>,
    onFailure?: (e: ConsulLbError) => void,
  ): Promise<boolean> {
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
      if (e instanceof ConsulAclError) {
        this.denial = {
          at: new Date().toISOString(),
          op,
          operation: e.operation,
          permission: e.permission,
          message: e.message,
          count: (this.denial?.count ?? 0) + 1,
        }
        this.metrics.aclDenied.set(1)
      }
      onFailure?.(e)
      return false
    }
  }
}
