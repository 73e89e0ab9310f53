import { Command } from 'commander'

export function devCommand(): Command {
  return new Command('dev').description('demo: a Consul dev agent, three demo backends and the proxy on 8080')
}
