import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "../errors.js";
import { agentLimitsOf } from "./agent-limits.js";
import { validateSandboxPool } from "./validation.js";

const template = (containers: unknown[]) => ({ agentTemplate: { spec: { containers } } });

describe("agentLimitsOf", () => {
  it("reads the limits of the container named agent, whatever its place", () => {
    const spec = template([
      { name: "sidecar", resources: { limits: { cpu: "100m", memory: "64Mi" } } },
      { name: "agent", resources: { limits: { cpu: "1500m", memory: "2Gi" } } },
    ]);
    assert.deepEqual(agentLimitsOf(spec), { cpuMillis: 1500, memoryBytes: 2 * 1024 ** 3 });
  });

  it("reads the first container's when none is named agent, and only the limits set", () => {
    assert.deepEqual(agentLimitsOf(template([{ name: "main", resources: { limits: { cpu: "2" } } }])), { cpuMillis: 2000 });
    assert.deepEqual(agentLimitsOf(template([{ name: "agent", resources: { requests: { cpu: "2" } } }])), {});
    assert.deepEqual(agentLimitsOf({}), {});
    assert.deepEqual(agentLimitsOf({ agentTemplate: { metadata: {} } }), {});
  });

  it("reads every quantity Kubernetes accepts, rounded as the Downward API rounds (millicores up, bytes down)", () => {
    const limits = (cpu: unknown, memory: unknown) => agentLimitsOf(template([{ name: "agent", resources: { limits: { cpu, memory } } }]));
    assert.deepEqual(limits(2, 1048576), { cpuMillis: 2000, memoryBytes: 1048576 });
    assert.deepEqual(limits("1.5", "1.5Gi"), { cpuMillis: 1500, memoryBytes: 1.5 * 1024 ** 3 });
    assert.deepEqual(limits(".5", "129e6"), { cpuMillis: 500, memoryBytes: 129_000_000 });
    assert.deepEqual(limits("250m", "1k"), { cpuMillis: 250, memoryBytes: 1000 });
    assert.deepEqual(limits("0.0001", "1Pi"), { cpuMillis: 1, memoryBytes: 1024 ** 5 });
    assert.deepEqual(limits("1e-3", "2E"), { cpuMillis: 1, memoryBytes: 2e18 });
  });

  it("refuses a limit that is not a positive quantity, naming the field", () => {
    assert.throws(
      () => agentLimitsOf(template([{ name: "x" }, { name: "agent", resources: { limits: { memory: "lots" } } }])),
      (error: unknown) =>
        error instanceof ValidationError &&
        error.field === "spec.agentTemplate.spec.containers[1].resources.limits.memory" &&
        /"lots" is not a Kubernetes quantity/.test(error.message),
    );
    assert.throws(() => agentLimitsOf(template([{ name: "agent", resources: { limits: { cpu: true } } }])), /limits\.cpu: true is not a positive quantity/);
    assert.throws(() => agentLimitsOf(template([{ name: "agent", resources: { limits: { cpu: "0" } } }])), /limits\.cpu: "0" is not a positive quantity/);
    assert.throws(() => agentLimitsOf(template([{ name: "agent", resources: { limits: { memory: "1GB" } } }])), /not a Kubernetes quantity/);
  });
});

describe("validateSandboxPool and the agent limits", () => {
  it("does not look inside the agent template: a pool kubectl wrote (the API server does not either) stays writable", () => {
    const pool = {
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "SandboxPool",
      metadata: { name: "p", namespace: "default" },
      spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 2, ...template([{ name: "agent", resources: { limits: { cpu: "fast" } } }]) },
    };
    assert.doesNotThrow(() => validateSandboxPool(pool));
    assert.throws(() => agentLimitsOf(pool.spec), /"fast" is not a Kubernetes quantity/);
  });
});
