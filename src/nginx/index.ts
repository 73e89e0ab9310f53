/**
 * The nginx emitter as a function API (the CLI is a thin layer over it): render routes or Consul services into nginx
 * config text, check it with `nginx -t`, and follow Consul's catalog.
 */

export { type CheckResult, checkNginxConfig, consulTruncateEnabled, TRUNCATE_WARNING } from './check.js'
export {
  createCatalogWatcher,
  type EmitResult,
  emitNginxConfig,
  renderOptionsFrom,
  resolveNginxVersion,
} from './emit.js'
export { NginxError, type NginxErrorCode } from './errors.js'
export {
  assertNginxSupports,
  type FullConfigExtras,
  type NginxMode,
  type RenderOptions,
  renderNginxConfig,
  renderNginxHttp,
  wrapFullConfig,
} from './render.js'
export { assertRouteSafe, type CatalogSelection, selectCatalogServices } from './validate.js'
export {
  detectNginxVersion,
  type NginxVersion,
  parseNginxVersion,
  supportsUpstreamResolve,
  UPSTREAM_RESOLVE_SINCE,
} from './version.js'
export { CatalogWatcher, type CatalogWatcherOptions, type WatchEvent } from './watch.js'
