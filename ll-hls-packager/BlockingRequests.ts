import { addressKey } from '../lib/address.js';
import type { LlhlsLimits } from './limits.js';

/** A parked request's place: `release()` gives it back (idempotent). Or why there is none. */
export type Admission = { ok: true; release: () => void } | { ok: false; reason: 'address' | 'total' };

/**
 * Counts the blocking requests parked on this process, per client address (IPv6 by its /64) and in total, and admits a
 * new one only under both caps. O(1) per request; an address leaves the map when its last request is released.
 */
export class BlockingRequests {
  readonly #maxPerAddress: number;
  readonly #maxTotal: number;
  readonly #byAddress = new Map<string, number>();
  #total = 0;

  constructor(limits: Pick<LlhlsLimits, 'maxBlockingPerAddress' | 'maxBlocking'>) {
    this.#maxPerAddress = limits.maxBlockingPerAddress;
    this.#maxTotal = limits.maxBlocking;
  }

  /** Requests parked now, all addresses together. */
  get size(): number {
    return this.#total;
  }

  /** Requests parked now by `address`'s key. */
  countFor(address: string): number {
    return this.#byAddress.get(addressKey(address)) ?? 0;
  }

  admit(address: string): Admission {
    const key = addressKey(address);
    const count = this.#byAddress.get(key) ?? 0;
    // The address's own cap first: a client over its share hears 429 (its own doing) rather than 503 (the node's).
    if (count >= this.#maxPerAddress) return { ok: false, reason: 'address' };
    if (this.#total >= this.#maxTotal) return { ok: false, reason: 'total' };
    this.#byAddress.set(key, count + 1);
    this.#total += 1;
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        this.#total -= 1;
        const left = (this.#byAddress.get(key) ?? 1) - 1;
        if (left === 0) this.#byAddress.delete(key);
        else this.#byAddress.set(key, left);
      },
    };
  }
}
