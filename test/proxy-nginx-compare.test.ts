// The README's "where consul-lb differs from the RFCs and from nginx" table, as a test: the same raw requests, to the
// same scripted backend, through nginx 1.22, nginx 1.30 (configured as the WebSocket guides say) and consul-lb. Each
// outcome is the answers' status codes and the paths the backend received; a change in any column means the table
// (README, Security) needs a look.
import t from 'tap'
import { startConsul } from './helpers/consul.js'
import { scriptedService, startNodeEdge, statusesOf } from './helpers/edge.js'
import { startNginx } from './helpers/nginx.js'
import { answerEach, rawRequest, response } from './helpers/scripted-backend.js'

const ANSWERS: Record<string, string> = {
  '/public/resp/conn2':
    'HTTP/1.1 200 OK\r\nConnection: x-a\r\nX-A: 1\r\nConnection: x-b\r\nX-B: 2\r\nContent-Length: 2\r\n\r\nok',
  '/public/resp/barelf': 'HTTP/1.1 200 OK\nContent-Length: 2\n\nok',
  '/public/resp/100': `HTTP/1.1 100 Continue\r\n\r\n${response('200 OK', 'ok')}`,
  '/public/resp/103': `HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n${response('200 OK', 'ok')}`,
  '/public/resp/twocl': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!',
}
const H = 'Host: raw.local\r\n'
const C = 'Connection: close\r\n'

/** case, request bytes, and the outcome through nginx 1.22, nginx 1.30 and consul-lb: `statuses →[paths seen]`. */
const CASES: [string, string, string, string, string][] = [
  ['dot segments', `GET /public/../flag HTTP/1.1\r\n${H}${C}\r\n`, '404 →[]', '404 →[]', '404 →[]'],
  ['%2e%2e', `GET /public/%2e%2e/flag HTTP/1.1\r\n${H}${C}\r\n`, '404 →[]', '404 →[]', '404 →[]'],
  ['..%2F', `GET /public/..%2Fflag HTTP/1.1\r\n${H}${C}\r\n`, '404 →[]', '404 →[]', '400 →[]'],
  [
    '..;/',
    `GET /public/..;/flag HTTP/1.1\r\n${H}${C}\r\n`,
    '200 →[/public/..;/flag]',
    '200 →[/public/..;/flag]',
    '400 →[]',
  ],
  [
    'backslash',
    `GET /public\\..\\flag HTTP/1.1\r\n${H}${C}\r\n`,
    '200 →[/public\\..\\flag]',
    '200 →[/public\\..\\flag]',
    '400 →[]',
  ],
  [
    'leading //',
    `GET //public/x HTTP/1.1\r\n${H}${C}\r\n`,
    '200 →[//public/x]',
    '200 →[//public/x]',
    '200 →[/public/x]',
  ],
  [
    'CL and TE',
    `POST /public/x HTTP/1.1\r\n${H}${C}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    '400 →[]',
    '400 →[]',
    '400 →[]',
  ],
  [
    'two CL',
    `POST /public/x HTTP/1.1\r\n${H}${C}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab`,
    '400 →[]',
    '400 →[]',
    '400 →[]',
  ],
  [
    'bare LF',
    `GET /public/x HTTP/1.1\n${H.trim()}\n${C.trim()}\n\n`,
    '200 →[/public/x]',
    '200 →[/public/x]',
    '400 →[]',
  ],
  [
    'gzip, chunked',
    `POST /public/x HTTP/1.1\r\n${H}${C}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`,
    '501 →[]',
    '501 →[]',
    '501 →[]',
  ],
  [
    'chunked HTTP/1.0',
    `POST /public/x HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    '400 →[]',
    '400 →[]',
    '400 →[]',
  ],
  ['two Host', `GET /public/x HTTP/1.1\r\n${H}${H}${C}\r\n`, '400 →[]', '400 →[]', '400 →[]'],
  ['HTTP/0.9', 'GET /public/x\r\n\r\n', ' →[/public/x]', ' →[/public/x]', '505 →[]'],
  ['TRACE', `TRACE /public/x HTTP/1.1\r\n${H}${C}\r\n`, '405 →[]', '405 →[]', '501 →[]'],
  ['method FOO', `FOO /public/x HTTP/1.1\r\n${H}${C}\r\n`, '200 →[/public/x]', '200 →[/public/x]', '400 →[]'],
  ['CONNECT', `CONNECT raw.local:443 HTTP/1.1\r\n${H}\r\n`, '400 →[]', '405 →[]', '501 →[]'],
  [
    'absolute form',
    `GET http://raw.local/public/x HTTP/1.1\r\nHost: q\r\n${C}\r\n`,
    '200 →[/public/x]',
    '200 →[/public/x]',
    '200 →[/public/x]',
  ],
  [
    'h2c then /flag',
    `GET /public/x HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: h2c\r\n\r\nGET /flag HTTP/1.1\r\n${H}${C}\r\n`,
    '200,404 →[/public/x]',
    '200,404 →[/public/x]',
    '200 →[/public/x]',
  ],
  [
    'good, then Invalid',
    `GET /public/x HTTP/1.1\r\n${H}\r\nInvalid\r\n\r\n`,
    '200,400 →[/public/x]',
    '200,400 →[/public/x]',
    '200,400 →[/public/x]',
  ],
  [
    'two Connection fields (response)',
    `GET /public/resp/conn2 HTTP/1.1\r\n${H}${C}\r\n`,
    '200 X-A/B →[/public/resp/conn2]',
    '200 X-A/B →[/public/resp/conn2]',
    '200 →[/public/resp/conn2]',
  ],
  [
    'bare LF (response)',
    `GET /public/resp/barelf HTTP/1.1\r\n${H}${C}\r\n`,
    '200 →[/public/resp/barelf]',
    '200 →[/public/resp/barelf]',
    '502 →[/public/resp/barelf]',
  ],
  [
    'unsolicited 100 (response)',
    `GET /public/resp/100 HTTP/1.1\r\n${H}${C}\r\n`,
    ' →[/public/resp/100]',
    ' →[/public/resp/100]',
    '502 →[/public/resp/100]',
  ],
  [
    '103 Early Hints',
    `GET /public/resp/103 HTTP/1.1\r\n${H}${C}\r\n`,
    ' →[/public/resp/103]',
    '200 →[/public/resp/103]',
    '103,200 →[/public/resp/103]',
  ],
  [
    'two CL (response)',
    `GET /public/resp/twocl HTTP/1.1\r\n${H}${C}\r\n`,
    '200 →[/public/resp/twocl]',
    '502 →[/public/resp/twocl]',
    '502 →[/public/resp/twocl]',
  ],
]

t.test('the same hostile requests through nginx 1.22, nginx 1.30 and consul-lb', async (t) => {
  const consul = await startConsul(t)
  const b = await scriptedService(
    t,
    consul,
    'raw',
    answerEach((r) => ANSWERS[r.target] ?? response('200 OK', 'ok')),
  )
  const lb = await startNodeEdge(t, consul, { routes: ['raw.local/public=raw'], hostRouting: false })
  const site = (port: number): string =>
    `server { listen 127.0.0.1:${port}; server_name raw.local;
      location /public { proxy_pass http://127.0.0.1:${b.port}; proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $http_connection; } }\n`
  const proxies = [
    ['nginx 1.22', (await startNginx(t, '1.22', site)).port],
    ['nginx 1.30', (await startNginx(t, '1.30', site)).port],
    ['consul-lb', lb.port],
  ] as const
  for (const [name, bytes, ...expected] of CASES) {
    for (let i = 0; i < proxies.length; i++) {
      const [who, port] = proxies[i]!
      const before = b.requestLines().length
      // nginx may hold a connection it does not know how to answer: what it sent within the time is its answer.
      const r = await rawRequest(port, bytes, 1500)
      const seen = b
        .requestLines()
        .slice(before)
        .map((l) => l.split(' ')[1])
        .join(',')
      const extra = /\r\nx-a: |\r\nx-b: /i.test(r.text) ? ' X-A/B' : ''
      t.equal(`${statusesOf(r.text).join(',')}${extra} →[${seen}]`, expected[i], `${name}: ${who}`)
    }
  }
})
