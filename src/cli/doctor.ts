import { Command } from 'commander'
import type { LevelWithSilent } from 'pino'
import { DOCTOR_COMMAND_FIELDS, loadDoctorConfig } from '../config/doctor.js'
import { runDoctor } from '../doctor/doctor.js'
import { formatReport } from '../doctor/report.js'
import { createLogger } from '../log.js'
import { addFieldOptions, flagsFrom } from './options.js'

export function doctorCommand(): Command {
  const cmd = new Command('doctor')
    .description(
      'check a setup end to end (Consul API, TLS, token, ACLs, DNS over UDP and TCP, what DNS sees against the API, each route, nginx) and say how to fix each finding',
    )
    .option('-c, --config <file>', 'YAML or JSON config file (the one serve, registrator and nginx read)')
    .option('--json', 'print the findings as JSON: { ok, problems, findings: [{ check, severity, summary, fix }] }')
  addFieldOptions(cmd, DOCTOR_COMMAND_FIELDS)
  cmd.addHelpText(
    'after',
    `
Exit codes: 0 no problem found, 1 problems found (WARN or FAIL lines), 2 invalid flags/env/config.`,
  )
  cmd.action(async (opts: { config?: string; json?: boolean }) => {
    const cfg = loadDoctorConfig({
      flags: flagsFrom(cmd, DOCTOR_COMMAND_FIELDS),
      env: process.env,
      ...(opts.config ? { file: opts.config } : {}),
    })
    // stdout is the report; the few log lines (a certificate file re-read mid-run) go to stderr.
    const log = createLogger(cfg.logLevel as LevelWithSilent, process.stderr)
    // The DNS transports' timers are unref'd (they must not hold a proxy open): this holds the process meanwhile.
    const hold = setInterval(() => undefined, 1 << 30)
    const report = await runDoctor(cfg, log).finally(() => clearInterval(hold))
    process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report))
    // 0 and 1 as cli/index.ts's EXIT_OK and EXIT_FAILURE (not imported: index.ts imports this module).
    process.exitCode = report.ok ? 0 : 1
  })
  return cmd
}
