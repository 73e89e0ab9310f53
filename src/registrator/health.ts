import type { ConsulClient } from '../consul/client.js'
import { type ContainerDesired, healthCheckId } from './desired.js'
import type { ConsulWriter } from './writer.js'

/**
 * Mirrors each container's Docker HEALTHCHECK into a TTL check on every service it registered. The TTL is three
 * refresh periods (desired.ts), so the mirror must be pushed on every tick even when nothing changed; a Docker
 * health_status event pushes at once.
 */
export class HealthMirror {
  constructor(
    private readonly consul: ConsulClient,
    private readonly writer: ConsulWriter,
  ) {}

  /**
   * Sets the mirror of every service in `views` that this registrator registered (`owned`: service ID → container);
   * a desired ID held by someone else's registration is a conflict, and its checks are not ours to set. Returns the
   * number of writes that failed.
   */
  async push(views: readonly ContainerDesired[], owned: ReadonlyMap<string, string>, output?: string): Promise<number> {
    let failures = 0
    for (const v of views) {
      const health = v.health
      if (health === null) continue
      const note = output ?? `Docker HEALTHCHECK: ${health === 'passing' ? 'healthy' : 'not healthy'}`
      for (const s of v.services) {
        const id = s.registration.ID
        if (!owned.has(id)) continue
        const ok = await this.writer.run('ttl', () => this.consul.updateTtlCheck(healthCheckId(id), health, note), {
          id,
          status: health,
        })
        if (!ok) failures++
      }
    }
    return failures
  }
}
