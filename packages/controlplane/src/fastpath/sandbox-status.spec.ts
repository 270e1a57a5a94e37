import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, NotFoundError, type Sandbox, type SandboxStatus } from "@fast-sandbox/api";
import { MemoryResourceStore } from "../store/memory-resource-store.js";
import { rebaseStatus, writeStatus } from "./sandbox-status.js";

const T = new Date("2026-11-30T12:00:00.000Z");

async function stored(store: MemoryResourceStore, status: SandboxStatus): Promise<Sandbox> {
  const created = await store.create("Sandbox", {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "sb", namespace: "default" },
    spec: { image: "busybox", poolRef: "default" },
  });
  return store.updateStatus("Sandbox", { ...created, status });
}

describe("rebaseStatus", () => {
  it("applies the fields the writer set or removed, and keeps what another writer changed meanwhile", () => {
    const base: SandboxStatus = { phase: "Bound", assignedPod: "a", sandboxID: "x", nodeName: "n" };
    const desired: SandboxStatus = { phase: "Running", assignedPod: "a", sandboxID: "x", endpoints: ["1.2.3.4:80"] };
    const current: SandboxStatus = { phase: "Bound", assignedPod: "a", sandboxID: "x", nodeName: "n", recreations: 2 };
    assert.deepEqual(rebaseStatus(base, desired, current), { phase: "Running", assignedPod: "a", sandboxID: "x", recreations: 2, endpoints: ["1.2.3.4:80"] });
  });

  it("merges conditions by type: the writer's changed ones win, another writer's new ones stay", () => {
    const ready = { type: "Ready", status: "True" as const, reason: "Started" };
    const exited = { type: "CommandExited", status: "True" as const, reason: "Succeeded" };
    const connected = { type: "AgentConnected", status: "False" as const, reason: "AgentNotResponding" };
    const rebased = rebaseStatus({ conditions: [connected] }, { conditions: [ready] }, { conditions: [connected, exited] });
    assert.deepEqual(rebased.conditions, [exited, ready]);
  });
});

describe("writeStatus", () => {
  it("writes conditionally; on a conflict it applies its change to the fresh status instead of its stale copy", async () => {
    const store = new MemoryResourceStore();
    const seen = await stored(store, { phase: "Bound", assignedPod: "a", sandboxID: "x" });
    // Another writer (the leader recording a fact) comes in between.
    await writeStatus(store, seen, {}, { type: "CommandExited", status: "True", reason: "Succeeded" }, T);
    const written = await writeStatus(store, seen, { phase: "Running" }, { type: "Ready", status: "True", reason: "Started" }, T);
    assert.equal(written.status?.phase, "Running");
    assert.deepEqual(
      written.status?.conditions?.map((c) => c.type),
      ["CommandExited", "Ready"],
    );
    const again = await store.get("Sandbox", { namespace: "default", name: "sb" });
    assert.deepEqual(again?.status, written.status);
  });

  it("fails with NotFoundError when the sandbox is gone", async () => {
    const store = new MemoryResourceStore();
    const seen = await stored(store, { phase: "Running" });
    await store.update("Sandbox", { ...(await store.get("Sandbox", { namespace: "default", name: "sb" }))! });
    await store.delete("Sandbox", { namespace: "default", name: "sb" });
    await assert.rejects(writeStatus(store, seen, { phase: "Lost" }), NotFoundError);
  });
});
