import { createSocket } from 'node:dgram'
import { createServer } from 'node:net'

/**
 * A port free for both TCP and UDP on host right now (Consul binds DNS and Serf on both). There is a window between
 * this check and the real bind; callers that start external processes retry on a clash.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer()
      srv.once('error', reject)
      srv.listen(0, host, () => {
        const p = (srv.address() as { port: number }).port
        srv.close(() => resolve(p))
      })
    })
    const udpFree = await new Promise<boolean>((resolve) => {
      const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4')
      sock.once('error', () => resolve(false))
      sock.bind(port, host, () => sock.close(() => resolve(true)))
    })
    if (udpFree) return port
  }
  throw new Error('no free TCP+UDP port found')
}

export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const out: number[] = []
  while (out.length < n) {
    const p = await freePort(host)
    if (!out.includes(p)) out.push(p)
  }
  return out
}
