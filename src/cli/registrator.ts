import { Command } from 'commander'

// Placeholder until the registrator lands (issue 3).
export function registratorCommand(): Command {
  return new Command('registrator').description('register Docker containers as Consul services (not built yet)')
}
