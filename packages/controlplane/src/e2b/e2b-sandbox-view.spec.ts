import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type Condition, type Sandbox, type SandboxPool } from "@fast-sandbox/api";
import {
  CLIENT_ID,
  METADATA_ANNOTATION,
  TEMPLATE_ANNOTATION,
  e2bSandboxOf,
  isVisible,
  listedSandboxOf,
  metadataOf,
  resourcesOf,
  sandboxDetailOf,
} from "./e2b-sandbox-view.js";

const HOST = { cpuCount: 8, memoryMB: 16_000, diskSizeMB: 100_000 };

function pool(sandboxResources?: SandboxPool["spec"]["sandboxResources"]): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "default", namespace: "default" },
    spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1, ...(sandboxResources ? { sandboxResources } : {}) },
  };
}

function sandbox(
  overrides: {
    annotations?: Record<string, string>;
    phase?: "Running" | "Bound" | "Lost" | "Paused" | "Failed";
    deleting?: boolean;
    expireTime?: string;
    conditions?: Condition[];
    startTime?: string;
  } = {},
): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: {
      name: "sb-1",
      namespace: "default",
      creationTimestamp: "2026-01-02T03:04:05Z",
      annotations: overrides.annotations ?? { [TEMPLATE_ANNOTATION]: "base", [METADATA_ANNOTATION]: '{"user":"abc"}' },
      ...(overrides.deleting ? { deletionTimestamp: "2026-01-02T03:05:00Z" } : {}),
    },
    spec: {
      image: "busybox",
      poolRef: "default",
      ...(overrides.expireTime !== undefined ? { expireTime: overrides.expireTime } : { expireTime: "2026-01-02T03:09:05Z" }),
    },
    status: {
      phase: overrides.phase ?? "Running",
      sandboxID: "k3x9q0m2zt7c1w8r5bn4",
      sandboxIP: "10.213.0.5",
      ...(overrides.conditions ? { conditions: overrides.conditions } : {}),
      ...(overrides.startTime ? { startTime: overrides.startTime } : {}),
    },
  };
}

describe("a sandbox as E2B's API shows it", () => {
  it("create and connect: E2B's Sandbox with every field its SDKs require, the access token, and domain null", () => {
    assert.deepEqual(e2bSandboxOf(sandbox(), "0.4.0", "token", "traffic"), {
      templateID: "base",
      sandboxID: "k3x9q0m2zt7c1w8r5bn4",
      alias: "base",
      clientID: CLIENT_ID,
      envdVersion: "0.4.0",
      envdAccessToken: "token",
      trafficAccessToken: "traffic",
      domain: null,
    });
    assert.equal(CLIENT_ID, "6532622b");
    // With the proxy's domain, E2B's getHost(port) names the port under it.
    assert.equal(e2bSandboxOf(sandbox(), "0.4.0", "token", "traffic", "localhost:7072").domain, "localhost:7072");
  });

  it("list and get: start (the record's creation), end (spec.expireTime), resources, state running, metadata", () => {
    const resources = resourcesOf(pool(), HOST);
    assert.deepEqual(listedSandboxOf(sandbox(), "0.4.0", resources), {
      templateID: "base",
      alias: "base",
      sandboxID: "k3x9q0m2zt7c1w8r5bn4",
      clientID: CLIENT_ID,
      startedAt: "2026-01-02T03:04:05Z",
      endAt: "2026-01-02T03:09:05.000Z",
      cpuCount: 8,
      memoryMB: 16_000,
      diskSizeMB: 100_000,
      state: "running",
      metadata: { user: "abc" },
      envdVersion: "0.4.0",
    });
    assert.equal(sandboxDetailOf(sandbox(), "0.4.0", resources, "t").envdAccessToken, "t");
    assert.ok(!("envdAccessToken" in sandboxDetailOf(sandbox(), "0.4.0", resources, undefined)), "no token to give: the field is absent");
  });

  it("start: the instance's start (status.startTime: a resume starts it anew, as on E2B), running or paused; the record's creation without one", () => {
    const resumed = "2026-01-02T05:00:00.000Z";
    assert.equal(listedSandboxOf(sandbox({ startTime: resumed }), "0.4.0", HOST).startedAt, resumed);
    assert.equal(sandboxDetailOf(sandbox({ startTime: resumed, phase: "Paused" }), "0.4.0", HOST, undefined).startedAt, resumed);
    assert.equal(listedSandboxOf(sandbox(), "0.4.0", HOST).startedAt, "2026-01-02T03:04:05Z");
  });

  it("resources: the pool's limits in whole CPUs (at least 1) and MiB (at least 128, E2B's minimum); the host's without limits", () => {
    assert.deepEqual(resourcesOf(pool({ cpu: "500m", memory: "64Mi" }), HOST), { cpuCount: 1, memoryMB: 128, diskSizeMB: 100_000 });
    assert.deepEqual(resourcesOf(pool({ cpu: "2500m", memory: "1Gi" }), HOST), { cpuCount: 3, memoryMB: 1024, diskSizeMB: 100_000 });
    assert.deepEqual(resourcesOf(pool({ cpu: "2" }), HOST), { cpuCount: 2, memoryMB: 16_000, diskSizeMB: 100_000 });
    assert.deepEqual(resourcesOf(undefined, HOST), HOST);
  });

  it("resources: the disk is the pool's ephemeralStorage in MiB, else the host's", () => {
    assert.deepEqual(resourcesOf(pool({ memory: "1Gi", ephemeralStorage: "2Gi" }), HOST), { cpuCount: 8, memoryMB: 1024, diskSizeMB: 2048 });
    assert.equal(resourcesOf(pool({ ephemeralStorage: "1G" }), HOST).diskSizeMB, 953);
    assert.equal(resourcesOf(pool({ cpu: "1" }), HOST).diskSizeMB, 100_000);
  });

  it("resources without the pool's limits: its agents' limits (all their sandboxes together), each one left out the host's", () => {
    const agent = { cpuMillis: 1500, memoryBytes: 2 * 1024 ** 3 };
    assert.deepEqual(resourcesOf(pool(), HOST, agent), { cpuCount: 2, memoryMB: 2048, diskSizeMB: 100_000 });
    assert.deepEqual(resourcesOf(pool(), HOST, { memoryBytes: 64 * 1024 ** 2 }), { cpuCount: 8, memoryMB: 128, diskSizeMB: 100_000 });
    // An agent's limits above the host's (the shipped template's 4 CPUs and 8Gi on a smaller node): the host's.
    assert.deepEqual(resourcesOf(pool(), HOST, { cpuMillis: 16_000, memoryBytes: 32 * 1024 ** 3 }), HOST);
    // The pool's own limits come first.
    assert.deepEqual(resourcesOf(pool({ cpu: "500m" }), HOST, agent), { cpuCount: 1, memoryMB: 2048, diskSizeMB: 100_000 });
  });

  it("metadata: a broken annotation (edited by hand) reads as none, and only string values count", () => {
    assert.deepEqual(metadataOf(sandbox({ annotations: { [TEMPLATE_ANNOTATION]: "base", [METADATA_ANNOTATION]: "{not json" } })), {});
    assert.deepEqual(metadataOf(sandbox({ annotations: { [TEMPLATE_ANNOTATION]: "base", [METADATA_ANNOTATION]: '{"a":"1","b":2}' } })), { a: "1" });
    assert.deepEqual(metadataOf(sandbox({ annotations: { [TEMPLATE_ANNOTATION]: "base" } })), {});
  });

  it("a sandbox without expiry (removed by hand) ends at the end of time, not at its start", () => {
    assert.equal(listedSandboxOf(sandbox({ expireTime: "" }), "0.4.0", HOST).endAt, "9999-12-31T23:59:59.000Z");
  });

  it("a paused sandbox: state paused, its end the time it was paused (as E2B shows it), whatever its expireTime", () => {
    const paused = sandbox({
      phase: "Paused",
      expireTime: "",
      conditions: [{ type: "Paused", status: "True", reason: "Paused", lastTransitionTime: "2026-01-02T03:06:00Z" }],
    });
    const listed = listedSandboxOf(paused, "0.4.0", HOST);
    assert.equal(listed.state, "paused");
    assert.equal(listed.endAt, "2026-01-02T03:06:00.000Z");
    assert.ok(isVisible(paused));
  });

  it("E2B clients see only the E2B API's sandboxes that run or are paused: not others, not one being deleted, lost, failed or still being created", () => {
    assert.ok(isVisible(sandbox()));
    assert.ok(!isVisible(sandbox({ phase: "Failed" })));
    assert.ok(!isVisible(sandbox({ annotations: {} })), "created by fsb run");
    assert.ok(!isVisible(sandbox({ deleting: true })));
    assert.ok(!isVisible(sandbox({ phase: "Lost" })));
    assert.ok(!isVisible(sandbox({ phase: "Bound" })));
  });
});
