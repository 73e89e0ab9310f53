import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type BrowserContext, chromium, type Page } from 'playwright-core'

/** Debian's chromium (scripts/setup.sh installs it); playwright-core never downloads a browser. */
export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium'

/**
 * Flags for headless Chromium as root on a machine with no GPU and no network but loopback: no sandbox (root), no
 * QUIC, no first-run, background networking, component updates or sync (Chromium would call home otherwise).
 */
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export interface BrowserTab {
  page: Page
  context: BrowserContext
  /** Console messages of level error, and uncaught page errors, as text. */
  errors: string[]
  /** Every URL the page (and anything it started) asked for. */
  requests: string[]
}

/**
 * A fresh headless Chromium (own --user-data-dir) with one tab; closed and its folder removed in teardown, even when
 * the test fails. `viewport` defaults to a laptop screen. `resolve` maps host names to addresses inside this browser
 * only (Chromium's --host-resolver-rules), e.g. a name that a DNS-rebinding attacker pointed at 127.0.0.1.
 */
export async function openTab(
  t: { teardown(fn: () => unknown): void },
  viewport: { width: number; height: number } = { width: 1280, height: 900 },
  resolve: Record<string, string> = {},
): Promise<BrowserTab> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: scripts/setup.sh installs Debian's chromium`)
  const rules = Object.entries(resolve).map(([name, address]) => `MAP ${name} ${address}`)
  const dir = mkdtempSync(join(tmpdir(), 'consul-lb-chromium-'))
  let context: BrowserContext
  try {
    context = await chromium.launchPersistentContext(dir, {
      executablePath: CHROMIUM,
      headless: true,
      args: rules.length ? [...FLAGS, `--host-resolver-rules=${rules.join(', ')}`] : FLAGS,
      viewport,
    })
  } catch (err) {
    rmSync(dir, { recursive: true, force: true })
    throw err
  }
  t.teardown(async () => {
    await context.close().catch(() => {
      /* the browser is gone already; its folder is removed below either way */
    })
    rmSync(dir, { recursive: true, force: true })
  })
  const errors: string[] = []
  const requests: string[] = []
  context.on('request', (r) => {
    requests.push(r.url())
  })
  const page = context.pages()[0] ?? (await context.newPage())
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`)
  })
  page.on('pageerror', (err) => {
    errors.push(`page error: ${err.message}`)
  })
  return { page, context, errors, requests }
}

/**
 * Waits until `check` returns a value that is not null/false, polling every 100 ms, or fails after `timeoutMs` with
 * the last value it saw. For assertions on a live page: "within two seconds" is a deadline, not a sleep.
 */
export async function until<T>(
  what: string,
  check: () => Promise<T | null | false>,
  timeoutMs: number,
): Promise<{ value: T; afterMs: number }> {
  const start = Date.now()
  let last: unknown = null
  while (true) {
    const v = await check()
    if (v !== null && v !== false) return { value: v, afterMs: Date.now() - start }
    last = v
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${String(last)})`)
    await new Promise((r) => setTimeout(r, 100))
  }
}
