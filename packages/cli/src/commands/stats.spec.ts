import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { closeConnections } from "../connection.js";
import { FAKE_STATS, fakeSandbox, startFakeControlPlane } from "../fake-control-plane.fixture.js";
import { formatCpu, historyRow, stats, statsRow } from "./stats.js";

/** What `fsb stats` printed on stdout. */
async function printed(run: () => Promise<void>): Promise<string> {
  const chunks: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = (chunk: string | Uint8Array, ...rest: never[]) => (typeof chunk === "string" ? (chunks.push(chunk), true) : write(chunk, ...rest));
  try {
    await run();
  } finally {
    process.stdout.write = write;
  }
  return chunks.join("");
}

describe("fsb stats", () => {
  it("writes CPU as kubectl does: millicores below a core, cores above", () => {
    assert.equal(formatCpu(0), "0m");
    assert.equal(formatCpu(250), "250m");
    assert.equal(formatCpu(1000), "1");
    assert.equal(formatCpu(1530), "1.5");
  });

  it("shows a missing limit as none, with the node's bound", () => {
    const base = {
      timestampMs: 0,
      cpuUsageNanos: 0,
      memoryCacheBytes: 0,
      pids: 2,
      diskUsedBytes: 4 * 2 ** 20,
      diskLimitBytes: 0,
      nodeCpus: 8,
      nodeMemoryBytes: 16 * 2 ** 30,
    };
    const limited = { ...base, cpuUsedMillis: 120, cpuLimitMillis: 200, memoryUsedBytes: 2 ** 20, memoryLimitBytes: 32 * 2 ** 20 };
    assert.deepEqual(statsRow("a", limited), ["a", "120m", "200m", "1Mi", "32Mi", "2", "4Mi", "none"]);
    assert.deepEqual(statsRow("b", { ...limited, cpuLimitMillis: 0, memoryLimitBytes: 0 }), [
      "b",
      "120m",
      "none (8 cpus)",
      "1Mi",
      "none (16Gi)",
      "2",
      "4Mi",
      "none",
    ]);
    assert.deepEqual(statsRow("c", { ...limited, diskLimitBytes: 16 * 2 ** 20 }), ["c", "120m", "200m", "1Mi", "32Mi", "2", "4Mi", "16Mi"]);
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
      diskLimitBytes: 0,
      nodeCpus: 2,
      nodeMemoryBytes: 2 ** 30,
    };
    assert.deepEqual(historyRow(sample), ["2026-12-04T10:00:05.000Z", "1.5", "3Mi", "4", "0"]);
  });

  it("prints -o json and -o yaml as a List of readings, as ls does, for one name as for several", async () => {
    const token = "stats-token-0123456789";
    const dataDir = mkdtempSync(join(tmpdir(), "fsb-stats-spec-"));
    writeFileSync(join(dataDir, "token"), `${token}\n`, { mode: 0o600 });
    const controlPlane = await startFakeControlPlane({ token, sandboxes: [fakeSandbox("a"), fakeSandbox("b")] });
    try {
      const options = { url: controlPlane.url, dataDir, output: "json" as const };
      const one = JSON.parse(await printed(() => stats(["a"], options)));
      assert.deepEqual(one, { apiVersion: "v1", kind: "List", items: [{ name: "a", stats: FAKE_STATS }] });
      const two = JSON.parse(await printed(() => stats(["a", "b"], options)));
      assert.deepEqual(
        two.items.map((item: { name: string }) => item.name),
        ["a", "b"],
      );
      assert.match(await printed(() => stats(["a"], { ...options, output: "yaml" })), /^apiVersion: v1\nkind: List\nitems:\n {2}- name: a\n/);
    } finally {
      closeConnections();
      await controlPlane.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it("shows every sandbox it can read and reports the others, exiting 1 at the end", async () => {
    const token = "stats-token-0123456789";
    const dataDir = mkdtempSync(join(tmpdir(), "fsb-stats-spec-"));
    writeFileSync(join(dataDir, "token"), `${token}\n`, { mode: 0o600 });
    const controlPlane = await startFakeControlPlane({ token, sandboxes: [fakeSandbox("a"), fakeSandbox("b")] });
    const errors: string[] = [];
    const writeErr = process.stderr.write.bind(process.stderr);
    process.stderr.write = (chunk: string | Uint8Array, ...rest: never[]) =>
      typeof chunk === "string" ? (errors.push(chunk), true) : writeErr(chunk, ...rest);
    try {
      const options = { url: controlPlane.url, dataDir, output: "json" as const };
      const shown = JSON.parse(await printed(() => stats(["a", "nosuch", "b"], options)));
      assert.deepEqual(
        shown.items.map((item: { name: string }) => item.name),
        ["a", "b"],
      );
      assert.equal(process.exitCode, 1);
      assert.equal(errors.length, 1, errors.join(""));
      assert.match(errors[0] ?? "", /^error: .*nosuch.*\n$/);
      errors.length = 0;
      process.exitCode = undefined;
      assert.equal(await printed(() => stats(["nosuch"], { ...options, output: "table" })), "", "nothing read: no table");
      assert.equal(process.exitCode, 1);
    } finally {
      process.stderr.write = writeErr;
      process.exitCode = undefined;
      closeConnections();
      await controlPlane.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
