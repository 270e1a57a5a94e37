import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FsbError, NotFoundError, UnavailableError } from "@fast-sandbox/api/core";
import type { RuntimeSandbox, RuntimeSandboxStats } from "./runtime.js";
import { EphemeralStorageGuard, FAILED_CHECKS_BEFORE_EVICTION, evictionReason, unmeasurableReason } from "./ephemeral-storage-guard.js";

const MIB = 2 ** 20;

/** A runtime whose sandboxes' disk use the test sets; it records the disk reads and evictions. */
class DiskRuntime {
  readonly sandboxes = new Map<string, Partial<RuntimeSandbox> & { diskUsedBytes: number }>();
  readonly diskReads: string[] = [];
  readonly evictions: { sandboxId: string; reason: string }[] = [];
  listFails = false;
  /** Sandboxes that go between the list and their read. */
  readonly vanishing = new Set<string>();
  /** Sandboxes whose disk cannot be walked (a tree deeper than PATH_MAX, a walk that times out). */
  readonly unmeasurable = new Set<string>();
  /** What a read throws while the runtime is away (containerd restarting) or late; none: it answers. */
  runtimeAway: Error | undefined;

  async list(): Promise<RuntimeSandbox[]> {
    if (this.listFails) throw new Error("containerd: connection refused");
    return [...this.sandboxes].map(([sandboxId, { diskUsedBytes: _, ...sandbox }]) => ({
      sandboxId,
      namespace: "default",
      name: sandboxId,
      pool: "p",
      image: "i",
      state: "running",
      labels: {},
      ...sandbox,
    }));
  }

  async stats(sandboxId: string, windowMs: number, options: { disk?: boolean } = {}): Promise<RuntimeSandboxStats> {
    assert.equal(windowMs, 0, "a check reads the cgroup once, without waiting");
    assert.equal(options.disk, true, "a check walks the disk");
    const sandbox = this.sandboxes.get(sandboxId);
    if (!sandbox || this.vanishing.has(sandboxId)) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    if (this.runtimeAway) throw this.runtimeAway;
    if (this.unmeasurable.has(sandboxId)) throw new Error("ENAMETOOLONG: name too long, lstat '/run/sb/000…'");
    this.diskReads.push(sandboxId);
    return {
      timestampMs: 0,
      cpuUsageNanos: 0,
      cpuUsedMillis: 0,
      cpuLimitMillis: 0,
      memoryUsedBytes: 0,
      memoryCacheBytes: 0,
      memoryLimitBytes: 0,
      pids: 1,
      diskUsedBytes: sandbox.diskUsedBytes,
      diskLimitBytes: sandbox.ephemeralStorageBytes ?? 0,
      nodeCpus: 2,
      nodeMemoryBytes: 2 ** 30,
    };
  }

  async evict(sandboxId: string, reason: string): Promise<void> {
    const sandbox = this.sandboxes.get(sandboxId);
    if (!sandbox) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    this.evictions.push({ sandboxId, reason });
    Object.assign(sandbox, { state: "stopped", evicted: reason });
  }
}

function guarded(runtime: DiskRuntime) {
  const warnings: string[] = [];
  const evicted: string[] = [];
  const guard = new EphemeralStorageGuard({
    runtime,
    logger: { warn: (_fields: object, message?: string) => void warnings.push(message ?? "") },
    onEvicted: (sandboxId) => evicted.push(sandboxId),
  });
  return { guard, warnings, evicted };
}

describe("EphemeralStorageGuard", () => {
  it("evicts a running sandbox whose disk use is past its limit, and only that one", async () => {
    const runtime = new DiskRuntime();
    runtime.sandboxes.set("past", { ephemeralStorageBytes: 16 * MIB, diskUsedBytes: 16 * MIB + 1 });
    runtime.sandboxes.set("at", { ephemeralStorageBytes: 16 * MIB, diskUsedBytes: 16 * MIB });
    runtime.sandboxes.set("unlimited", { diskUsedBytes: 10 * 2 ** 30 });
    runtime.sandboxes.set("stopped", { ephemeralStorageBytes: MIB, diskUsedBytes: 2 * MIB, state: "stopped" });
    runtime.sandboxes.set("paused", { ephemeralStorageBytes: MIB, diskUsedBytes: 2 * MIB, checkpointing: true });
    const { guard, evicted, warnings } = guarded(runtime);

    await guard.checkAll();

    assert.deepEqual(
      runtime.evictions.map((eviction) => eviction.sandboxId),
      ["past"],
    );
    assert.deepEqual(evicted, ["past"]);
    // Sandboxes without a limit, stopped or being checkpointed are not walked at all.
    assert.deepEqual(runtime.diskReads.sort(), ["at", "past"]);
    assert.equal(runtime.evictions[0]?.reason, evictionReason(16 * MIB + 1, 16 * MIB));
    assert.match(warnings.join("\n"), /evicting a sandbox: its disk use, 16\.00 MiB .* went past its limit of 16\.00 MiB/);

    // Evicted once: the next pass finds it stopped and evicted, and leaves it.
    await guard.checkAll();
    assert.equal(runtime.evictions.length, 1);
  });

  it("says by how much, in MiB, and where the limit comes from", () => {
    assert.equal(
      evictionReason(24.5 * MIB, 16 * MIB),
      "its disk use, 24.50 MiB (root file system changes, run directory and removed files still held open), went past its limit of 16.00 MiB (the pool's sandboxResources.ephemeralStorage)",
    );
  });

  it("skips a sandbox that went between the list and its read, and goes on with the others", async () => {
    const runtime = new DiskRuntime();
    runtime.sandboxes.set("a-gone", { ephemeralStorageBytes: MIB, diskUsedBytes: 2 * MIB });
    runtime.sandboxes.set("b-past", { ephemeralStorageBytes: MIB, diskUsedBytes: 2 * MIB });
    runtime.vanishing.add("a-gone");
    const { guard, warnings } = guarded(runtime);
    await guard.checkAll();
    assert.deepEqual(
      runtime.evictions.map((eviction) => eviction.sandboxId),
      ["b-past"],
    );
    assert.equal(warnings.filter((warning) => /could not/.test(warning)).length, 0, "a sandbox gone is no failure");
  });

  it("fails closed: a sandbox whose disk use cannot be measured is evicted after a few failed checks in a row; a check that works starts the count again", async () => {
    const runtime = new DiskRuntime();
    runtime.sandboxes.set("deep", { ephemeralStorageBytes: MIB, diskUsedBytes: 0 });
    runtime.sandboxes.set("flaky", { ephemeralStorageBytes: MIB, diskUsedBytes: 0 });
    runtime.unmeasurable.add("deep");
    runtime.unmeasurable.add("flaky");
    const { guard, warnings } = guarded(runtime);
    for (let pass = 1; pass < FAILED_CHECKS_BEFORE_EVICTION; pass++) await guard.checkAll();
    assert.equal(runtime.evictions.length, 0, "not at the first failures: one may be a passing fault");
    assert.equal(warnings.filter((warning) => /could not check a sandbox's disk use/.test(warning)).length, 2 * (FAILED_CHECKS_BEFORE_EVICTION - 1));
    runtime.unmeasurable.delete("flaky");
    await guard.checkAll();
    runtime.unmeasurable.add("flaky");
    assert.deepEqual(
      runtime.evictions.map((eviction) => eviction.sandboxId),
      ["deep"],
    );
    assert.equal(runtime.evictions[0]?.reason, unmeasurableReason(FAILED_CHECKS_BEFORE_EVICTION, "ENAMETOOLONG: name too long, lstat '/run/sb/000…'"));
    assert.match(runtime.evictions[0]?.reason ?? "", /^its disk use could not be measured 3 times in a row \(last: ENAMETOOLONG/);
    // flaky's count began again after its good check.
    for (let pass = 1; pass < FAILED_CHECKS_BEFORE_EVICTION; pass++) await guard.checkAll();
    assert.equal(runtime.evictions.length, 1);
    await guard.checkAll();
    assert.deepEqual(
      runtime.evictions.map((eviction) => eviction.sandboxId),
      ["deep", "flaky"],
    );
  });

  it("does not count checks that failed because the runtime was away or late: no fault of the sandbox", async () => {
    const runtime = new DiskRuntime();
    runtime.sandboxes.set("fine", { ephemeralStorageBytes: MIB, diskUsedBytes: 0 });
    const { guard, warnings } = guarded(runtime);
    for (const away of [
      new UnavailableError("containerd Snapshots/Usage: connection refused (is containerd running and is its socket reachable?)"),
      new FsbError("deadline_exceeded", "containerd Snapshots/Usage: deadline exceeded"),
    ]) {
      runtime.runtimeAway = away;
      for (let pass = 0; pass < 2 * FAILED_CHECKS_BEFORE_EVICTION; pass++) await guard.checkAll();
    }
    assert.equal(runtime.evictions.length, 0);
    assert.match(warnings.join("\n"), /the runtime did not answer/);
  });

  it("logs a list that fails and tries again at the next pass", async () => {
    const runtime = new DiskRuntime();
    runtime.sandboxes.set("past", { ephemeralStorageBytes: MIB, diskUsedBytes: 2 * MIB });
    runtime.listFails = true;
    const { guard, warnings } = guarded(runtime);
    await guard.checkAll();
    assert.equal(runtime.evictions.length, 0);
    assert.match(warnings.join("\n"), /could not list the sandboxes to check their disk use/);
    runtime.listFails = false;
    await guard.checkAll();
    assert.equal(runtime.evictions.length, 1);
  });

  it("checks on its interval once started, and no more once stopped", async () => {
    const runtime = new DiskRuntime();
    runtime.sandboxes.set("past", { ephemeralStorageBytes: MIB, diskUsedBytes: 2 * MIB });
    const guard = new EphemeralStorageGuard({ runtime, intervalMs: 10 });
    guard.start();
    const deadline = Date.now() + 5_000;
    while (runtime.evictions.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    await guard.stop();
    assert.equal(runtime.evictions.length, 1);
    runtime.sandboxes.set("later", { ephemeralStorageBytes: MIB, diskUsedBytes: 2 * MIB });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(runtime.evictions.length, 1, "no pass after stop()");
  });
});
