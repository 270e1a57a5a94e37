import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type PoolCapacity, type SandboxPool } from "@fast-sandbox/api";
import { agentName, desiredAgents } from "./local-pool-reconciler.js";

function pool(capacity: PoolCapacity, maxSandboxesPerPod: number): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "default", namespace: "default" },
    spec: { capacity, maxSandboxesPerPod },
  };
}

describe("desiredAgents", () => {
  it("keeps poolMin agents when nothing is allocated and no buffer is asked for", () => {
    assert.equal(desiredAgents(pool({ poolMin: 2, poolMax: 5 }, 4), 0), 2);
    assert.equal(desiredAgents(pool({ poolMin: 0, poolMax: 5 }, 4), 0), 0);
  });

  it("adds agents as allocations fill their slots, rounding up", () => {
    const p = pool({ poolMin: 1, poolMax: 10 }, 4);
    assert.equal(desiredAgents(p, 4), 1);
    assert.equal(desiredAgents(p, 5), 2);
    assert.equal(desiredAgents(p, 8), 2);
    assert.equal(desiredAgents(p, 9), 3);
  });

  it("counts bufferMin free slots on top of the allocated ones", () => {
    const p = pool({ poolMin: 0, poolMax: 10, bufferMin: 3 }, 4);
    assert.equal(desiredAgents(p, 0), 1);
    assert.equal(desiredAgents(p, 1), 1);
    assert.equal(desiredAgents(p, 2), 2);
    assert.equal(desiredAgents(p, 6), 3);
  });

  it("never exceeds poolMax, however full the pool is", () => {
    const p = pool({ poolMin: 1, poolMax: 3, bufferMin: 2 }, 2);
    assert.equal(desiredAgents(p, 4), 3);
    assert.equal(desiredAgents(p, 100), 3);
  });

  it("never goes below poolMin, even when the buffer alone needs fewer", () => {
    assert.equal(desiredAgents(pool({ poolMin: 3, poolMax: 5, bufferMin: 1 }, 8), 0), 3);
  });

  it("is zero for a pool sized to nothing", () => {
    assert.equal(desiredAgents(pool({ poolMin: 0, poolMax: 0, bufferMin: 5 }, 4), 10), 0);
  });

  it("with one slot per agent, needs one agent per sandbox plus one per buffered slot", () => {
    const p = pool({ poolMin: 0, poolMax: 50, bufferMin: 2 }, 1);
    assert.equal(desiredAgents(p, 7), 9);
  });
});

describe("agentName", () => {
  it("is <pool>-<n> in the default namespace", () => {
    assert.equal(agentName("default", "python", 0), "python-0");
    assert.equal(agentName("default", "python", 12), "python-12");
  });

  it("is <namespace>.<pool>-<n> elsewhere, so equal pool names in two namespaces do not collide", () => {
    assert.equal(agentName("team-a", "python", 3), "team-a.python-3");
    assert.notEqual(agentName("team-a", "python", 0), agentName("team-b", "python", 0));
    assert.notEqual(agentName("team-a", "python", 0), agentName("default", "python", 0));
  });
});
