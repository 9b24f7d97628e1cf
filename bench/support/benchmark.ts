/**
 * The contract between `bench/run.ts` and a benchmark. Every top-level module in `bench/` is a benchmark and exports
 * `benchmark: Benchmark`; helpers live in `bench/support/`.
 */
export interface Benchmark {
  /** Short kebab-case id: what the filter argument of `run.ts` matches and what the summary table shows. */
  name: string;
  /** One line: what is measured, in which unit. */
  title: string;
  run(context: BenchContext): Promise<BenchResult>;
}

export interface BenchContext {
  /** Prints one line of the benchmark's report (indented under its heading). */
  report(line: string): void;
  /** Aborted on SIGINT/SIGTERM: the benchmark stops its processes, removes its files and rejects. */
  signal: AbortSignal;
}

/** One line of the final summary table. */
export interface SummaryRow {
  metric: string;
  value: string;
  /** The goal as text (`≤ 1.05`), if the metric has one. */
  goal?: string;
  /** Whether the goal was met; undefined when the metric has no goal or the run could not judge it. */
  met?: boolean;
}

export interface BenchResult {
  rows: SummaryRow[];
}

/** A benchmark's figure did not come out (as opposed to a figure that misses its goal). */
export class BenchError extends Error {
  override name = 'BenchError';
}

/** A positive integer from the environment, with a default and bounds; a bad value stops the run with its name. */
export function envInteger(name: string, fallback: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  if (!/^\d+$/.test(raw.trim()) || Number(raw) < min || Number(raw) > max) {
    throw new BenchError(`${name}: expected an integer from ${min} to ${max}, got "${raw}"`);
  }
  return Number(raw);
}

/**
 * Steps of a load from the environment: `500,1000` → [500, 1000] (at most 10, each from 1 to `max`); the default when
 * unset; a bad value stops the run with its name.
 */
export function envSteps(name: string, fallback: number[], max: number): number[] {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const steps = raw.split(',').map((s) => Number(s.trim()));
  if (steps.length > 10 || steps.some((n) => !Number.isInteger(n) || n < 1 || n > max)) {
    throw new BenchError(`${name}: expected up to 10 comma-separated integers from 1 to ${max}, got "${raw}"`);
  }
  return steps;
}

/** `value` to `digits` decimals, as the tables print it. */
export const fixed = (value: number, digits = 3): string => value.toFixed(digits);

/**
 * Ctrl-C (or SIGTERM) aborts the returned signal: the run stops its processes and removes its files; a second one
 * quits at once.
 */
export function abortOnSignals(): AbortSignal {
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (abort.signal.aborted) process.exit(130);
    process.stderr.write(`\n${signal}: stopping (again to quit at once)\n`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return abort.signal;
}
