// The proxy-failover tests again, on the pass-through data plane (--data-plane passthrough).
process.env.CONSUL_LB_DATA_PLANE = 'passthrough'
await import('./proxy-failover.test.js')
