import t from 'tap'
import { prefixMatches, Router } from '../src/proxy/router.js'
import { parseRoute, type Route } from '../src/routes/route.js'

/**
 * Routing with thousands of routes: the indexed router answers exactly what a scan of every route in specificity
 * order answers (longest prefix, the host's own route before a host-less one, then the order given).
 */

function naive(routes: Route[], host: string, url: string): string | null {
  const own = routes.filter((r) => r.host === host)
  const wild = routes
    .filter((r) => r.host?.startsWith('*.') && host.length > r.host.length - 1 && host.endsWith(r.host.slice(1)))
    .sort((a, b) => b.host!.length - a.host!.length)
  const hostRoutes = own.length > 0 ? own : wild.length > 0 ? routes.filter((r) => r.host === wild[0]!.host) : []
  const list = [...hostRoutes, ...routes.filter((r) => r.host === null)]
  const sorted = list
    .map((r, i) => ({ r, i }))
    .sort(
      (a, b) =>
        b.r.pathPrefix.length - a.r.pathPrefix.length ||
        (a.r.host === null ? 1 : 0) - (b.r.host === null ? 1 : 0) ||
        a.i - b.i,
    )
  return sorted.find(({ r }) => prefixMatches(url, r.pathPrefix))?.r.service ?? null
}

t.test('5 000 routes: the first-segment index answers as a full scan would', async (t) => {
  const texts: string[] = [
    '/=root',
    'shop.example.com/cart=cart',
    '*.apps.example.com=apps',
    '*.apps.example.com/v2=appsv2',
  ]
  for (let i = 0; i < 2500; i++) texts.push(`/s${i}=s${i}`, `/s${i}/deep/${i % 7}=d${i}`)
  for (let i = 0; i < 50; i++) texts.push(`h${i}.example.com=h${i}`, `h${i}.example.com/s${i}=hs${i}`)
  const routes = texts.map((r) => parseRoute(r))
  const router = new Router(
    routes.map((route) => ({ route, target: route.service })),
    { enabled: false, domain: 'consul', allowServices: [], allowConsulService: false },
  )
  const hosts = ['shop.example.com', 'x.apps.example.com', 'h3.example.com', 'h49.example.com', 'other.example.com']
  const urls = [
    '/',
    '/s1',
    '/s1/',
    '/s1x',
    '/s1?q',
    '/s12/deep/5',
    '/s12/deep/5/more',
    '/s12/deep/6',
    '/cart',
    '/cart/1',
    '/v2/a',
    '/s3',
    '/s49?x=1',
    '/nothing',
  ]
  let checked = 0
  for (const host of hosts)
    for (const url of urls) {
      t.equal(router.matchRoute(host, url)?.target ?? null, naive(routes, host, url), `${host} ${url}`)
      checked++
    }
  t.equal(checked, hosts.length * urls.length)
})
