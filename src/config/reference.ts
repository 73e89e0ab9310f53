import { envName, type FieldSpec, flagName } from './fields.js'

/**
 * The config reference as a markdown table, from the same field tables that drive the flags, env vars and file
 * validation. `npm run docs` writes it into the README; a test fails when the README drifts from it.
 */
export function referenceTable(fields: readonly FieldSpec[]): string {
  const rows = ['| flag | env | file key | default | meaning |', '|---|---|---|---|---|']
  for (const f of fields) {
    if (f.hidden) continue
    const flag = f.key === 'routes' ? '--route' : `--${flagName(f.key)}`
    const env = [...(f.envAliases ?? []), envName(f.key)].map((e) => `\`${e}\``).join(', ')
    const def =
      f.secret || f.default === null || f.default === undefined
        ? ''
        : `\`${Array.isArray(f.default) ? (f.default.length ? f.default.join(',') : '') : String(f.default)}\``
    const values = f.values ? ` (${f.values.join(', ')})` : ''
    rows.push(`| \`${flag}\` | ${env} | \`${f.key}\` | ${def} | ${escapeCell(f.help)}${values} |`)
  }
  return rows.join('\n')
}

function escapeCell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`. */
export function replaceSection(doc: string, name: string, body: string): string {
  const start = `<!-- ${name}:start -->`
  const end = `<!-- ${name}:end -->`
  const i = doc.indexOf(start)
  const j = doc.indexOf(end)
  if (i === -1 || j === -1 || j < i) throw new Error(`README has no ${start} … ${end} section`)
  return `${doc.slice(0, i + start.length)}\n${body}\n${doc.slice(j)}`
}
