import t from 'tap'
import {
  BodyTooLargeError,
  ClientRequestError,
  NoHealthyInstanceError,
  NoRouteError,
  ServiceNotAllowedError,
  UpstreamError,
} from '../src/errors.js'
import { answerBytes, errorAnswer } from '../src/proxy/answers.js'

const headersOf = (a: { headers: string[] }): Record<string, string> =>
  Object.fromEntries(Array.from({ length: a.headers.length / 2 }, (_, i) => [a.headers[2 * i]!, a.headers[2 * i + 1]!]))

t.test('each coded error becomes its status, code header and body', async (t) => {
  const cases: [Error & { code: string; statusCode: number }, number][] = [
    [new NoRouteError('h', '/p'), 404],
    [new ServiceNotAllowedError('no'), 403],
    [new NoHealthyInstanceError('svc', 'Consul lists no passing instance'), 503],
    [new UpstreamError('CLB_UPSTREAM_FAILED', 'x'), 502],
    [new UpstreamError('CLB_UPSTREAM_TIMEOUT', 'x'), 504],
    [new BodyTooLargeError(10, '20'), 413],
    [new ClientRequestError('CLB_BAD_PATH', 'x'), 400],
    [new ClientRequestError('CLB_HEADERS_TOO_LARGE', 'x'), 431],
    [new ClientRequestError('CLB_CLIENT_TIMEOUT', 'x'), 408],
    [new ClientRequestError('CLB_NOT_IMPLEMENTED', 'x'), 501],
    [new ClientRequestError('CLB_HTTP_VERSION', 'x'), 505],
  ]
  for (const [e, status] of cases) {
    const a = errorAnswer(e as never)
    t.equal(a.status, status, e.code)
    const h = headersOf(a)
    t.equal(h['x-consul-lb-error'], e.code)
    t.equal(Number(h['content-length']), Buffer.byteLength(a.body))
    t.match(a.body, new RegExp(`^${status} .*\\(${e.code}\\)\\n$`))
  }
})

t.test('503 carries Retry-After and the explainer sentence; JSON when asked; close when asked', async (t) => {
  const e = new NoHealthyInstanceError('web', 'Consul lists no passing instance', 'every check of web is critical')
  const a = errorAnswer(e, { json: true, retryAfterS: 2, close: true })
  t.same(JSON.parse(a.body), {
    error: 'no healthy instance of web (Consul lists no passing instance): every check of web is critical',
    code: 'CLB_NO_HEALTHY_INSTANCE',
    status: 503,
  })
  t.equal(headersOf(a)['retry-after'], '2')
  t.ok(a.close)
  t.equal(headersOf(a).connection, 'close')
  t.notOk('retry-after' in headersOf(errorAnswer(new NoRouteError('h', '/'), { retryAfterS: 2 })), 'only on 503')
  t.notOk('connection' in headersOf(errorAnswer(new NoRouteError('h', '/'))), 'keep-alive unless asked')
})

t.test('answerBytes writes an HTTP/1.1 response; HEAD without the body', async (t) => {
  const a = errorAnswer(new NoRouteError('h', '/x'), { close: true })
  const bytes = answerBytes(a)
  t.match(bytes, /^HTTP\/1\.1 404 Not Found\r\n/)
  t.match(bytes, /\r\nconnection: close\r\n\r\n404 no route matched host "h" path "\/x" \(CLB_NO_ROUTE\)\n$/)
  t.ok(answerBytes(a, true).endsWith('\r\n\r\n'))
})
