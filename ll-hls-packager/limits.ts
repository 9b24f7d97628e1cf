import { defaultLimits, readLimits, type LimitTable, type LimitValues } from '../lib/limits.js';

/**
 * What LL-HLS clients may cost (STYLE: limits are data). A blocking request is a playlist reload with `_HLS_msn`
 * (rfc8216bis §6.2.5.2), a request for the hinted part (§6.2.6), or a playlist asked for before the stream's first
 * media: it parks a waiter for up to three target durations. A player parks one or two per rendition it loads; the
 * caps are far above that, and a request beyond them is refused at once, never queued.
 */
export const LLHLS_LIMITS = {
  maxBlockingPerAddress: {
    env: 'ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS', default: 100, min: 1, max: 100_000, unit: 'requests',
    doc: 'Blocking LL-HLS requests one client address (IPv6: one /64) may have parked at once; beyond, 429 ONAIR_ERR_RATE_LIMITED with Retry-After.',
  },
  maxBlocking: {
    env: 'ONAIR_LLHLS_MAX_BLOCKING', default: 10_000, min: 1, max: 1_000_000, unit: 'requests',
    doc: 'Blocking LL-HLS requests parked at once on this process, all clients together; beyond, 503 ONAIR_ERR_OVERLOADED with Retry-After.',
  },
} satisfies LimitTable;

export type LlhlsLimits = LimitValues<typeof LLHLS_LIMITS>;

export const LLHLS_LIMIT_DEFAULTS: LlhlsLimits = defaultLimits(LLHLS_LIMITS);

/**
 * The table read from `env`; a bad value throws a ConfigError that names the variable. For the composition root until
 * server/config.ts lists LLHLS_LIMITS in its LIMIT_TABLES (then `config.limits.llhls` replaces it).
 */
export function readLlhlsLimits(env: NodeJS.ProcessEnv): LlhlsLimits {
  return readLimits(LLHLS_LIMITS, env);
}
