/**
 * Every failure the product reports carries a stable `code` (never match on message text), a short message, and where
 * it maps to an HTTP answer, the status the proxy sends. Modelled on undici's lib/core/errors.js and fastify's
 * lib/errors.js: one base class, one subclass per failure. Modules with many failures of their own (registrator,
 * nginx emitter) declare them in their own `errors.ts`, extending ConsulLbError.
 */
export class ConsulLbError extends Error {
  readonly code: string
  readonly statusCode: number
  constructor(code: string, message: string, statusCode = 500, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'ConsulLbError'
    this.code = code
    this.statusCode = statusCode
  }
}

/** Configuration rejected at the edge (exit code 2). `field` names the bad key, flag or env var. */
export class ConfigError extends ConsulLbError {
  readonly field: string
  constructor(field: string, message: string) {
    super('CLB_CONFIG_INVALID', `${field}: ${message}`, 500)
    this.name = 'ConfigError'
    this.field = field
  }
}

export class NoRouteError extends ConsulLbError {
  constructor(host: string, path: string) {
    super('CLB_NO_ROUTE', `no route matched host "${host}" path "${path}"`, 404)
    this.name = 'NoRouteError'
  }
}

export class NoHealthyInstanceError extends ConsulLbError {
  readonly service: string
  constructor(service: string, detail: string) {
    super('CLB_NO_HEALTHY_INSTANCE', `no healthy instance of ${service}${detail ? ` (${detail})` : ''}`, 503)
    this.name = 'NoHealthyInstanceError'
    this.service = service
  }
}

export class DnsTimeoutError extends ConsulLbError {
  constructor(server: string, name: string, timeoutMs: number) {
    super('CLB_DNS_TIMEOUT', `DNS query for ${name} to ${server} timed out after ${timeoutMs} ms`, 503)
    this.name = 'DnsTimeoutError'
  }
}

export class DnsError extends ConsulLbError {
  constructor(
    code: 'CLB_DNS_SERVFAIL' | 'CLB_DNS_MALFORMED' | 'CLB_DNS_UNREACHABLE' | 'CLB_DNS_REFUSED',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, 503, options)
    this.name = 'DnsError'
  }
}

export class UpstreamError extends ConsulLbError {
  constructor(
    code: 'CLB_UPSTREAM_FAILED' | 'CLB_UPSTREAM_TIMEOUT' | 'CLB_UPSTREAM_RESET' | 'CLB_UPSTREAM_REFUSED',
    message: string,
    statusCode: number,
    options?: { cause?: unknown },
  ) {
    super(code, message, statusCode, options)
    this.name = 'UpstreamError'
  }
}
