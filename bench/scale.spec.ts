import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatPercentileTable, mb, memoryResultFields, mib, percentiles } from "./scale.js";

describe("mib and mb", () => {
  it("tell MiB (2^20 bytes) from decimal MB (10^6 bytes)", () => {
    const bytes = 187.8 * 2 ** 20;
    assert.equal(mib(bytes), "187.8");
    assert.equal(mb(bytes), "196.9");
  });
});

describe("memoryResultFields", () => {
  it("gives the control plane's and the idle agent's RSS in MiB, each followed by MB", () => {
    // The idle agent's VmRSS comes in /proc's kB, which are KiB: 71.0 MiB = 72704 kB.
    assert.equal(
      memoryResultFields(187.8 * 2 ** 20, 72704),
      "controlplane_rss_mib=187.8 controlplane_rss_mb=196.9 agent_idle_rss_mib=71.0 agent_idle_rss_mb=74.4",
    );
  });

  it("says n/a for a skipped idle agent", () => {
    assert.match(memoryResultFields(2 ** 20, undefined), / agent_idle_rss_mib=n\/a agent_idle_rss_mb=n\/a$/);
  });
});

describe("formatPercentileTable", () => {
  it("marks a p99 of fewer than 100 samples and a p90 of fewer than 10, with a note line", () => {
    const table = formatPercentileTable("ms", [
      { label: "lists", summary: percentiles(Array.from({ length: 20 }, (_, i) => i + 1)) },
      { label: "few", summary: percentiles([1, 2, 3]) },
    ]).split("\n");
    assert.equal(table.length, 4);
    assert.match(table[1]!, /^lists\s+20\s+10\.50\s+18\.10\s+19\.81\*\s+20\.00/);
    assert.match(table[2]!, /^few\s+3\s+2\.00\s+2\.80\*\s+2\.98\*/);
    assert.match(table[3]!, /^\* p99 of fewer than 100 samples, p90 of fewer than 10 samples: close to the max/);
  });

  it("marks nothing at 100 samples or more", () => {
    const table = formatPercentileTable("µs", [{ label: "placements", summary: percentiles(Array.from({ length: 200 }, (_, i) => i)) }]);
    assert.equal(table.split("\n").length, 2);
  });
});
