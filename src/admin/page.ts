import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'

/** A response prepared once: the page does not change while the process runs. */
export interface StaticPage {
  readonly headers: Record<string, string>
  readonly body: Buffer
}

const ASSETS = new URL('./assets/', import.meta.url)

function asset(name: string): string {
  return readFileSync(new URL(name, ASSETS), 'utf8')
}

function sha256(text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`
}

let page: StaticPage | null = null

/**
 * The status page: one HTML document with its script and style inline (src/admin/assets/status.{html,css,js}), so it
 * works offline and loads nothing from anywhere. The Content-Security-Policy allows exactly those two inline blocks
 * (by hash), connections to this listener only, and nothing else: no other script, frame, form target or base URL,
 * which also keeps text that Consul, Docker or a client controls (service names, error messages) from ever running.
 */
export function statusPage(): StaticPage {
  if (page !== null) return page
  const script = asset('status.js')
  const style = asset('status.css')
  const html = asset('status.html')
    .replace('/*STYLE*/', () => style)
    .replace('/*SCRIPT*/', () => script)
  const csp = [
    "default-src 'none'",
    `script-src ${sha256(script)}`,
    `style-src ${sha256(style)}`,
    "connect-src 'self'",
    // The favicon is a data: URL in the page, so the browser asks for no /favicon.ico.
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ')
  const body = Buffer.from(html, 'utf8')
  page = {
    body,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-length': String(body.length),
      'content-security-policy': csp,
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    },
  }
  return page
}
