import { randomInt } from 'node:crypto'
import { DnsTimeoutError } from '../errors.js'
import type { DnsMessage } from './message.js'

interface Pending {
  resolve: (m: DnsMessage) => void
  reject: (e: Error) => void
  timer: NodeJS.Timeout
}

/**
 * Queries in flight on one transport, by DNS message id: id allocation (random, never reusing an id still in
 * flight), a timeout per query, and settling by id when an answer (or a transport failure) arrives.
 */
export class PendingQueries {
  private readonly map = new Map<number, Pending>()
  private readonly server: string

  constructor(server: string) {
    this.server = server
  }

  /** Registers a query; returns its id and the promise of its answer. */
  add(name: string, timeoutMs: number): { id: number; answer: Promise<DnsMessage> } {
    // A random id per query: a forged answer must guess it (and, over UDP, come from the connected server address).
    let id = randomInt(0x10000)
    while (this.map.has(id)) id = randomInt(0x10000)
    const answer = new Promise<DnsMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.map.delete(id)
        reject(new DnsTimeoutError(this.server, name, timeoutMs))
      }, timeoutMs)
      timer.unref()
      this.map.set(id, { resolve, reject, timer })
    })
    return { id, answer }
  }

  has(id: number): boolean {
    return this.map.has(id)
  }

  settle(id: number, err: Error | null, msg?: DnsMessage): void {
    const p = this.map.get(id)
    if (!p) return
    this.map.delete(id)
    clearTimeout(p.timer)
    if (err) p.reject(err)
    else p.resolve(msg!)
  }

  /** Fails every query in flight (the socket closed or errored). `make` builds one error per query. */
  failAll(make: () => Error): void {
    for (const id of [...this.map.keys()]) this.settle(id, make())
  }
}
