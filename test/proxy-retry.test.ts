import t from 'tap'
import { type FailedAttempt, isRetryable, RetryBudget } from '../src/proxy/retry.js'

const a = (o: Partial<FailedAttempt>): FailedAttempt => ({
  code: 'ECONNRESET',
  method: 'GET',
  hasBody: false,
  bodyStarted: false,
  attempts: 1,
  maxAttempts: 3,
  ...o,
})

t.test('retry rules: which errors, which methods, body read, attempts', async (t) => {
  t.ok(isRetryable(a({})), 'a reset GET')
  t.ok(isRetryable(a({ code: 'UND_ERR_HEADERS_TIMEOUT' })), 'a GET that timed out waiting for headers')
  t.notOk(isRetryable(a({ code: 'UND_ERR_BODY_TIMEOUT' })), 'a response under way is not retried')
  t.notOk(isRetryable(a({ code: 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' })), 'not an instance failure')
  t.notOk(isRetryable(a({ code: 'CLB_BODY_TOO_LARGE' })), "the client's fault")
  t.notOk(isRetryable(a({ attempts: 3 })), 'attempts used up')
  t.ok(isRetryable(a({ attempts: 2 })))
  t.ok(isRetryable(a({ method: 'POST', code: 'ECONNREFUSED', hasBody: true })), 'refused: never reached the instance')
  t.ok(isRetryable(a({ method: 'POST', code: 'UND_ERR_CONNECT_TIMEOUT', hasBody: true })))
  t.notOk(isRetryable(a({ method: 'POST', code: 'ECONNRESET', hasBody: true })), 'a POST with a body that may have run')
  t.ok(isRetryable(a({ method: 'POST', code: 'ECONNRESET' })), 'a body-less POST reset before any response byte')
  t.notOk(isRetryable(a({ method: 'POST', code: 'UND_ERR_HEADERS_TIMEOUT' })), 'a POST the instance is running')
  t.ok(isRetryable(a({ method: 'PUT', hasBody: true })), 'idempotent with a body nothing of which was read')
  t.notOk(isRetryable(a({ method: 'PUT', hasBody: true, bodyStarted: true })), 'a body already read cannot be replayed')
  t.notOk(isRetryable(a({ code: 'ECONNREFUSED', hasBody: true, bodyStarted: true })), 'even when refused')
})

t.test('retry budget: a share of requests in flight, with a floor; closed on shutdown', async (t) => {
  const b = new RetryBudget(20, 2)
  for (let i = 0; i < 20; i++) b.requestStarted()
  const taken = Array.from({ length: 6 }, () => b.tryRetry())
  t.same(taken, [true, true, true, true, false, false], '20 % of 20 requests: 4 retries')
  b.retryEnded()
  t.ok(b.tryRetry(), 'a slot freed is a slot again')
  t.equal(b.retriesInFlight, 4)
  for (let i = 0; i < 4; i++) b.retryEnded()
  for (let i = 0; i < 19; i++) b.requestEnded()
  t.equal(b.inFlight, 1)
  t.ok(b.tryRetry() && b.tryRetry(), 'the floor allows 2 whatever the share')
  t.notOk(b.tryRetry())
  b.retryEnded()
  b.retryEnded()
  const closed = b.close(5000)
  t.notOk(b.tryRetry(), 'nothing is retried while closing')
  b.requestEnded()
  await closed
  t.equal(b.inFlight, 0, 'close() resolved once the last request ended')
})

t.test('retry budget close() resolves after its deadline when requests stay in flight', async (t) => {
  const b = new RetryBudget(20, 2)
  b.requestStarted()
  const started = Date.now()
  await b.close(50)
  t.ok(Date.now() - started >= 45)
})
