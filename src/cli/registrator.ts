import { Command } from 'commander'
import { Registry } from 'prom-client'
import { type AdminServer, startAdmin } from '../admin/server.js'
import { gliderlabsUsage, parseGliderlabsCommandLine } from '../config/gliderlabs.js'
import { loadRegistratorConfig, REGISTRATOR_COMMAND_FIELDS } from '../config/registrator.js'
import { createLogger, type Logger } from '../log.js'
import { Registrator } from '../registrator/index.js'
import { addFieldOptions, flagsFrom } from './options.js'

export function registratorCommand(): Command {
  const cmd = new Command('registrator')
    .description(
      'register Docker containers as Consul services (gliderlabs/registrator conventions: SERVICE_NAME, SERVICE_<port>_NAME, SERVICE_TAGS, SERVICE_CHECK_*, …)',
    )
    .option('-c, --config <file>', 'YAML or JSON config file')
  addFieldOptions(cmd, REGISTRATOR_COMMAND_FIELDS)
  cmd.addHelpText(
    'after',
    `\ngliderlabs/registrator's command line works too (consul-lb registrator -ip=10.0.0.5 -resync 30 consul://127.0.0.1:8500);\nrun \`consul-lb registrator -help\` for its options.`,
  )
  cmd.action(async () => {
    const configFile = cmd.opts().config as string | undefined
    const config = loadRegistratorConfig({
      flags: flagsFrom(cmd, REGISTRATOR_COMMAND_FIELDS),
      env: process.env,
      ...(configFile ? { file: configFile } : {}),
    })
    const log = createLogger(config.logLevel as 'info')
    await runRegistrator(config, log)
  })
  return cmd
}

/**
 * `consul-lb registrator [gliderlabs options] <registry URI>`, or the same after `consul-lb` alone (a
 * `docker run <image> …` line written for gliderlabs/registrator, with this image's entrypoint). `args` are the
 * arguments after the command.
 */
export async function runGliderlabsCommandLine(args: readonly string[], version: string): Promise<void> {
  const parsed = parseGliderlabsCommandLine(args, REGISTRATOR_COMMAND_FIELDS, process.env)
  if (parsed.help) {
    process.stdout.write(`${gliderlabsUsage()}\n`)
    return
  }
  if (parsed.version) {
    process.stdout.write(`${version}\n`)
    return
  }
  const config = loadRegistratorConfig({
    flags: parsed.flags,
    env: process.env,
    ...(parsed.configFile ? { file: parsed.configFile } : {}),
  })
  const log = createLogger(config.logLevel as 'info')
  log.info({ args }, 'gliderlabs/registrator command line')
  for (const note of parsed.notes) log.info(note)
  await runRegistrator(config, log)
}

/**
 * Runs until SIGTERM/SIGINT, then stops following Docker and exits 0. Registrations stay in Consul: a registrator
 * restart (an upgrade, a crash loop) must not make every service on the host flap; containers that died meanwhile are
 * removed by the next resync or by --cleanup at the next start.
 */
async function runRegistrator(config: ReturnType<typeof loadRegistratorConfig>, log: Logger): Promise<void> {
  const registry = new Registry()
  const registrator = new Registrator(config, { log, registry })
  let admin: AdminServer | null = null
  let stopping = false
  // The registrator's own timers are unref'd; this keeps the process alive until a signal, and is cleared on stop.
  const keepAlive = setInterval(() => undefined, 1 << 30)
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return
      stopping = true
      log.info({ signal }, 'stopping registrator (registrations are left in place)')
      void Promise.all([registrator.close(), admin?.close()]).finally(() => {
        clearInterval(keepAlive)
        process.off('SIGTERM', stop)
        process.off('SIGINT', stop)
        resolve()
      })
    }
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
  })
  try {
    if (config.admin)
      admin = await startAdmin({
        ...config.admin,
        log,
        registry,
        status: { registrator: () => registrator.status() },
        isHealthy: () => !stopping,
      })
    await registrator.start()
  } catch (err) {
    // SIGTERM while start() waited for Consul is a stop, not a failure: exit 0 like any other stop.
    if (stopping) {
      await stopped
      return
    }
    clearInterval(keepAlive)
    await Promise.all([registrator.close(), admin?.close()])
    throw err
  }
  log.info(
    { hostId: config.hostId, docker: config.dockerUrl, consul: config.consul.address, resyncS: config.resyncMs / 1000 },
    'registrator started',
  )
  await stopped
}
