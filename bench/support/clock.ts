import { performance } from 'node:perf_hooks';
import { BenchError } from './benchmark.js';

/**
 * Milliseconds since the epoch with sub-millisecond resolution. Every process of the machine derives it from the same
 * system clock (its start time plus a monotonic clock), so times taken in two processes can be subtracted.
 */
export const epochMs = (): number => performance.timeOrigin + performance.now();

/** Resolves after `ms`; rejects at once when the run is aborted. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(new BenchError('aborted'));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new BenchError('aborted'));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, ms));
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
