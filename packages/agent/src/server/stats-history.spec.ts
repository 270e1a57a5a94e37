import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NotFoundError } from "@fast-sandbox/api/core";
import type { RuntimeSandbox, RuntimeSandboxStats } from "../runtime/runtime.js";
import { StatsHistory } from "./stats-history.js";

/** A runtime whose sandboxes' counters the test sets; it records which reads walked the disk. */
class CountingRuntime {
  readonly sandboxes = new Map<string, { state: RuntimeSandbox["state"]; cpuUsageNanos: number; diskUsedBytes: number; timestampMs: number }>();
  readonly diskReads: string[] = [];

  async list(): Promise<RuntimeSandbox[]> {
    return [...this.sandboxes].map(([sandboxId, { state }]) => ({
      sandboxId,
      namespace: "default",
      name: sandboxId,
      pool: "p",
      image: "i",
      state,
      labels: {},
    }));
  }

  async stats(sandboxId: string, windowMs: number, options: { disk?: boolean } = {}): Promise<RuntimeSandboxStats> {
    assert.equal(windowMs, 0, "a sample reads the cgroup once, without waiting");
    const sandbox = this.sandboxes.get(sandboxId);
    if (!sandbox) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    if (options.disk !== false) this.diskReads.push(sandboxId);
    return {
      timestampMs: sandbox.timestampMs,
      cpuUsageNanos: sandbox.cpuUsageNanos,
      cpuUsedMillis: 0,
      cpuLimitMillis: 0,
      memoryUsedBytes: 1024,
      memoryCacheBytes: 256,
      memoryLimitBytes: 0,
      pids: 1,
      diskUsedBytes: options.disk === false ? 0 : sandbox.diskUsedBytes,
      diskLimitBytes: 0,
      nodeCpus: 2,
      nodeMemoryBytes: 4096,
    };
  }
}

describe("StatsHistory", () => {
  it("samples each running sandbox, its CPU use over the time since its previous sample, the disk every diskEvery-th time (carried between)", async () => {
    const runtime = new CountingRuntime();
    runtime.sandboxes.set("a", { state: "running", cpuUsageNanos: 0, diskUsedBytes: 100, timestampMs: 10_000 });
    runtime.sandboxes.set("stopped", { state: "stopped", cpuUsageNanos: 0, diskUsedBytes: 0, timestampMs: 10_000 });
    const history = new StatsHistory({ runtime, diskEvery: 2 });
    await history.sampleAll();
    // 1 s later, half a core's worth of CPU time; then 2 s later, two cores' worth.
    Object.assign(runtime.sandboxes.get("a")!, { timestampMs: 11_000, cpuUsageNanos: 500e6, diskUsedBytes: 200 });
    await history.sampleAll();
    Object.assign(runtime.sandboxes.get("a")!, { timestampMs: 13_000, cpuUsageNanos: 4500e6, diskUsedBytes: 300 });
    await history.sampleAll();
    const samples = await history.samples("a");
    assert.deepEqual(
      samples.map((sample) => [sample.timestampMs, sample.cpuUsedMillis, sample.diskUsedBytes]),
      [
        [10_000, 0, 100],
        [11_000, 500, 100],
        [13_000, 2000, 300],
      ],
    );
    assert.deepEqual(runtime.diskReads, ["a", "a"], "the disk walked at the first and third sample only");
    assert.deepEqual(await history.samples("stopped"), [], "a stopped sandbox is known but not sampled");
    assert.deepEqual(
      (await history.samples("a", 11_000, 12_999)).map((sample) => sample.timestampMs),
      [11_000],
      "both ends included",
    );
    await assert.rejects(history.samples("nosuch"), NotFoundError);
  });

  it("keeps the last `retain` samples, and forgets a sandbox once it is gone", async () => {
    const runtime = new CountingRuntime();
    runtime.sandboxes.set("a", { state: "running", cpuUsageNanos: 0, diskUsedBytes: 0, timestampMs: 0 });
    const history = new StatsHistory({ runtime, retain: 2 });
    for (const timestampMs of [1000, 2000, 3000]) {
      runtime.sandboxes.get("a")!.timestampMs = timestampMs;
      await history.sampleAll();
    }
    assert.deepEqual(
      (await history.samples("a")).map((sample) => sample.timestampMs),
      [2000, 3000],
    );
    runtime.sandboxes.delete("a");
    await history.sampleAll();
    await assert.rejects(history.samples("a"), NotFoundError);
    runtime.sandboxes.set("a", { state: "running", cpuUsageNanos: 0, diskUsedBytes: 0, timestampMs: 9000 });
    assert.deepEqual(await history.samples("a"), [], "a sandbox of that id made anew starts a new history");
  });

  it("keeps every field of each sample through the ring's growth and wrap-around, oldest first", async () => {
    const runtime = new CountingRuntime();
    runtime.sandboxes.set("a", { state: "running", cpuUsageNanos: 0, diskUsedBytes: 7, timestampMs: 0 });
    const history = new StatsHistory({ runtime, retain: 40, diskEvery: 1 });
    for (let index = 1; index <= 100; index++) {
      Object.assign(runtime.sandboxes.get("a")!, { timestampMs: index * 1000, cpuUsageNanos: index * 1e9, diskUsedBytes: index * 10 });
      await history.sampleAll();
    }
    const samples = await history.samples("a");
    assert.equal(samples.length, 40);
    assert.deepEqual(samples[0], {
      timestampMs: 61_000,
      cpuUsageNanos: 61e9,
      cpuUsedMillis: 1000,
      cpuLimitMillis: 0,
      memoryUsedBytes: 1024,
      memoryCacheBytes: 256,
      memoryLimitBytes: 0,
      pids: 1,
      diskUsedBytes: 610,
      diskLimitBytes: 0,
      nodeCpus: 2,
      nodeMemoryBytes: 4096,
    });
    assert.deepEqual(
      samples.map((sample) => sample.timestampMs / 1000),
      Array.from({ length: 40 }, (_, index) => 61 + index),
    );
  });

  it("samples on its own every intervalMs once started, and stops", async () => {
    const runtime = new CountingRuntime();
    runtime.sandboxes.set("a", { state: "running", cpuUsageNanos: 0, diskUsedBytes: 0, timestampMs: 0 });
    const history = new StatsHistory({ runtime, intervalMs: 10 });
    history.start();
    const deadline = Date.now() + 10_000;
    while ((await history.samples("a")).length < 3 && Date.now() < deadline) {
      runtime.sandboxes.get("a")!.timestampMs += 1;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await history.stop();
    const taken = (await history.samples("a")).length;
    assert.ok(taken >= 3, `${taken} samples`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal((await history.samples("a")).length, taken, "no sample after stop()");
  });
});
