import t from 'tap'
import type { HealthEntry } from '../src/consul/client.js'
import { explainEntries } from '../src/consul/explainer.js'

const key = { service: 'web', tag: null, datacenter: null }
function entry(id: string, checks: [string, string, string?][]): HealthEntry {
  return {
    Node: { Node: 'n1', Address: '10.0.0.1' },
    Service: { ID: id, Service: 'web', Address: '10.0.0.1', Port: 80, Tags: [] },
    Checks: checks.map(([CheckID, Status, Output]) => ({ CheckID, Status, ServiceID: id, Name: CheckID, Output })),
  }
}

t.test('why a service has no instance, from what the health API lists', async (t) => {
  t.match(explainEntries(key, [], false, null), { kind: 'unknown-service', text: /an unknown service \(a typo/ })
  t.match(explainEntries(key, [], false, 'deny'), { kind: 'unknown-service', text: /or one that token may not read/ })
  t.match(explainEntries(key, [], true, 'deny'), { kind: 'not-readable', text: /filtered by ACLs/ })
  t.match(
    explainEntries(
      key,
      [
        entry('a', [
          ['serfHealth', 'passing'],
          ['http', 'critical', 'connection refused\nmore'],
        ]),
      ],
      false,
      null,
    ),
    { kind: 'all-critical', text: /1 critical \(check "http": connection refused\)$/ },
  )
  t.match(
    explainEntries(
      key,
      [entry('a', [['_service_maintenance:a', 'critical']]), entry('b', [['http', 'critical']])],
      false,
      null,
    ),
    { kind: 'all-critical', text: /1 critical .*, 1 in maintenance/ },
  )
  t.match(explainEntries(key, [entry('a', [['http', 'passing']])], false, 'deny'), {
    kind: 'dns-hidden',
    text: /1 passing instance\(s\) of "web" but DNS returns none: the agent's DNS token \(acl\.tokens\.dns/,
  })
  t.match(explainEntries(key, [entry('a', [['http', 'warning']])], false, null), {
    kind: 'dns-hidden',
    text: /0 passing and 1 warning .*another agent or datacenter/,
  })
  t.match(
    explainEntries({ service: 'web', tag: 'v2', datacenter: 'dc2' }, [], false, null).text,
    /"web" with tag "v2" in datacenter dc2/,
  )
})
