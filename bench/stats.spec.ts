import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatTable, nearMaxNote, percentile, percentileNearMax, percentileOfSorted, ratio, summarize } from "./stats.js";

describe("percentile", () => {
  it("interpolates between the closest ranks (R-7)", () => {
    const values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    assert.equal(percentile(values, 50), 5.5);
    assert.equal(percentile(values, 0), 1);
    assert.equal(percentile(values, 100), 10);
    // rank 0.95 · 9 = 8.55 → 9 + 0.55 · (10 − 9)
    assert.ok(Math.abs(percentile(values, 95) - 9.55) < 1e-9);
    assert.ok(Math.abs(percentile(values, 99) - 9.91) < 1e-9);
  });

  it("gives the middle element as the median of an odd sample", () => {
    assert.equal(percentile([7, 1, 3], 50), 3);
  });

  it("does not depend on the input order and does not mutate the input", () => {
    const values = [5, 3, 9, 1, 7];
    const copy = [...values];
    assert.equal(percentile(values, 50), 5);
    assert.deepEqual(values, copy);
  });

  it("returns the single value of a one-element sample for every p", () => {
    for (const p of [0, 50, 95, 99, 100]) assert.equal(percentile([42], p), 42);
  });

  it("rejects an empty sample, p outside 0..100 and non-finite samples", () => {
    assert.throws(() => percentile([], 50), RangeError);
    assert.throws(() => percentileOfSorted([1, 2], -1), RangeError);
    assert.throws(() => percentileOfSorted([1, 2], 101), RangeError);
    assert.throws(() => percentileOfSorted([1, 2], Number.NaN), RangeError);
    assert.throws(() => percentile([1, Number.NaN], 50), RangeError);
    assert.throws(() => percentile([1, Number.POSITIVE_INFINITY], 50), RangeError);
  });
});

describe("summarize", () => {
  it("reports count, min, max, mean and p50/p95/p99", () => {
    const summary = summarize([4, 1, 3, 2]);
    assert.equal(summary.count, 4);
    assert.equal(summary.min, 1);
    assert.equal(summary.max, 4);
    assert.equal(summary.mean, 2.5);
    assert.equal(summary.p50, 2.5);
    assert.ok(Math.abs(summary.p95 - 3.85) < 1e-9);
    assert.ok(Math.abs(summary.p99 - 3.97) < 1e-9);
  });

  it("keeps percentiles ordered and within min..max", () => {
    const values = Array.from({ length: 101 }, (_, i) => (i * 37) % 101);
    const s = summarize(values);
    assert.ok(s.min <= s.p50 && s.p50 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max);
    assert.equal(s.p50, 50);
    assert.equal(s.p95, 95);
    assert.equal(s.p99, 99);
  });

  it("rejects an empty sample", () => {
    assert.throws(() => summarize([]), RangeError);
  });
});

describe("ratio", () => {
  it("divides, and is NaN for a zero denominator", () => {
    assert.equal(ratio(3, 4), 0.75);
    assert.ok(Number.isNaN(ratio(1, 0)));
  });
});

describe("percentileNearMax", () => {
  it("flags p99 under 100 samples, p95 under 20, p90 under 10, and never the median", () => {
    assert.equal(percentileNearMax(99, 30), true);
    assert.equal(percentileNearMax(99, 99), true);
    assert.equal(percentileNearMax(99, 100), false);
    assert.equal(percentileNearMax(95, 19), true);
    assert.equal(percentileNearMax(95, 20), false);
    assert.equal(percentileNearMax(90, 9), true);
    assert.equal(percentileNearMax(90, 10), false);
    assert.equal(percentileNearMax(50, 1), false);
  });

  it("is right to: p99 of 30 samples lies between the two largest", () => {
    const values = Array.from({ length: 30 }, (_, i) => i + 1);
    const s = summarize(values);
    assert.ok(s.p99 > 29 && s.p99 < 30);
  });
});

describe("nearMaxNote", () => {
  it("names each flagged percentile once, highest first, and is undefined when none is flagged", () => {
    assert.equal(nearMaxNote([{ p: 99, count: 100 }]), undefined);
    const note = nearMaxNote([
      { p: 95, count: 10 },
      { p: 99, count: 30 },
      { p: 99, count: 10 },
    ]);
    assert.match(note!, /^\* p99 of fewer than 100 samples, p95 of fewer than 20 samples: close to the max/);
  });
});

describe("formatTable", () => {
  it("prints a header and one aligned row per summary", () => {
    const hundred = Array.from({ length: 100 }, (_, i) => i + 1);
    const table = formatTable([
      { label: "fast-sandbox", summary: summarize(hundred) },
      { label: "ctr", summary: summarize(hundred.map((v) => v * 10)) },
    ]);
    const lines = table.split("\n");
    assert.equal(lines.length, 3);
    assert.match(lines[0]!, /^ms\s+count\s+min\s+p50\s+p95\s+p99\s+max\s+mean$/);
    assert.match(lines[1]!, /^fast-sandbox\s+100\s+1\.0\s+50\.5\s+95\.0\s+99\.0\s+100\.0\s+50\.5$/);
    assert.match(lines[2]!, /^ctr\s+100\s+10\.0\s+505\.0/);
    assert.equal(new Set(lines.map((line) => line.length)).size, 1);
  });

  it("marks a p99 of fewer than 100 samples and a p95 of fewer than 20, with a note line, keeping the columns aligned", () => {
    const table = formatTable([
      { label: "thirty", summary: summarize(Array.from({ length: 30 }, (_, i) => i + 1)) },
      { label: "three", summary: summarize([1, 2, 3]) },
    ]);
    const lines = table.split("\n");
    assert.equal(lines.length, 4);
    // n = 30: p95 (28.55) stands, p99 (29.71) is marked.
    assert.match(lines[1]!, /^thirty\s+30\s+1\.0\s+15\.5\s+28\.5\s+29\.7\*\s+30\.0\s+15\.5$/);
    // n = 3: both are marked.
    assert.match(lines[2]!, /^three\s+3\s+1\.0\s+2\.0\s+2\.9\*\s+3\.0\*\s+3\.0\s+2\.0$/);
    assert.equal(new Set(lines.slice(0, 3).map((line) => line.length)).size, 1);
    assert.match(lines[3]!, /^\* p99 of fewer than 100 samples, p95 of fewer than 20 samples: close to the max/);
  });

  it("prints no note when every tail percentile has enough samples", () => {
    const table = formatTable([{ label: "many", summary: summarize(Array.from({ length: 150 }, (_, i) => i)) }]);
    assert.equal(table.split("\n").length, 2);
    assert.doesNotMatch(table, /\*/);
  });
});
