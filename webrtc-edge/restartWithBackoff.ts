import { setTimeout as delay } from 'node:timers/promises';

export interface RestartOptions {
  /** Delays before successive attempts (the first usually 0: replace at once); the last one repeats. */
  backoffMs: readonly number[];
  /** Aborted when the owner closes: no further attempt, and the wait in progress ends. */
  signal: AbortSignal;
  /** After each failed attempt (1-based), with the delay before the next. */
  onFailure: (error: unknown, attempt: number, retryInMs: number) => void;
}

/**
 * Runs `start` until it succeeds, waiting `backoffMs[n]` before attempt n + 1. Resolves true once it succeeded, false
 * when `signal` was aborted first. Never rejects.
 */
export async function restartWithBackoff(start: () => Promise<void>, options: RestartOptions): Promise<boolean> {
  const { backoffMs, signal } = options;
  const delayBefore = (attempt: number): number => backoffMs[Math.min(attempt, backoffMs.length - 1)] ?? 0;
  for (let attempt = 0; !signal.aborted; attempt++) {
    const wait = delayBefore(attempt);
    if (wait > 0) {
      try {
        await delay(wait, undefined, { signal });
      } catch {
        return false; // aborted
      }
    }
    try {
      await start();
      return !signal.aborted;
    } catch (error) {
      if (!signal.aborted) options.onFailure(error, attempt + 1, delayBefore(attempt + 1));
    }
  }
  return false;
}
