// The proxy-failover tests again, on the classic data plane (node:http + undici; the pass-through one is the default).
process.env.CONSUL_LB_DATA_PLANE = 'classic'
await import('./proxy-failover.test.js')
