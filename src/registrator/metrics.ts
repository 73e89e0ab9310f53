import { Counter, Gauge, type Registry } from 'prom-client'

/**
 * The registrator's Prometheus metrics on the registry it is given (the proxy's, under serve --registrator). Names are
 * prefixed consul_lb_registrator_ so they never collide with the proxy's on a shared registry.
 */
export class RegistratorMetrics {
  readonly containers: Gauge
  readonly services: Gauge
  readonly syncs: Counter
  readonly operations: Counter
  readonly events: Counter
  readonly reconnects: Counter
  readonly warnings: Counter
  readonly streamUp: Gauge
  readonly aclDenied: Gauge

  constructor(registry: Registry) {
    const registers = [registry]
    this.containers = new Gauge({
      name: 'consul_lb_registrator_containers',
      help: 'Running containers seen at the last sync',
      registers,
    })
    this.services = new Gauge({
      name: 'consul_lb_registrator_services',
      help: 'Consul services owned by this registrator at the last sync',
      registers,
    })
    this.syncs = new Counter({
      name: 'consul_lb_registrator_syncs_total',
      help: 'Full reconcile passes by reason and result (ok, or an error code)',
      labelNames: ['reason', 'result'],
      registers,
    })
    this.operations = new Counter({
      name: 'consul_lb_registrator_operations_total',
      help: 'Consul writes by operation (register, deregister, maintenance_on, maintenance_off, ttl) and result',
      labelNames: ['op', 'result'],
      registers,
    })
    this.events = new Counter({
      name: 'consul_lb_registrator_docker_events_total',
      help: 'Docker events handled, by action',
      labelNames: ['action'],
      registers,
    })
    this.reconnects = new Counter({
      name: 'consul_lb_registrator_docker_disconnects_total',
      help: 'Times the Docker event stream dropped, by error code',
      labelNames: ['code'],
      registers,
    })
    this.warnings = new Counter({
      name: 'consul_lb_registrator_convention_warnings_total',
      help: 'Invalid SERVICE_* values seen (each logged with container and field)',
      registers,
    })
    this.aclDenied = new Gauge({
      name: 'consul_lb_registrator_consul_acl_denied',
      help: "1 while Consul refuses this registrator's writes for want of an ACL permission (see /status registrator.consul.aclDenied); 0 after a sync without denial",
      registers,
    })
    this.streamUp = new Gauge({
      name: 'consul_lb_registrator_docker_stream_up',
      help: '1 while the Docker event stream is open',
      registers,
    })
  }
}
