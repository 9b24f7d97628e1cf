import { ConfigError } from '../lib/errors.js';

/** One bound of the room: the variable that sets it, its default and range, and what it bounds (printed in the docs). */
export interface LimitSpec {
  env: string;
  default: number;
  min: number;
  max: number;
  doc: string;
}

/**
 * ll-hls-packager's limits, as data (STYLE: one table per room). A blocking request is a playlist reload with
 * `_HLS_msn` (rfc8216bis §6.2.5.2), a request for the hinted part (§6.2.6), or a playlist request made before the
 * stream's first media: it holds a waiter for up to three target durations. A player parks one or two per rendition
 * it loads; the caps are far above that, and a request beyond them is refused at once, never queued.
 */
export const LLHLS_LIMITS = {
  maxBlockingPerAddress: {
    env: 'ONAIR_LLHLS_MAX_BLOCKING_PER_ADDRESS',
    default: 100,
    min: 1,
    max: 100_000,
    doc: 'Blocking LL-HLS requests one client address (IPv6: its /64) may have parked at once; beyond, 429 ONAIR_ERR_RATE_LIMITED with Retry-After.',
  },
  maxBlocking: {
    env: 'ONAIR_LLHLS_MAX_BLOCKING',
    default: 10_000,
    min: 1,
    max: 1_000_000,
    doc: 'Blocking LL-HLS requests parked at once on this process, all clients together; beyond, 503 ONAIR_ERR_OVERLOADED with Retry-After.',
  },
} as const satisfies Record<string, LimitSpec>;

export type LlhlsLimits = { [K in keyof typeof LLHLS_LIMITS]: number };

export const LLHLS_LIMIT_DEFAULTS: LlhlsLimits = Object.fromEntries(
  Object.entries(LLHLS_LIMITS).map(([name, spec]) => [name, spec.default]),
) as LlhlsLimits;

/**
 * The table read from the environment; a bad value throws a ConfigError that names the variable. Stands in until
 * server/config.ts reads every room's table through one generic reader.
 */
export function readLlhlsLimits(env: NodeJS.ProcessEnv = process.env): LlhlsLimits {
  const limits = { ...LLHLS_LIMIT_DEFAULTS };
  for (const [name, spec] of Object.entries(LLHLS_LIMITS) as [keyof LlhlsLimits, LimitSpec][]) {
    const raw = env[spec.env]?.trim();
    if (raw === undefined || raw === '') continue;
    if (!/^\d+$/.test(raw)) throw new ConfigError(spec.env, `expected an integer, got "${raw}"`);
    const value = Number(raw);
    if (value < spec.min || value > spec.max) throw new ConfigError(spec.env, `expected an integer from ${spec.min} to ${spec.max}, got ${value}`);
    limits[name] = value;
  }
  return limits;
}
