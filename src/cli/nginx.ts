import { Command } from 'commander'
import type { LevelWithSilent } from 'pino'
import { CONSUL_FIELDS } from '../config/consul.js'
import { loadNginxConfig, NGINX_FIELDS } from '../config/nginx.js'
import { COMMON_FIELDS } from '../config/serve.js'
import { createLogger } from '../log.js'
import { createCatalogWatcher, emitNginxConfig } from '../nginx/index.js'
import { addFieldOptions, flagsFrom } from './options.js'

const FIELDS = [...COMMON_FIELDS, ...NGINX_FIELDS, ...CONSUL_FIELDS]

export function nginxCommand(): Command {
  const cmd = new Command('nginx').description(
    'emit nginx configuration that resolves Consul names at request time (same routes and --dns as serve)',
  )
  cmd.option('-c, --config <file>', 'YAML or JSON config file (may be shared with serve)')
  addFieldOptions(cmd, FIELDS)
  cmd.action(async () => {
    const cfg = loadNginxConfig({
      flags: flagsFrom(cmd, FIELDS),
      env: process.env,
      file: cmd.opts().config as string | undefined,
    })
    // With --out - the config goes to stdout, so the logs go to stderr.
    const log = createLogger(cfg.logLevel as LevelWithSilent, cfg.out === '-' ? process.stderr : process.stdout).child({
      module: 'nginx',
    })
    if (!cfg.watch) {
      await emitNginxConfig(cfg, log)
      return
    }
    const { watcher, client } = await createCatalogWatcher(cfg, log)
    const stopped = new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop)
        process.off('SIGTERM', stop)
        resolve()
      }
      process.on('SIGINT', stop)
      process.on('SIGTERM', stop)
    })
    watcher.start()
    log.info({ consul: cfg.consul.address, out: cfg.out }, 'watching the Consul catalog')
    await stopped
    await watcher.close()
    // An abandoned blocking query may still be open; destroy rather than wait for it.
    await client.destroy()
  })
  return cmd
}
