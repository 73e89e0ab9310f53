/**
 * What a name may look like before it reaches a DNS query, a route table or an nginx config. These checks are the
 * project's injection barrier: the nginx emitter writes only names that pass them, so a service called
 * `x; } server { listen 80` can never become config text.
 */

/** Consul's DNS interface only answers for DNS-compatible service names: letters, digits and dashes (RFC 1123 label). */
const DNS_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/
/** Host names as they appear in a Host header or `server_name`, optionally with one leading `*.` wildcard. */
const HOST_NAME =
  /^(?:\*\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/
/** Path prefixes: unreserved characters, `%`-escapes and `/` only. No quotes, spaces, `;`, `{`, `$` (nginx syntax). */
const PATH_PREFIX = /^\/(?:[A-Za-z0-9._~\-/]|%[0-9A-Fa-f]{2})*$/

export function isServiceName(name: string): boolean {
  return DNS_LABEL.test(name)
}

/** Consul tags are free text, but only DNS-label tags can be asked for in `<tag>.<svc>.service.consul`. */
export function isDnsTag(tag: string): boolean {
  return DNS_LABEL.test(tag)
}

export function isDatacenterName(dc: string): boolean {
  return DNS_LABEL.test(dc)
}

export function isHostName(host: string): boolean {
  return host.length <= 253 && HOST_NAME.test(host)
}

export function isPathPrefix(path: string): boolean {
  return path.length <= 1024 && PATH_PREFIX.test(path)
}

/** The DNS domain Consul serves (`consul`, or `consul.example.com`): dotted DNS labels. */
export function isDomain(domain: string): boolean {
  return isHostName(domain) && !domain.startsWith('*')
}

export function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535
}
