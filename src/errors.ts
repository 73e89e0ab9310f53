/**
 * Every failure the product reports carries a stable `code` (never match on message text), a short message, and where
 * it maps to an HTTP answer, the status the proxy sends. Modelled on undici's lib/core/errors.js and fastify's
 * lib/errors.js: one base class, one subclass per failure. Modules with many failures of their own (registrator,
 * nginx emitter) declare them in their own `errors.ts`, extending ConsulLbError.
 *
 * The proxy answers every refusal from one of these (src/proxy/answers.ts turns an error into status, headers and
 * body), so a code seen in `x-consul-lb-error`, a log line or /metrics always means the same thing.
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

/** 404: no configured route and no `<svc>.service.<domain>` Host. */
export class NoRouteError extends ConsulLbError {
  constructor(host: string, path: string) {
    super('CLB_NO_ROUTE', `no route matched host "${host}" path "${path}"`, 404)
    this.name = 'NoRouteError'
  }
}

/** 403: Host routing to a service outside allowServices, or to Consul's own `consul` service. */
export class ServiceNotAllowedError extends ConsulLbError {
  constructor(reason: string) {
    super('CLB_SERVICE_NOT_ALLOWED', reason, 403)
    this.name = 'ServiceNotAllowedError'
  }
}

/**
 * 503 with Retry-After: the service has no instance to try. `detail` says why in the proxy's terms (what Consul
 * DNS answered, or that every instance is at its cap); `explanation`, when an explainer knows more (why Consul lists
 * none), is one more sentence for the operator.
 */
export class NoHealthyInstanceError extends ConsulLbError {
  readonly service: string
  readonly detail: string
  readonly explanation: string | null
  constructor(service: string, detail: string, explanation: string | null = null) {
    super(
      'CLB_NO_HEALTHY_INSTANCE',
      `no healthy instance of ${service}${detail ? ` (${detail})` : ''}${explanation ? `: ${explanation}` : ''}`,
      503,
    )
    this.name = 'NoHealthyInstanceError'
    this.service = service
    this.detail = detail
    this.explanation = explanation
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

/** 502 (every attempt failed before a response) or 504 (no response headers in time). */
export class UpstreamError extends ConsulLbError {
  constructor(code: 'CLB_UPSTREAM_FAILED' | 'CLB_UPSTREAM_TIMEOUT', message: string, options?: { cause?: unknown }) {
    super(code, message, code === 'CLB_UPSTREAM_TIMEOUT' ? 504 : 502, options)
    this.name = 'UpstreamError'
  }
}

/** 413: the request body is over maxBodyBytes (declared, or counted while streaming a chunked body). */
export class BodyTooLargeError extends ConsulLbError {
  constructor(limit: number, declared?: string) {
    super(
      'CLB_BODY_TOO_LARGE',
      declared === undefined
        ? `request body larger than ${limit} bytes`
        : `request body of ${declared} bytes is over the ${limit}-byte limit`,
      413,
    )
    this.name = 'BodyTooLargeError'
  }
}

/**
 * What a client sent that HTTP does not allow or the proxy will not forward:
 * - `CLB_BAD_REQUEST` 400: malformed request line or headers, several Host fields, chunked HTTP/1.0 body;
 * - `CLB_BAD_PATH` 400: a request target that cannot be normalised into a path that stays inside its route;
 * - `CLB_HEADERS_TOO_LARGE` 431: header block over maxHeaderBytes;
 * - `CLB_CLIENT_TIMEOUT` 408: headers, body or a pause in the body took too long;
 * - `CLB_NOT_IMPLEMENTED` 501: a transfer coding other than chunked, CONNECT;
 * - `CLB_HTTP_VERSION` 505: not HTTP/1.x.
 */
export class ClientRequestError extends ConsulLbError {
  constructor(
    code:
      | 'CLB_BAD_REQUEST'
      | 'CLB_BAD_PATH'
      | 'CLB_HEADERS_TOO_LARGE'
      | 'CLB_CLIENT_TIMEOUT'
      | 'CLB_NOT_IMPLEMENTED'
      | 'CLB_HTTP_VERSION',
    message: string,
  ) {
    super(code, message, CLIENT_STATUS[code])
    this.name = 'ClientRequestError'
  }
}

const CLIENT_STATUS = {
  CLB_BAD_REQUEST: 400,
  CLB_BAD_PATH: 400,
  CLB_HEADERS_TOO_LARGE: 431,
  CLB_CLIENT_TIMEOUT: 408,
  CLB_NOT_IMPLEMENTED: 501,
  CLB_HTTP_VERSION: 505,
} as const
