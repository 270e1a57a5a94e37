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

/**
 * Whether the p-th percentile of `count` samples says little beyond the largest samples: a tail
 * percentile needs more than 100 / (100 − p) samples to have one above it (p99: 100, p95: 20,
 * p90: 10). Below that, R-7 interpolates between the two largest samples, so p99 of 30 is nearly
 * the max. Only for tail percentiles (p > 50).
 */
export function percentileNearMax(p: number, count: number): boolean {
  return p > 50 && p < 100 && count < 100 / (100 - p);
}

/** The mark put after a percentile that `percentileNearMax` flags, and the note that explains it. */
export const NEAR_MAX_MARK = "*";

/**
 * The note printed under a table when one of its cells is marked: which tail percentiles of which
 * sample sizes are close to the max. Undefined when nothing is marked.
 */
export function nearMaxNote(marked: readonly { p: number; count: number }[]): string | undefined {
  const flagged = marked.filter(({ p, count }) => percentileNearMax(p, count));
  if (flagged.length === 0) return undefined;
  const ps = [...new Set(flagged.map(({ p }) => p))].sort((a, b) => b - a);
  const parts = ps.map((p) => `p${p} of fewer than ${Math.round(100 / (100 - p))} samples`);
  return `${NEAR_MAX_MARK} ${parts.join(", ")}: close to the max (interpolated between the largest samples), not a tail estimate`;
}

/** The marked cells of one table (`percentileNearMax`), and the note under it that explains them. */
export class NearMaxMarks {
  private readonly marked: { p: number; count: number }[] = [];

  /** A cell's `text`: of percentile `p` (undefined: not a percentile column) of `count` samples, marked when close to the max. */
  cell(text: string, p: number | undefined, count: number): string {
    if (p === undefined || !percentileNearMax(p, count)) return text;
    this.marked.push({ p, count });
    return `${text}${NEAR_MAX_MARK}`;
  }

  note(): string | undefined {
    return nearMaxNote(this.marked);
  }
}

/**
 * A fixed-width table, one row per labelled summary, milliseconds with one decimal. A p95 or p99
 * of too few samples to be more than the largest ones (`percentileNearMax`) is marked, and a note
 * line under the table says so.
 */
export function formatTable(rows: readonly { label: string; summary: Summary }[]): string {
  const labelWidth = Math.max(6, ...rows.map((row) => row.label.length));
  const cell = (text: string) => text.padStart(9);
  const header = `${"ms".padEnd(labelWidth)}${COLUMNS.map((c) => cell(c)).join("")}`;
  const marks = new NearMaxMarks();
  const value = (summary: Summary, column: (typeof COLUMNS)[number]): string => {
    if (column === "count") return String(summary.count);
    return marks.cell(summary[column].toFixed(1), column === "p95" ? 95 : column === "p99" ? 99 : undefined, summary.count);
  };
  const lines = rows.map(({ label, summary }) => `${label.padEnd(labelWidth)}${COLUMNS.map((c) => cell(value(summary, c))).join("")}`);
  const note = marks.note();
  return [header, ...lines, ...(note ? [note] : [])].join("\n");
}
