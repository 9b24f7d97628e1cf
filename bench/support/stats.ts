export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile of an ascending array (`p` in 0..100). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** p50/p90/p99/max of `values`; undefined when there are none. */
export function summarize(values: ArrayLike<number>): Summary | undefined {
  if (values.length === 0) return undefined;
  const sorted = Float64Array.from(values).sort();
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1]!,
  };
}

/** `12.3 ms`, or `n/a`. */
export const msText = (value: number | undefined, digits = 1): string =>
  value === undefined || !Number.isFinite(value) ? 'n/a' : `${value.toFixed(digits)} ms`;

/** `a / b` as `1.23x`, or `n/a` when either is missing or b is 0. */
export function ratioText(a: number | undefined, b: number | undefined, digits = 2): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return 'n/a';
  return `${(a / b).toFixed(digits)}x`;
}
