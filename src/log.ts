import { type LevelWithSilent, type Logger, pino } from 'pino'

export type { Logger }

/**
 * The root logger. JSON to stdout (pino's default); modules take a child logger (`log.child({ module: 'resolver' })`)
 * and never create their own. The level is set once, here, at startup.
 */
export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    destination ?? process.stdout,
  )
}

/** A logger that writes nothing: for embedding and tests that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' })
}
