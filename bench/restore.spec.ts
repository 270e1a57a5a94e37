import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatRestoreBench, type RestoreBenchResult } from "./restore.js";
import { summarize } from "./stats.js";

function result(overrides: Partial<RestoreBenchResult> = {}): RestoreBenchResult {
  return {
    benchmark: "restore",
    count: 3,
    warmup: 0,
    forks: 1,
    image: "fast-sandbox.io/base:latest",
    restore: summarize([190, 200, 210]),
    ctrRunsc: summarize([240, 250, 260]),
    restoreVsCtrRunsc: 200 / 250,
    forkK4Wall: summarize([980]),
    checkpoint: summarize([300]),
    agentSteps: undefined,
    checkpointSteps: undefined,
    checkpointSizeBytes: 4096,
    pooledClaim: summarize([16, 17]),
    machine: { cpus: 2, memoryGiB: 23.5, kernel: "6.18", node: "v20" },
    cleanup: { leftoverTasks: [], leftoverContainers: [], cgroupDirsLeft: 0 },
    ...overrides,
  };
}

describe("formatRestoreBench", () => {
  it("keeps the three keys first and appends the runsc baseline's p50 and the ratio", () => {
    const lines = formatRestoreBench(result());
    assert.equal(
      lines.at(-1),
      "RESULT restore_p50_ms=200.0 fork_k4_wall_ms=980.0 pooled_claim_p50_ms=16.5 baseline_ctr_runsc_p50_ms=250.0 restore_vs_ctr_runsc=0.800",
    );
  });

  it("prints the baseline's row beside the restores", () => {
    const table = formatRestoreBench(result()).join("\n");
    assert.match(table, /^ctr run -d on runsc \(baseline, cold\)\s+3\s+240\.0\s+250\.0/m);
  });

  it("says n/a for the pooled claims of a run that ended before them, keeping the keys after it", () => {
    assert.match(formatRestoreBench(result({ pooledClaim: undefined })).at(-1)!, / pooled_claim_p50_ms=n\/a baseline_ctr_runsc_p50_ms=250\.0 /);
  });
});
