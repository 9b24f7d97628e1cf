import type { PlaylistWindow } from './PlaylistWindow.js';

type Waiter = { ready: () => boolean; resolve: () => void };

/** Only the hinted part may be requested before it exists (§6.2.6); anything further is 404 at once. */
const PART_REQUEST_AHEAD = 0;

/**
 * The requests parked on one rendition until the playlist has what they ask for: blocking playlist reloads
 * (`_HLS_msn`/`_HLS_part`, rfc8216bis §6.2.5.2) and hinted parts (§6.2.6). Each waiter leaves when it is served, when its
 * timeout fires or when its client hangs up, whichever comes first: the set holds only live requests (the caps on how
 * many are `BlockingRequests`).
 */
export class PlaylistWaits {
  /** A Set: O(1) removal when a client hangs up, and it iterates in insertion order (wake-ups stay first come, first served). */
  readonly #waiters = new Set<Waiter>();

  /** Requests waiting now. */
  get size(): number {
    return this.#waiters.size;
  }

  /**
   * Resolves when `ready()` holds, or with false after `timeoutMs` (or at once if it already holds: true), or with false
   * as soon as `signal` aborts (the client hung up): the waiter is gone at once, not when its timeout fires.
   */
  waitUntil(ready: () => boolean, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (ready()) return Promise.resolve(true);
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const settle = (arrived: boolean): void => {
        this.#waiters.delete(waiter);
        clearTimeout(timer);
        signal?.removeEventListener('abort', abandon);
        resolve(arrived);
      };
      const abandon = (): void => settle(false);
      const waiter: Waiter = { ready, resolve: () => settle(true) };
      const timer = setTimeout(abandon, timeoutMs);
      signal?.addEventListener('abort', abandon, { once: true });
      this.#waiters.add(waiter);
    });
  }

  /** The playlist changed: every waiter whose condition now holds is served. */
  wake(): void {
    // Deleting the entry being visited is safe while iterating a Set; `settle` does it.
    for (const waiter of this.#waiters) if (waiter.ready()) waiter.resolve();
  }
}

/** Has the playlist got part `part` of segment `msn` (or, without part, the complete segment)? §6.2.5.2 */
export function hasReached(window: PlaylistWindow, msn: number, part: number | undefined): boolean {
  if (window.ended) return true;
  const segment = window.segment(msn);
  if (!segment) {
    const first = window.segments[0];
    return first !== undefined && msn < first.mediaSequence; // already slid out: the current playlist answers
  }
  if (part === undefined) return segment.complete;
  // A part index beyond the last part of a complete segment means part 0 of the next segment.
  if (segment.complete && part >= segment.parts.length) return hasReached(window, msn + 1, 0);
  return part < segment.parts.length;
}

/** Is a part with this sequence number allowed to be waited for (the hinted one, or just after)? */
export function partIsComing(window: PlaylistWindow, sequence: number): boolean {
  return !window.ended && sequence >= window.nextPartSequence && sequence <= window.nextPartSequence + PART_REQUEST_AHEAD;
}
