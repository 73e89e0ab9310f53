/**
 * What happened in the last seconds and minutes, for the status page: counters per wall-clock second in a fixed ring,
 * so that counting on the request path is an index computation and an increment (no allocation, no timer), and a
 * reader can ask for a rate, a series or a latency percentile over any window the ring holds.
 */
export class SecondRing {
  /**
   * `seconds` rows of `width` counters; row `t % seconds` holds second `t` (epoch seconds): the current second and the
   * `seconds - 1` whole seconds before it.
   */
  private readonly counts: Uint32Array
  readonly width: number
  readonly seconds: number
  /** The newest second written; rows older than `seconds` before it are stale and read as zero. */
  private newest = 0
  // The newest second's row and its time span, so that counting within the same second is two compares and an
  // increment (no division).
  private row = 0
  private startMs = 0
  private endMs = 0

  constructor(width: number, seconds: number) {
    this.width = width
    this.seconds = seconds
    this.counts = new Uint32Array(width * seconds)
  }

  /** Counts one event of `series` at `nowMs`. */
  add(series: number, nowMs: number): void {
    if (nowMs >= this.endMs || nowMs < this.startMs) this.moveTo(nowMs)
    this.counts[this.row + series]!++
  }

  private moveTo(nowMs: number): void {
    const sec = Math.floor(nowMs / 1000)
    // A clock that stepped back counts into the newest second rather than into one the ring already moved past.
    if (sec <= this.newest) return
    const gap = Math.min(sec - this.newest, this.seconds)
    for (let i = 1; i <= gap; i++) {
      const row = ((sec - gap + i) % this.seconds) * this.width
      this.counts.fill(0, row, row + this.width)
    }
    this.newest = sec
    this.row = (sec % this.seconds) * this.width
    this.startMs = sec * 1000
    this.endMs = this.startMs + 1000
  }

  /** The count of `series` in second `sec`: zero for seconds the ring never reached or has already dropped. */
  private at(sec: number, series: number): number {
    if (sec > this.newest || sec <= this.newest - this.seconds) return 0
    return this.counts[(sec % this.seconds) * this.width + series]!
  }

  /** Sum of `series` over the `n` whole seconds before the current one (the current second is still counting). */
  sum(series: number, n: number, nowMs: number): number {
    const now = Math.floor(nowMs / 1000)
    let total = 0
    for (let sec = now - Math.min(n, this.seconds - 1); sec < now; sec++) total += this.at(sec, series)
    return total
  }

  /**
   * Sums of `series` per step of `stepS` whole seconds, oldest first: `steps` of them, the last ending just before the
   * current second. Steps older than the ring are zero.
   */
  steps(series: number, stepS: number, steps: number, nowMs: number): number[] {
    const now = Math.floor(nowMs / 1000)
    const out = new Array<number>(steps).fill(0)
    for (let sec = now - Math.min(stepS * steps, this.seconds - 1); sec < now; sec++)
      out[steps - 1 - Math.floor((now - 1 - sec) / stepS)]! += this.at(sec, series)
    return out
  }
}

/**
 * Upper bounds (ms) of the per-instance latency buckets, about 1.5× apart so an interpolated percentile is within
 * a few tens of percent; a last, open bucket holds what is slower.
 */
export const LATENCY_BOUNDS_MS: readonly number[] = [
  0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 2000, 5000, 10_000,
]

/** The bucket of a latency: a short linear scan (most answers stop in the first few), no allocation. */
export function latencyBucket(ms: number): number {
  let i = 0
  while (i < LATENCY_BOUNDS_MS.length && ms > LATENCY_BOUNDS_MS[i]!) i++
  return i
}

/**
 * The `q` quantile (0.5, 0.99) of latencies counted per bucket, interpolated linearly inside its bucket; null with no
 * samples. What is slower than the last bound reads as that bound (the buckets cannot say more).
 */
export function latencyQuantile(buckets: readonly number[], q: number): number | null {
  let total = 0
  for (const n of buckets) total += n
  if (total === 0) return null
  const rank = q * total
  let seen = 0
  for (let i = 0; i < buckets.length; i++) {
    const n = buckets[i]!
    if (n > 0 && seen + n >= rank) {
      if (i >= LATENCY_BOUNDS_MS.length) return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]!
      const lo = i === 0 ? 0 : LATENCY_BOUNDS_MS[i - 1]!
      return lo + (LATENCY_BOUNDS_MS[i]! - lo) * ((rank - seen) / n)
    }
    seen += n
  }
  return LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.length - 1]!
}
