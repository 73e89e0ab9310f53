import { mkdir } from 'node:fs/promises'
import type { NginxConfig } from '../config/nginx.js'
import { ConsulClient } from '../consul/client.js'
import type { Logger } from '../log.js'
import { checkNginxConfig, consulTruncateEnabled, TRUNCATE_WARNING } from './check.js'
import { NginxError } from './errors.js'
import { runReloadCommand, writeFileAtomically } from './output.js'
import {
  assertNginxSupports,
  needsUpstreamResolve,
  type RenderOptions,
  renderNginxHttp,
  wrapFullConfig,
} from './render.js'
import { selectCatalogServices } from './validate.js'
import { detectNginxVersion, type NginxVersion, parseNginxVersion } from './version.js'
import { CatalogWatcher } from './watch.js'

/**
 * --nginx-version when given, else `nginx -v` of --nginx-bin when it is installed, else null (no gating). Only the
 * modes that need `server … resolve` ask nginx: the resolver mode runs on every nginx, so an nginx whose -v we cannot
 * read (a fork, a wrapper) must not stop it.
 */
export async function resolveNginxVersion(
  cfg: Pick<NginxConfig, 'nginxVersion' | 'nginxBin' | 'mode' | 'catalogPort' | 'check'>,
): Promise<NginxVersion | null> {
  if (cfg.nginxVersion !== null) return parseNginxVersion(cfg.nginxVersion)
  // --check runs nginx anyway: its version is worth reporting (and gating) in every mode.
  if (!needsUpstreamResolve(cfg)) {
    if (!cfg.check) return null
    // The resolver style runs on every nginx: an -v we cannot read (a fork, a wrapper) is reported as unknown.
    return await detectNginxVersion(cfg.nginxBin).catch(() => null)
  }
  return await detectNginxVersion(cfg.nginxBin)
}

export function renderOptionsFrom(cfg: NginxConfig, nginxVersion: NginxVersion | null): RenderOptions {
  return {
    mode: cfg.mode,
    routes: cfg.routes,
    dns: cfg.dns,
    domain: cfg.domain,
    listen: cfg.listen,
    resolverValidS: cfg.resolverValidS,
    resolverTimeoutS: cfg.resolverTimeoutS,
    keepalive: cfg.keepalive,
    connectTimeoutS: cfg.proxyConnectTimeoutS,
    readTimeoutS: cfg.proxyReadTimeoutS,
    catalogPort: cfg.catalogPort,
    full: cfg.full,
    fullPrefix: cfg.fullPrefix,
    clientBodyBufferSize: cfg.clientBodyBufferSize,
    defaultServer: cfg.defaultServer,
    nginxVersion,
  }
}

export interface EmitResult {
  /** The text written (or printed). */
  text: string
  /** Catalog mode: the services written. */
  services: string[] | null
  /** Things the operator should fix, also logged (for example Consul without enable_truncate). */
  warnings: string[]
}

/** The render options for cfg, refused (CLB_NGINX_VERSION_TOO_OLD) before anything else when nginx cannot run the mode. */
async function supportedRenderOptions(cfg: NginxConfig): Promise<RenderOptions> {
  const opts = renderOptionsFrom(cfg, await resolveNginxVersion(cfg))
  assertNginxSupports(opts)
  return opts
}

function consulClientFor(cfg: NginxConfig): ConsulClient {
  return new ConsulClient({ connection: cfg.consul })
}

/**
 * One emission: (catalog mode) read the service list, render, (with check) run `nginx -t` and look for Consul's
 * enable_truncate, then write to cfg.out (stdout for "-"). Throws an NginxError with a stable code on refusal.
 */
export async function emitNginxConfig(
  cfg: NginxConfig,
  log: Logger,
  write: (text: string) => Promise<void> = defaultWriter(cfg, log),
): Promise<EmitResult> {
  const opts = await supportedRenderOptions(cfg)
  let services: string[] | null = null
  const client = cfg.mode === 'catalog' || cfg.check ? consulClientFor(cfg) : null
  try {
    if (cfg.mode === 'catalog') {
      const sel = selectCatalogServices((await client!.catalogServices()).value)
      for (const r of sel.rejected)
        log.error(
          { code: 'CLB_NGINX_UNSAFE_NAME', service: r.name },
          `Consul service name not written to the nginx config: ${r.reason}`,
        )
      services = sel.services
    }
    const body = renderNginxHttp(opts, services ?? undefined)
    const text = cfg.full ? wrapFullConfig(body, { prefixDir: cfg.fullPrefix }) : body
    const warnings: string[] = []
    if (cfg.check) {
      const res = await checkNginxConfig(body, cfg.nginxBin)
      if (!res.ok)
        throw new NginxError('CLB_NGINX_CHECK_FAILED', `nginx -t rejected the output; nothing written:\n${res.output}`)
      log.info({ nginx: opts.nginxVersion?.text ?? 'unknown' }, 'nginx -t accepted the output')
      warnings.push(...(await truncateWarnings(client!, log)))
    }
    await write(text)
    return { text, services, warnings }
  } finally {
    await client?.close()
  }
}

async function truncateWarnings(client: ConsulClient, log: Logger): Promise<string[]> {
  let enabled: boolean | null
  try {
    enabled = await consulTruncateEnabled(client)
  } catch (err) {
    // The probe is advice, not a gate: the config is valid either way. Say that we could not look, and why.
    log.info(
      { code: (err as { code?: string }).code, consul: client.address },
      `could not ask Consul whether enable_truncate is set: ${(err as Error).message}`,
    )
    return []
  }
  if (enabled !== false) return []
  log.warn({ code: 'CLB_NGINX_CONSUL_NO_TRUNCATE' }, TRUNCATE_WARNING)
  return [TRUNCATE_WARNING]
}

function defaultWriter(cfg: NginxConfig, log: Logger): (text: string) => Promise<void> {
  return async (text) => {
    await createFullPrefix(cfg, log)
    if (cfg.out !== '-') return writeFileAtomically(cfg.out, text)
    return new Promise((resolve, reject) => process.stdout.write(text, (err) => (err ? reject(err) : resolve())))
  }
}

/**
 * A whole nginx.conf names its pid file, logs and temp folders under --full-prefix, and nginx creates none of those
 * folders' parents: the prefix is made with the file, so that `nginx -c FILE` runs as is (also after `> FILE`). A user
 * who may not create it (a non-root user and the default under /var/lib) is told so, naming the setting: an error
 * when the file is written (nothing is written), a warning for stdout (the text may be meant for another machine).
 */
async function createFullPrefix(cfg: NginxConfig, log: Logger): Promise<void> {
  if (!cfg.full) return
  try {
    await mkdir(cfg.fullPrefix, { recursive: true })
  } catch (err) {
    const message = `cannot create --full-prefix ${cfg.fullPrefix} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): nginx would fail to open its pid file and logs there; give --full-prefix a folder this user may create (for a non-root user, one under its home)`
    if (cfg.out !== '-') throw new NginxError('CLB_NGINX_WRITE_FAILED', message, { cause: err })
    log.warn({ code: 'CLB_NGINX_WRITE_FAILED', fullPrefix: cfg.fullPrefix }, message)
  }
}

/**
 * `--watch`: a CatalogWatcher over cfg's Consul, rendering with cfg's settings, checking with `nginx -t` when
 * cfg.check, reloading with cfg.reloadCommand. The caller starts it and closes it (then closes the returned client).
 */
export async function createCatalogWatcher(
  cfg: NginxConfig,
  log: Logger,
  extra: { waitS?: number } = {},
): Promise<{ watcher: CatalogWatcher; client: ConsulClient }> {
  const opts = await supportedRenderOptions(cfg)
  await createFullPrefix(cfg, log)
  const client = consulClientFor(cfg)
  const reloadCommand = cfg.reloadCommand
  const watcher = new CatalogWatcher({
    client,
    render: (services) => {
      const body = renderNginxHttp(opts, services)
      return cfg.full ? wrapFullConfig(body, { prefixDir: cfg.fullPrefix }) : body
    },
    ...(cfg.check
      ? { check: (services: readonly string[]) => checkNginxConfig(renderNginxHttp(opts, services), cfg.nginxBin) }
      : {}),
    outPath: cfg.out,
    reload: reloadCommand === null ? null : () => runReloadCommand(reloadCommand),
    debounceMs: cfg.debounceMs,
    ...(extra.waitS !== undefined ? { waitS: extra.waitS } : {}),
    log: log.child({ module: 'nginx-watch' }),
  })
  return { watcher, client }
}
