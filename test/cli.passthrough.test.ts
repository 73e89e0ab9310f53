// The CLI tests again, on the pass-through data plane (`consul-lb serve` reads CONSUL_LB_DATA_PLANE): --workers too.
process.env.CONSUL_LB_DATA_PLANE = 'passthrough'
await import('./cli.test.js')
