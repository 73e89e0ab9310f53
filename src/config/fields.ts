import { isIP } from 'node:net'
import { z } from 'zod'

/**
 * The one description of every setting: its key in a config file, its `--flag`, its `CONSUL_LB_*` env var, its type,
 * default and help text. The CLI's options, the env reader, the file validator and the README's config reference are
 * all derived from these tables, so they cannot drift apart.
 *
 * Kinds: values from flags and env arrive as strings and are coerced; values from a YAML/JSON file arrive typed.
 */
export type FieldKind = 'string' | 'int' | 'bool' | 'list' | 'enum' | 'hostport' | 'routes' | 'url'

export interface FieldSpec {
  /** camelCase key in a config file; the flag is its kebab-case form, the env var CONSUL_LB_ + UPPER_SNAKE. */
  readonly key: string
  readonly kind: FieldKind
  readonly default: unknown
  readonly help: string
  readonly values?: readonly string[]
  readonly min?: number
  readonly max?: number
  /** Placeholder shown in --help (`<host:port>`). */
  readonly arg?: string
  /** Extra env var names read before CONSUL_LB_* (for example DOCKER_HOST, CONSUL_HTTP_TOKEN). */
  readonly envAliases?: readonly string[]
  /** Hidden from --help and the reference (internal knobs for tests). */
  readonly hidden?: boolean
  /** Do not print the value in logs or /status (tokens). */
  readonly secret?: boolean
}

export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
}

export function envName(key: string): string {
  return `CONSUL_LB_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`
}

const HOSTPORT = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+|[0-9.]+):(\d{1,5})$/

/** Builds the zod schema that checks (and for strings, coerces) one field's raw value. */
export function fieldSchema(f: FieldSpec): z.ZodType<unknown> {
  switch (f.kind) {
    case 'string':
      return z.string().min(1, 'must not be empty')
    case 'url':
      return z.string().refine((s) => {
        try {
          const u = new URL(s)
          return ['http:', 'https:', 'unix:'].includes(u.protocol)
        } catch {
          return false
        }
      }, 'expected a URL such as http://127.0.0.1:8500 or unix:///var/run/docker.sock')
    case 'int': {
      // Flags and env arrive as strings; a file may hold a number. One schema, so errors say what was expected.
      let n = z.number({ message: 'expected an integer' }).int('expected an integer')
      if (f.min !== undefined) n = n.min(f.min, `expected an integer >= ${f.min}`)
      if (f.max !== undefined) n = n.max(f.max, `expected an integer <= ${f.max}`)
      return z.preprocess((v) => (typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v), n)
    }
    case 'bool':
      return z.preprocess(
        (v) => {
          if (typeof v !== 'string') return v
          // Go's strconv.ParseBool spellings too (t, F, TRUE…): Consul's and Docker's variables are written for it.
          const s = v.trim().toLowerCase()
          return ['true', 't', '1', 'yes', 'on'].includes(s)
            ? true
            : ['false', 'f', '0', 'no', 'off'].includes(s)
              ? false
              : v
        },
        z.boolean({ message: 'expected true or false' }),
      )
    case 'enum':
      return z.enum(f.values as [string, ...string[]], { message: `expected one of ${f.values!.join(', ')}` })
    case 'hostport':
      return z
        .string()
        .refine(
          (s) => portOf(s) !== null,
          'expected HOST:PORT with a port 0-65535 (0: any free port; for example 127.0.0.1:8080 or [::1]:8080)',
        )
    case 'list':
      return z.preprocess(
        (v) => (typeof v === 'string' ? splitList(v) : v),
        z.array(z.string({ message: 'list items must be strings' }).min(1, 'list items must not be empty'), {
          message: 'expected a list (a YAML/JSON array, or a comma-separated string)',
        }),
      )
    case 'routes':
      // Route text is parsed by routes/route.ts, which names the bad route; here only the container shape is checked.
      return z.preprocess(
        (v) =>
          typeof v === 'string'
            ? v
                .split(/[;\n]/)
                .map((x) => x.trim())
                .filter(Boolean)
            : v,
        z.array(z.union([z.string(), z.record(z.string(), z.unknown())]), { message: 'expected a list of routes' }),
      )
  }
}

/**
 * A comma-separated flag or env value → items. A comma escaped as `\,` or inside a Go template action (`{{…}}`)
 * does not split: both belong to the item (a tag such as `a\,b`, a template such as `{{join "," .Config.Env}}`).
 */
export function splitList(s: string): string[] {
  const items: string[] = []
  let cur = ''
  let depth = 0
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!
    if (c === '\\' && s[i + 1] === ',') {
      cur += '\\,'
      i++
      continue
    }
    if (s.startsWith('{{', i)) depth++
    else if (s.startsWith('}}', i) && depth > 0) depth--
    if (c === ',' && depth === 0) {
      items.push(cur)
      cur = ''
    } else {
      cur += c
    }
  }
  items.push(cur)
  return items.map((x) => x.trim()).filter((x) => x !== '')
}

function portOf(s: string): number | null {
  const m = HOSTPORT.exec(s)
  if (!m) return null
  // A dotted-number host must be a real IPv4 address (999.1.1.1 would only fail at bind time, as a DNS lookup).
  const host = s.slice(0, s.lastIndexOf(':'))
  if (/^[0-9.]+$/.test(host) && isIP(host) !== 4) return null
  const port = Number(m[1])
  return port >= 0 && port <= 65535 ? port : null
}

/** Splits `host:port` / `[v6]:port` (already validated). */
export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':')
  let host = s.slice(0, i)
  if (host.startsWith('[')) host = host.slice(1, -1)
  return { host, port: Number(s.slice(i + 1)) }
}
