import { type ConnectionOptions, connect } from 'node:tls'

/**
 * Why did the server (a Consul agent, a Docker engine) hang up? In TLS 1.3 the server checks the client certificate
 * after the handshake has completed on the client's side, so a refused (or missing) client certificate reaches the
 * HTTP client as "other side closed" (undici's UND_ERR_SOCKET) with the server's alert lost. This probe, run only after such a failure, opens one raw TLS
 * connection with the same options, sends a request line, and returns the error the alert produces
 * (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED, ERR_SSL_TLSV1_ALERT_UNKNOWN_CA, …), or null when the server answered.
 */
export function probeTlsAlert(
  target: { host: string; port: number } | { socketPath: string },
  options: ConnectionOptions,
  timeoutMs: number,
): Promise<Error | null> {
  return new Promise((resolve) => {
    const socket = connect({
      ...options,
      ...('socketPath' in target ? { path: target.socketPath } : { host: target.host, port: target.port }),
    })
    const done = (err: Error | null) => {
      clearTimeout(timer)
      socket.destroy()
      resolve(err)
    }
    const timer = setTimeout(() => done(null), timeoutMs)
    timer.unref()
    socket.once('secureConnect', () => socket.write('HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'))
    socket.once('data', () => done(null))
    socket.once('error', (err) => done(err))
    socket.once('close', () => done(null))
  })
}
