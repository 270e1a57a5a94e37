import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { SandboxStats } from "@fast-sandbox/api";
import { e2bSandboxMetricOf } from "./e2b-sandbox-metric.js";

const reading: SandboxStats = {
  timestampMs: 1_764_800_000_500,
  cpuUsageNanos: 9_000_000_000,
  cpuUsedMillis: 250,
  cpuLimitMillis: 500,
  memoryUsedBytes: 64 * 2 ** 20,
  memoryCacheBytes: 16 * 2 ** 20,
  memoryLimitBytes: 256 * 2 ** 20,
  pids: 4,
  diskUsedBytes: 8192,
  diskLimitBytes: 0,
  nodeCpus: 8,
  nodeMemoryBytes: 32 * 2 ** 30,
};

describe("e2bSandboxMetricOf", () => {
  it("gives E2B's fields: the limit's cores (rounded up), CPU as a percentage of them, the memory limit", () => {
    assert.deepEqual(e2bSandboxMetricOf(reading), {
      timestamp: "2025-12-03T22:13:20.500Z",
      timestampUnix: 1_764_800_000,
      cpuCount: 1,
      cpuUsedPct: 25,
      memUsed: 64 * 2 ** 20,
      memCache: 16 * 2 ** 20,
      memTotal: 256 * 2 ** 20,
      diskUsed: 8192,
      diskTotal: 0,
    });
    assert.equal(e2bSandboxMetricOf({ ...reading, cpuLimitMillis: 1500, cpuUsedMillis: 1500 }).cpuCount, 2);
    assert.equal(e2bSandboxMetricOf({ ...reading, cpuLimitMillis: 1500, cpuUsedMillis: 1500 }).cpuUsedPct, 75);
  });

  it("takes the node's CPUs and memory for a sandbox without limits", () => {
    const metric = e2bSandboxMetricOf({ ...reading, cpuLimitMillis: 0, memoryLimitBytes: 0, cpuUsedMillis: 2000 });
    assert.equal(metric.cpuCount, 8);
    assert.equal(metric.cpuUsedPct, 25);
    assert.equal(metric.memTotal, 32 * 2 ** 30);
  });

  it("gives the disk limit as diskTotal (0: none)", () => {
    assert.equal(e2bSandboxMetricOf({ ...reading, diskLimitBytes: 16 * 2 ** 20 }).diskTotal, 16 * 2 ** 20);
  });
});
