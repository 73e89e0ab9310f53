import type { IncomingMessage } from 'node:http'
import t from 'tap'
import { readHead, requestProblem } from '../src/proxy/request-head.js'

/** The parts of a request requestProblem reads, as Node's parser would have left them. */
function req(version: '1.0' | '1.1' | '0.9', raw: string[]): IncomingMessage {
  const [major, minor] = version.split('.').map(Number) as [number, number]
  return { httpVersion: version, httpVersionMajor: major, httpVersionMinor: minor, rawHeaders: raw } as IncomingMessage
}

const problem = (version: '1.0' | '1.1' | '0.9', raw: string[]): string | null => {
  const r = req(version, raw)
  return requestProblem(r, readHead(r))?.code ?? null
}

t.test('readHead: one pass over rawHeaders, repeated fields joined, Host counted', async (t) => {
  const h = readHead(
    req('1.1', [
      'host',
      'a',
      'Connection',
      'keep-alive',
      'CONNECTION',
      'x-a',
      'Transfer-Encoding',
      'chunked',
      'Host',
      'b',
    ]),
  )
  t.same(h, {
    host: 'a',
    hostCount: 2,
    contentLength: undefined,
    transferEncoding: 'chunked',
    connection: 'keep-alive, x-a',
    upgrade: undefined,
  })
})

t.test('requestProblem: Host, version and transfer codings (RFC 9112 §3.2, §6.1, §6.3)', async (t) => {
  t.equal(problem('1.1', ['Host', 'a']), null)
  t.equal(problem('1.0', []), null, 'HTTP/1.0 may omit Host')
  t.equal(problem('1.1', []), 'CLB_BAD_REQUEST', 'HTTP/1.1 must send Host')
  t.equal(problem('1.1', ['Host', 'a', 'Host', 'a']), 'CLB_BAD_REQUEST', 'even the same Host twice')
  t.equal(problem('1.1', ['Host', 'a/b']), 'CLB_BAD_REQUEST')
  t.equal(problem('0.9', []), 'CLB_HTTP_VERSION')
  t.equal(problem('1.1', ['Host', 'a', 'Transfer-Encoding', 'chunked']), null)
  t.equal(problem('1.1', ['Host', 'a', 'Transfer-Encoding', ' Chunked ']), null, 'case and spaces do not matter')
  t.equal(problem('1.1', ['Host', 'a', 'Transfer-Encoding', 'gzip, chunked']), 'CLB_NOT_IMPLEMENTED')
  t.equal(
    problem('1.1', ['Host', 'a', 'Transfer-Encoding', 'gzip', 'Transfer-Encoding', 'chunked']),
    'CLB_NOT_IMPLEMENTED',
  )
  t.equal(problem('1.1', ['Host', 'a', 'Transfer-Encoding', 'chunked, gzip']), 'CLB_BAD_REQUEST', 'chunked not last')
  t.equal(problem('1.1', ['Host', 'a', 'Transfer-Encoding', 'chunked, chunked']), 'CLB_BAD_REQUEST', 'chunked twice')
  t.equal(problem('1.1', ['Host', 'a', 'Transfer-Encoding', 'identity']), 'CLB_BAD_REQUEST')
  t.equal(problem('1.0', ['Host', 'a', 'Transfer-Encoding', 'chunked']), 'CLB_BAD_REQUEST', 'chunked in HTTP/1.0')
  const many = Array.from({ length: 2000 }, (_, i) => [`x${i}`, 'y']).flat()
  t.equal(problem('1.1', ['Host', 'a', ...many]), 'CLB_HEADERS_TOO_LARGE', 'as many fields as Node keeps: refused')
})
