#!/usr/bin/env node
import cluster from 'node:cluster'

// Cluster workers skip argument parsing: the primary hands them the validated config.
if (cluster.isWorker && process.env.CONSUL_LB_WORKER_CONFIG) {
  const { runWorker } = await import('./cli/serve.js')
  await runWorker()
} else {
  const { main } = await import('./cli/index.js')
  await main(process.argv)
}
