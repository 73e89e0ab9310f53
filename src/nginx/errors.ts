import { ConsulLbError } from '../errors.js'

/**
 * Failures of the nginx emitter, each with a stable code (tests and logs match on the code, never the text).
 * statusCode is meaningless for a config generator; 500 keeps the base class's contract.
 */
export type NginxErrorCode =
  /** A service, tag, host, path or domain that is not a safe name would have reached the config text. */
  | 'CLB_NGINX_UNSAFE_NAME'
  /** The mode needs a newer nginx (`server … resolve` in an upstream: nginx 1.27.3 or nginx Plus). */
  | 'CLB_NGINX_VERSION_TOO_OLD'
  /** `nginx -v` printed something we cannot read, or --nginx-version is not a version. */
  | 'CLB_NGINX_VERSION_UNKNOWN'
  /** The resolver mode cannot learn ports (A records carry none) and the route names no fixed port. */
  | 'CLB_NGINX_NO_PORT'
  /** Nothing to emit: no routes (resolver/upstream) or no services (catalog). */
  | 'CLB_NGINX_NO_ROUTES'
  /** `nginx -t` rejected the output. */
  | 'CLB_NGINX_CHECK_FAILED'
  /** The nginx binary could not be run. */
  | 'CLB_NGINX_NOT_RUNNABLE'
  /** The reload command failed. */
  | 'CLB_NGINX_RELOAD_FAILED'
  /** Writing the output file failed. */
  | 'CLB_NGINX_WRITE_FAILED'

export class NginxError extends ConsulLbError {
  constructor(code: NginxErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, 500, options)
    this.name = 'NginxError'
  }
}
