import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatCpu, historyRow, statsRow } from "./stats.js";

describe("fsb stats", () => {
  it("writes CPU as kubectl does: millicores below a core, cores above", () => {
    assert.equal(formatCpu(0), "0m");
    assert.equal(formatCpu(250), "250m");
    assert.equal(formatCpu(1000), "1");
    assert.equal(formatCpu(1530), "1.5");
  });

  it("shows a missing limit as none, with the node's bound", () => {
    const base = { timestampMs: 0, cpuUsageNanos: 0, memoryCacheBytes: 0, pids: 2, diskUsedBytes: 4 * 2 ** 20, nodeCpus: 8, nodeMemoryBytes: 16 * 2 ** 30 };
    const limited = { ...base, cpuUsedMillis: 120, cpuLimitMillis: 200, memoryUsedBytes: 2 ** 20, memoryLimitBytes: 32 * 2 ** 20 };
    assert.deepEqual(statsRow("a", limited), ["a", "120m", "200m", "1Mi", "32Mi", "2", "4Mi"]);
    assert.deepEqual(statsRow("b", { ...limited, cpuLimitMillis: 0, memoryLimitBytes: 0 }), ["b", "120m", "none (8 cpus)", "1Mi", "none (16Gi)", "2", "4Mi"]);
  });

  it("shows a sample of --history as its time, CPU, memory, processes and disk written", () => {
    const sample = {
      timestampMs: Date.UTC(2026, 11, 4, 10, 0, 5),
      cpuUsageNanos: 9e9,
      cpuUsedMillis: 1530,
      cpuLimitMillis: 0,
      memoryUsedBytes: 3 * 2 ** 20,
      memoryCacheBytes: 2 ** 20,
      memoryLimitBytes: 0,
      pids: 4,
      diskUsedBytes: 0,
      nodeCpus: 2,
      nodeMemoryBytes: 2 ** 30,
    };
    assert.deepEqual(historyRow(sample), ["2026-12-04T10:00:05.000Z", "1.5", "3Mi", "4", "0"]);
  });
});
