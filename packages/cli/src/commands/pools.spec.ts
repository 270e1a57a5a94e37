import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, DEFAULT_NETWORK_MODE, type SandboxPool } from "@fast-sandbox/api";
import { POOL_HEADERS, poolRow } from "./pools.js";

describe("poolRow", () => {
  const now = Date.parse("2026-01-01T01:00:00Z");
  const pool = (spec: Partial<SandboxPool["spec"]>, status?: SandboxPool["status"]): SandboxPool => ({
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "workers", namespace: "default", creationTimestamp: "2026-01-01T00:00:00Z" },
    spec: { capacity: { poolMin: 1, poolMax: 2 }, maxSandboxesPerPod: 4, ...spec },
    ...(status ? { status } : {}),
  });

  it("shows agents as ready/total, then desired and updated agents, sandboxes, free slots, prepared instances, runtime, network mode, egress, image and age", () => {
    const row = poolRow(
      pool(
        { runtimeType: "gvisor", image: "python:3.12", network: { mode: "Isolated", egress: { policy: "denyAll" } } },
        { agents: 2, readyAgents: 1, desiredAgents: 2, updatedAgents: 1, sandboxes: 3, freeSlots: 1, preparedInstances: 2 },
      ),
      now,
    );
    assert.equal(row.length, POOL_HEADERS.length);
    assert.deepEqual(row, ["workers", "1/2", "2", "1", "3", "1", "2", "gvisor", "Isolated", "denyAll", "python:3.12", "60m"]);
  });

  it("shows a pool without status as 0/0 agents and '-' counts, the default runtime and network mode, and '-' without an image", () => {
    assert.deepEqual(poolRow(pool({}), now), [
      "workers",
      "0/0",
      "-",
      "-",
      "-",
      "-",
      "-",
      "container",
      DEFAULT_NETWORK_MODE,
      DEFAULT_NETWORK_MODE === "Shared" ? "-" : "allowAll",
      "-",
      "60m",
    ]);
  });

  it("shows the egress policy of an Isolated pool (allowAll when it sets none, an allowList with its size) and '-' for a Shared one", () => {
    const egress = (network: SandboxPool["spec"]["network"]) => poolRow(pool({ network }), now).slice(8, 10);
    assert.deepEqual(egress({ mode: "Isolated" }), ["Isolated", "allowAll"]);
    assert.deepEqual(egress({ mode: "Isolated", egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8" }, { cidr: "::/0" }] } }), [
      "Isolated",
      "allowList(2)",
    ]);
    assert.deepEqual(egress({ mode: "Shared" }), ["Shared", "-"]);
  });

  it("shows zero counts as 0, not '-'", () => {
    assert.deepEqual(
      poolRow(pool({}, { agents: 0, readyAgents: 0, desiredAgents: 0, updatedAgents: 0, sandboxes: 0, freeSlots: 0, preparedInstances: 0 }), now).slice(1, 7),
      ["0/0", "0", "0", "0", "0", "0"],
    );
  });
});
