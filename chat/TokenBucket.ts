import { performance } from 'node:perf_hooks';

/** `tokens` per `periodMs`; `tokens` is also the burst. */
export interface RateLimit {
  tokens: number;
  periodMs: number;
}

/**
 * A token bucket: starts full with `limit.tokens`, refills continuously at `tokens / periodMs`, and every accepted
 * message takes one token. Time is `performance.now()`: monotonic, so a clock step cannot refill or drain it.
 */
export class TokenBucket {
  readonly #capacity: number;
  readonly #perMs: number;
  #tokens: number;
  #at: number;

  constructor(limit: RateLimit, now: number = performance.now()) {
    this.#capacity = limit.tokens;
    this.#perMs = limit.tokens / limit.periodMs;
    this.#tokens = limit.tokens;
    this.#at = now;
  }

  #refill(now: number): void {
    if (now > this.#at) {
      this.#tokens = Math.min(this.#capacity, this.#tokens + (now - this.#at) * this.#perMs);
      this.#at = now;
    }
  }

  /** Takes a token: 0 when there was one, otherwise the milliseconds until there will be (nothing is taken then). */
  take(now: number = performance.now()): number {
    this.#refill(now);
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - this.#tokens) / this.#perMs);
  }

  /** Whether the bucket has refilled completely (then it carries no state worth keeping). */
  full(now: number = performance.now()): boolean {
    this.#refill(now);
    return this.#tokens >= this.#capacity;
  }
}

/** Buckets by key (a client address), created on first use; `sweep` forgets the full ones so the map stays small. */
export class KeyedBuckets {
  readonly #limit: RateLimit | undefined;
  readonly #buckets = new Map<string, TokenBucket>();

  /** `limit` undefined: no limit, `take` always succeeds. */
  constructor(limit: RateLimit | undefined) {
    this.#limit = limit;
  }

  take(key: string, now: number = performance.now()): number {
    if (this.#limit === undefined) return 0;
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      bucket = new TokenBucket(this.#limit, now);
      this.#buckets.set(key, bucket);
    }
    return bucket.take(now);
  }

  sweep(now: number = performance.now()): void {
    for (const [key, bucket] of this.#buckets) if (bucket.full(now)) this.#buckets.delete(key);
  }

  get size(): number {
    return this.#buckets.size;
  }
}
