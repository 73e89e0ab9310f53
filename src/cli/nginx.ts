import { Command } from 'commander'

// Placeholder until the nginx emitter lands (issue 7).
export function nginxCommand(): Command {
  return new Command('nginx').description('emit nginx configs that resolve Consul names at request time (not built yet)')
}
