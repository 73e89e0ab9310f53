import type { Registry } from 'prom-client'
import type { FieldSpec } from '../config/fields.js'
import { loadRegistratorConfig, REGISTRATOR_FIELDS } from '../config/registrator.js'
import type { Logger } from '../log.js'
import { Registrator } from '../registrator/index.js'

/** Registrator settings `serve --registrator` accepts as flags: all but its standalone admin listener. */
export const EMBEDDED_REGISTRATOR_FIELDS: readonly FieldSpec[] = REGISTRATOR_FIELDS.filter((f) => f.key !== 'admin')

export interface EmbeddedRegistrator {
  status(): unknown
  close(): Promise<void>
}

/** `serve --registrator`: the registrator in the proxy's process, its status and metrics on the proxy's admin. */
export async function startEmbeddedRegistrator(
  sources: { flags: Record<string, unknown>; file?: string | undefined },
  log: Logger,
  registry: Registry,
): Promise<EmbeddedRegistrator> {
  const config = loadRegistratorConfig({
    flags: sources.flags,
    env: process.env,
    ...(sources.file ? { file: sources.file } : {}),
  })
  const r = new Registrator(config, { log, registry })
  await r.start()
  return r
}
