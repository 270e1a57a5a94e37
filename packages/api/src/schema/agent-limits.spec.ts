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

  it("takes a number as Kubernetes does (cpu: 2, memory in bytes)", () => {
    assert.deepEqual(agentLimitsOf(template([{ name: "agent", resources: { limits: { cpu: 2, memory: 1048576 } } }])), {
      cpuMillis: 2000,
      memoryBytes: 1048576,
    });
  });

  it("refuses a limit that is not a quantity, naming the field", () => {
    assert.throws(
      () => agentLimitsOf(template([{ name: "x" }, { name: "agent", resources: { limits: { memory: "lots" } } }])),
      (error: unknown) =>
        error instanceof ValidationError &&
        error.field === "spec.agentTemplate.spec.containers[1].resources.limits.memory" &&
        /"lots" is not a memory quantity/.test(error.message),
    );
    assert.throws(() => agentLimitsOf(template([{ name: "agent", resources: { limits: { cpu: true } } }])), /limits\.cpu: true is not a quantity/);
  });
});

describe("validateSandboxPool and the agent limits", () => {
  it("refuses a pool whose agent template's limits are not quantities", () => {
    const pool = {
      apiVersion: "sandbox.fast.io/v1alpha1",
      kind: "SandboxPool",
      metadata: { name: "p", namespace: "default" },
      spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 2, ...template([{ name: "agent", resources: { limits: { cpu: "fast" } } }]) },
    };
    assert.throws(() => validateSandboxPool(pool), /spec\.agentTemplate\.spec\.containers\[0\]\.resources\.limits\.cpu: "fast" is not a CPU quantity/);
    (pool.spec.agentTemplate.spec.containers[0] as { resources: { limits: { cpu: string } } }).resources.limits.cpu = "250m";
    assert.doesNotThrow(() => validateSandboxPool(pool));
  });
});
