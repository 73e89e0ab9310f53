import { ConsulLbError } from '../errors.js'

export class ConsulApiError extends ConsulLbError {
  readonly httpStatus: number | null
  constructor(
    code: 'CLB_CONSUL_UNREACHABLE' | 'CLB_CONSUL_HTTP' | 'CLB_CONSUL_TIMEOUT' | 'CLB_CONSUL_BAD_RESPONSE',
    message: string,
    httpStatus: number | null,
    options?: { cause?: unknown },
  ) {
    super(code, message, 502, options)
    this.name = 'ConsulApiError'
    this.httpStatus = httpStatus
  }
}
