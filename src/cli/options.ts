import { type Command, Option } from 'commander'
import { envName, type FieldSpec, flagName, splitList } from '../config/fields.js'

/** Adds one commander option per field, with the env var and default in the help text. No commander defaults: an
 * option that was not given stays undefined so that file and env values are not overridden. */
export function addFieldOptions(cmd: Command, fields: readonly FieldSpec[]): Command {
  for (const f of fields) {
    if (f.hidden) continue
    const flag = f.key === 'routes' ? 'route' : flagName(f.key)
    const env = envName(f.key)
    const envs = [...(f.envAliases ?? []), env].join(', ')
    const def = f.secret ? '' : ` [default: ${JSON.stringify(f.default)}]`
    const help = `${f.help} (env ${envs})${def}`
    if (f.kind === 'bool') {
      cmd.addOption(new Option(`--${flag}`, help))
      cmd.addOption(new Option(`--no-${flag}`).hideHelp())
    } else if (f.kind === 'routes' || f.kind === 'list') {
      cmd.addOption(
        new Option(`--${flag} ${f.arg ?? '<value>'}`, help).argParser((v: string, prev: string[] | undefined) => [
          ...(prev ?? []),
          ...(f.kind === 'list' ? splitList(v) : [v]),
        ]),
      )
    } else {
      const o = new Option(`--${flag} ${f.arg ?? '<value>'}`, help)
      if (f.kind === 'enum' && f.values) o.choices(f.values as string[])
      cmd.addOption(o)
    }
  }
  return cmd
}

/** The values the user gave on the command line, keyed by field key. */
export function flagsFrom(cmd: Command, fields: readonly FieldSpec[]): Record<string, unknown> {
  const opts = cmd.opts()
  const out: Record<string, unknown> = {}
  for (const f of fields) {
    const optKey = f.key === 'routes' ? 'route' : f.key
    if (cmd.getOptionValueSource(optKey) === 'cli') out[f.key] = opts[optKey]
  }
  return out
}
