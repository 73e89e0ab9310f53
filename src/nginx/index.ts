/**
 * The nginx emitter as a function API (the CLI is a thin layer over it): render routes or Consul services into nginx
 * config text, check it with `nginx -t`, and follow Consul's catalog.
 */
export { renderNginxConfig, renderNginxHttp, wrapFullConfig, assertNginxSupports, type NginxMode, type RenderOptions, type FullConfigExtras } from './render.js'
export { emitNginxConfig, createCatalogWatcher, resolveNginxVersion, renderOptionsFrom, type EmitResult } from './emit.js'
export { checkNginxConfig, consulTruncateEnabled, TRUNCATE_WARNING, type CheckResult } from './check.js'
export { CatalogWatcher, type CatalogWatcherOptions, type WatchEvent } from './watch.js'
export { parseNginxVersion, detectNginxVersion, supportsUpstreamResolve, UPSTREAM_RESOLVE_SINCE, type NginxVersion } from './version.js'
export { selectCatalogServices, assertRouteSafe, type CatalogSelection } from './validate.js'
export { NginxError, type NginxErrorCode } from './errors.js'
