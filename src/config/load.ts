import { readFileSync } from 'node:fs'
import { ConfigError } from '../errors.js'
import { yaml } from '../lazy.js'
import { envName, type FieldSpec, fieldSchema, flagName } from './fields.js'

/**
 * CONSUL_LB_* variables that are not settings: the scripts' cache folder, the cluster primary's hand-off, the V8
 * options of the launcher (bin/consul-lb) and the user the image's entrypoint runs as. The process inherits the
 * last two, so they must not read as misspelt settings.
 */
const NON_SETTING_ENV: ReadonlySet<string> = new Set([
  'CONSUL_LB_CACHE',
  'CONSUL_LB_WORKER_CONFIG',
  'CONSUL_LB_NODE_OPTIONS',
  'CONSUL_LB_USER',
])

export interface ConfigSources {
  /** Values given on the command line, keyed by field key; undefined means "not given". */
  flags?: Record<string, unknown>
  /** Environment (process.env in the CLI). */
  env?: NodeJS.ProcessEnv
  /** Path of a YAML or JSON config file (`--config`). */
  file?: string
  /** An already-parsed config object (embedding API); checked like a file. */
  object?: Record<string, unknown>
}

/** Reads and parses a YAML/JSON config file into an object; errors name the file. */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${path}: ${(err as Error).message}`)
  }
  let data: unknown
  try {
    data = path.endsWith('.json') ? JSON.parse(text) : yaml().parse(text)
  } catch (err) {
    throw new ConfigError(
      '--config',
      `${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`,
    )
  }
  if (data === null || data === undefined) return {}
  if (typeof data !== 'object' || Array.isArray(data))
    throw new ConfigError('--config', `${path} must hold a mapping of settings at the top level`)
  return data as Record<string, unknown>
}

/**
 * Merges defaults < config file < environment < flags for the given fields and validates each value where it came
 * from, so an error names the flag, the env var or the file key the user actually wrote. Unknown keys in a file are
 * rejected (a typo must not silently fall back to a default); keys that belong to other subcommands' tables are passed
 * in `knownElsewhere` and ignored.
 */
export function loadFields(
  fields: readonly FieldSpec[],
  sources: ConfigSources,
  knownElsewhere: readonly string[] = [],
): Record<string, unknown> {
  const fileData = sources.object ?? (sources.file ? readConfigFile(sources.file) : {})
  const fileLabel = sources.file ? `${sources.file}: ` : 'config: '
  const known = new Set([...fields.map((f) => f.key), ...knownElsewhere])
  for (const key of Object.keys(fileData)) {
    if (!known.has(key)) {
      const hint = nearest(key, [...known])
      throw new ConfigError(`${fileLabel}${key}`, `unknown setting${hint ? `; did you mean "${hint}"?` : ''}`)
    }
  }
  const env = sources.env ?? {}
  // A misspelt CONSUL_LB_* variable is as wrong as a misspelt file key: say so rather than run on a default.
  const knownEnv = new Map([...known].map((k) => [envName(k), k]))
  for (const name of Object.keys(env)) {
    if (!name.startsWith('CONSUL_LB_') || NON_SETTING_ENV.has(name) || knownEnv.has(name)) continue
    const hint = nearest(name, [...knownEnv.keys()])
    throw new ConfigError(`env ${name}`, `unknown setting${hint ? `; did you mean ${hint}?` : ''}`)
  }
  const out: Record<string, unknown> = {}
  for (const f of fields) {
    let raw: unknown = f.default
    let where = `default of ${f.key}`
    if (fileData[f.key] !== undefined) {
      raw = fileData[f.key]
      where = `${fileLabel}${f.key}`
    }
    for (const name of [...(f.envAliases ?? []), envName(f.key)]) {
      const v = env[name]
      if (v !== undefined && v !== '') {
        raw = v
        where = `env ${name}`
      }
    }
    const flag = sources.flags?.[f.key]
    if (flag !== undefined) {
      raw = flag
      where = `--${flagName(f.key)}`
    }
    if (raw === undefined || raw === null) {
      out[f.key] = raw
      continue
    }
    const parsed = fieldSchema(f).safeParse(raw)
    if (!parsed.success) {
      const shown = f.secret ? '<secret>' : JSON.stringify(raw)
      throw new ConfigError(where, `${parsed.error.issues[0]?.message ?? 'invalid value'} (got ${shown})`)
    }
    out[f.key] = parsed.data
  }
  return out
}

function nearest(key: string, candidates: string[]): string | null {
  let best: string | null = null
  let bestD = 3
  for (const c of candidates) {
    const d = distance(key.toLowerCase(), c.toLowerCase())
    if (d < bestD) {
      bestD = d
      best = c
    }
  }
  return best
}

function distance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!
    dp[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = tmp
    }
  }
  return dp[b.length]!
}
