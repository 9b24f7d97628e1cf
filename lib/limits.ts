import { ConfigError } from './errors.js';

/**
 * One bound on what the outside world may cost OnAir: a connection count, a message size, a deadline. Each room keeps
 * its bounds in one table of these (STYLE: limits are data); the config schema reads every table from the environment
 * and the README's *Limits* tables list the same rows.
 */
export interface Limit {
  /** The environment variable that overrides the default. */
  env: string;
  default: number;
  min: number;
  max: number;
  /** How the number reads: `connections`, `bytes`, `ms`, … (docs only). */
  unit: string;
  /** What happens at the bound, in a sentence (docs only). */
  doc: string;
}

export type LimitTable = Record<string, Limit>;

export type LimitValues<T extends LimitTable> = { [K in keyof T]: number };

/** The values of a table from the environment; a bad value names its variable (start-up stops). */
export function readLimits<T extends LimitTable>(table: T, env: NodeJS.ProcessEnv): LimitValues<T> {
  const values = {} as Record<string, number>;
  for (const [key, limit] of Object.entries(table)) {
    const raw = env[limit.env];
    if (raw === undefined || raw.trim() === '') {
      values[key] = limit.default;
      continue;
    }
    if (!/^\d+$/.test(raw.trim())) throw new ConfigError(limit.env, `expected a whole number, got "${raw}"`);
    const value = Number(raw.trim());
    if (value < limit.min || value > limit.max) {
      throw new ConfigError(limit.env, `expected a whole number from ${limit.min} to ${limit.max}, got ${value}`);
    }
    values[key] = value;
  }
  return values as LimitValues<T>;
}

/** The defaults of a table (rooms built without a config, e.g. in unit tests). */
export function defaultLimits<T extends LimitTable>(table: T): LimitValues<T> {
  return readLimits(table, {});
}

function formatDefault(limit: Limit): string {
  const n = limit.default;
  if (limit.unit === 'bytes' && n >= 1024 * 1024 && n % (1024 * 1024) === 0) return `${n / (1024 * 1024)} MiB`;
  if (limit.unit === 'bytes' && n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} ${limit.unit}`;
}

/** A table's rows for the README: variable, default, what happens at the bound (docs are generated from the data). */
export function limitRows(table: LimitTable): string[] {
  return Object.values(table).map((limit) => `| \`${limit.env}\` | ${formatDefault(limit)} | ${limit.doc} |`);
}
