/** Summary statistics of latency samples (milliseconds). Pure functions, no I/O. */

export interface Summary {
  count: number;
  min: number;
  max: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
}

/**
 * The p-th percentile (0 ≤ p ≤ 100) of `sorted` (ascending), by linear interpolation between the two
 * closest ranks (the "R-7" method of R, NumPy's and Excel's default): rank = p/100 · (n − 1).
 * p50 is the median; p0 the minimum, p100 the maximum.
 */
export function percentileOfSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new RangeError("percentile of an empty sample");
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile ${p} is outside 0..100`);
  const rank = (p / 100) * (sorted.length - 1);
  const lower = Math.floor(rank);
  const upper = Math.ceil(rank);
  const low = sorted[lower]!;
  const high = sorted[upper]!;
  return low + (high - low) * (rank - lower);
}

export function percentile(values: readonly number[], p: number): number {
  return percentileOfSorted(sortedCopy(values), p);
}

function sortedCopy(values: readonly number[]): number[] {
  for (const value of values) {
    if (!Number.isFinite(value)) throw new RangeError(`sample ${value} is not a finite number`);
  }
  return [...values].sort((a, b) => a - b);
}

export function summarize(values: readonly number[]): Summary {
  const sorted = sortedCopy(values);
  if (sorted.length === 0) throw new RangeError("summary of an empty sample");
  const sum = sorted.reduce((total, value) => total + value, 0);
  return {
    count: sorted.length,
    min: sorted[0]!,
    max: sorted[sorted.length - 1]!,
    mean: sum / sorted.length,
    p50: percentileOfSorted(sorted, 50),
    p95: percentileOfSorted(sorted, 95),
    p99: percentileOfSorted(sorted, 99),
  };
}

/** p50 of `numerator` over p50 of `denominator`; NaN when the denominator is 0. */
export function ratio(numerator: number, denominator: number): number {
  return denominator === 0 ? Number.NaN : numerator / denominator;
}

const COLUMNS = ["count", "min", "p50", "p95", "p99", "max", "mean"] as const;

/** A fixed-width table, one row per labelled summary, milliseconds with one decimal. */
export function formatTable(rows: readonly { label: string; summary: Summary }[]): string {
  const labelWidth = Math.max(6, ...rows.map((row) => row.label.length));
  const cell = (text: string) => text.padStart(9);
  const header = `${"ms".padEnd(labelWidth)}${COLUMNS.map((c) => cell(c)).join("")}`;
  const lines = rows.map(
    ({ label, summary }) => `${label.padEnd(labelWidth)}${COLUMNS.map((c) => cell(c === "count" ? String(summary.count) : summary[c].toFixed(1))).join("")}`,
  );
  return [header, ...lines].join("\n");
}
