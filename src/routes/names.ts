/**
 * What a name may look like before it reaches a DNS query, a route table or an nginx config. These checks are the
 * project's injection barrier: the nginx emitter writes only names that pass them, so a service called
 * `x; } server { listen 80` can never become config text.
 *
 * Consul's DNS interface answers for more than RFC 1123 labels: it logs "will not be discoverable via DNS" for
 * `zhibo_service`, yet answers `zhibo_service.service.consul` (checked against Consul 1.22.7), and people name
 * services that way (gliderlabs/registrator registers `my_app` from an image `my_app`). So a name here is a DNS label
 * that may also hold `_`, anywhere. Consul answers for `a$b`, `a~b`, `a*b` and `a%b` too, but those are nginx syntax
 * (variables, regex server names, wildcards, escapes) and stay refused; a dot would make Consul read a tag lookup.
 */

/** Letters, digits, `-` and `_`; at most 63 (one DNS label); no `-` first or last. */
const NAME_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/
const LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
/** Host names as they appear in a Host header or `server_name`, optionally with one leading `*.` wildcard. Labels may
 * hold `_` (nginx accepts it in Host and server_name) so that `<svc>.service.consul` works for every name above. */
const HOST_NAME = new RegExp(`^(?:\\*\\.)?(?:${LABEL}\\.)*${LABEL}$`)
/** Path prefixes: unreserved characters, `%`-escapes and `/` only. No quotes, spaces, `;`, `{`, `$` (nginx syntax). */
const PATH_PREFIX = /^\/(?:[A-Za-z0-9._~\-/]|%[0-9A-Fa-f]{2})*$/

/** A service name Consul's DNS answers for and that is safe as config text (see above). */
export function isServiceName(name: string): boolean {
  return NAME_LABEL.test(name)
}

/**
 * Consul tags are free text; only label-shaped ones can be asked for in `<tag>.<svc>.service.consul`, and not one that
 * starts with `_`: Consul reads `_a._b.service.consul` as RFC 2782's `_<service>._<protocol>`, service `a` with tag
 * `b` (and `_consul._tcp` as the `consul` service itself, its server RPC port), so a route or Host for tag `_a` of
 * service `_b` would reach another service than the one it names, past `allowServices` and the `consul` guard.
 */
export function isDnsTag(tag: string): boolean {
  return NAME_LABEL.test(tag) && !tag.startsWith('_')
}

export function isDatacenterName(dc: string): boolean {
  return NAME_LABEL.test(dc)
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

/** What the validators above accept, for error messages. */
export const NAME_RULE = 'letters, digits, dashes and underscores; at most 63; no dash first or last'
/** The same for tags, which also may not start with `_` (see isDnsTag). */
export const TAG_RULE = `${NAME_RULE}; no underscore first`
