import { createRequire } from 'node:module'
import { Command, CommanderError } from 'commander'
import { isGliderlabsSyntax } from '../config/gliderlabs.js'
import { ConfigError, ConsulLbError } from '../errors.js'
import { devCommand } from './dev.js'
import { doctorCommand } from './doctor.js'
import { nginxCommand } from './nginx.js'
import { registratorCommand, runGliderlabsCommandLine } from './registrator.js'
import { serveCommand } from './serve.js'

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
/** Bad flags, env or config: the message names the field. */
export const EXIT_CONFIG = 2

export function buildProgram(): Command {
  const program = new Command('consul-lb')
    .description(
      'HTTP load balancer for Consul services: resolves <service>.service.consul through Consul DNS, balances, retries;\nregisters Docker containers in Consul; emits nginx configs that follow Consul without reloads.',
    )
    .version(PACKAGE_VERSION, '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      "\ngliderlabs/registrator's command line works as is: consul-lb [registrator] -ip=10.0.0.5 consul://127.0.0.1:8500\n(consul-lb registrator -help lists its options).",
    )
    .exitOverride()
  program.addCommand(serveCommand())
  program.addCommand(registratorCommand())
  program.addCommand(nginxCommand())
  program.addCommand(doctorCommand())
  program.addCommand(devCommand())
  for (const c of program.commands) c.exitOverride()
  return program
}

// dist/cli/index.js and src/cli/index.ts both sit two folders below package.json.
const PACKAGE_VERSION = (createRequire(import.meta.url)('../../package.json') as { version: string }).version

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram()
  try {
    // gliderlabs/registrator's syntax (`-ip=…`, a consul:// URI) after `registrator`, or with no command at all.
    const args = argv.slice(2)
    const afterCommand = args[0] === 'registrator' ? args.slice(1) : args
    const isCommand = args[0] === 'help' || program.commands.some((c) => c.name() === args[0])
    if ((args[0] === 'registrator' || !isCommand) && isGliderlabsSyntax(afterCommand)) {
      await runGliderlabsCommandLine(afterCommand, PACKAGE_VERSION)
      return
    }
    await program.parseAsync(argv)
  } catch (err) {
    process.exitCode = exitCodeFor(err)
    if (err instanceof CommanderError) return // commander already printed its message
    if (err instanceof ConfigError) process.stderr.write(`consul-lb: invalid configuration: ${err.message}\n`)
    else if (err instanceof ConsulLbError) process.stderr.write(`consul-lb: ${err.code}: ${err.message}\n`)
    else process.stderr.write(`consul-lb: ${(err as Error)?.stack ?? String(err)}\n`)
  }
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')
      return EXIT_OK
    return EXIT_CONFIG
  }
  if (err instanceof ConfigError) return EXIT_CONFIG
  return EXIT_FAILURE
}
