import { Command } from 'commander'
import { COMMON_FIELDS, SERVE_FIELDS } from '../config/serve.js'
import { addFieldOptions } from './options.js'

export function serveCommand(): Command {
  const cmd = new Command('serve').description('run the load balancer')
  cmd.option('-c, --config <file>', 'YAML or JSON config file')
  addFieldOptions(cmd, [...COMMON_FIELDS, ...SERVE_FIELDS])
  return cmd
}
