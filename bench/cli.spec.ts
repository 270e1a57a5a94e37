import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { cliResultLine, formatCliBench, type CliBenchResult } from "./cli.js";

const result: CliBenchResult = {
  benchmark: "cli",
  count: 20,
  warmup: 2,
  image: "fast-sandbox.io/base:latest",
  fsb: "packages/cli/bin/fsb.js",
  nodeP50: 95.6,
  nodeP90: 99,
  sdkRunP50: 10,
  sdkRunP90: 12,
  commands: [
    { command: "fsb ls", wallP50: 150, wallP90: 160, ownP50: 54.4, ownP90: 64.4 },
    { command: "fsb get NAME", wallP50: 160, wallP90: 170, ownP50: 64.3, ownP90: 74.4 },
    { command: "fsb run", wallP50: 300, wallP90: 320, ownP50: 194.4, ownP90: 214.4 },
  ],
  cliOwnMs: 64.3,
  machine: { cpus: 2, memoryGiB: 23.5, kernel: "6.18", node: "v20" },
  cleanup: { leftoverTasks: [], leftoverContainers: [], cgroupDirsLeft: 0 },
};

describe("cliResultLine", () => {
  it("keeps cli_own_ms (the median of the three) and node_ms first, then each command's own time", () => {
    assert.equal(cliResultLine(result), "RESULT cli_own_ms=64.3 node_ms=95.6 cli_ls_own_ms=54.4 cli_get_own_ms=64.3 cli_run_own_ms=194.4");
  });

  it("is the report's last line", () => {
    assert.equal(formatCliBench(result).split("\n").at(-1), cliResultLine(result));
  });
});
