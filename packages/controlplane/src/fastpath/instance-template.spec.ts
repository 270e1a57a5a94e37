import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromJsonString } from "@bufbuild/protobuf";
import { API_VERSION, pb, validateSandboxPool, type SandboxPool } from "@fast-sandbox/api";
import { preparedInstancesEnv } from "./instance-template.js";

function pool(spec: Partial<SandboxPool["spec"]>): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "p", namespace: "team" },
    spec: { capacity: { poolMin: 1, poolMax: 2 }, maxSandboxesPerPod: 4, ...spec },
  };
}

describe("preparedInstancesEnv", () => {
  it("tells a gVisor pool's agents the checkpoint their instances are restored from, with a template naming no image", () => {
    const gvisor = pool({ runtimeType: "gvisor", preparedInstances: 2, preparedFromCheckpoint: "golden", network: { mode: "Isolated" } });
    validateSandboxPool(gvisor);
    const env = preparedInstancesEnv(gvisor);
    assert.equal(env.FSB_PREPARED_INSTANCES, "2");
    assert.equal(env.FSB_PREPARED_FROM_CHECKPOINT, "golden");
    const template = fromJsonString(pb.AgentCreateSandboxRequestSchema, env.FSB_PREPARED_TEMPLATE ?? "");
    assert.equal(template.runtimeType, "gvisor");
    assert.equal(template.image, "");
    assert.equal(template.namespace, "team");
    assert.equal(template.network?.mode, pb.SandboxNetwork_Mode.ISOLATED);
  });

  it("tells a gVisor pool with an image that asks for instances to make them of its image, no checkpoint", () => {
    const gvisor = pool({ runtimeType: "gvisor", image: "busybox", preparedInstances: 2, network: { mode: "Isolated" } });
    validateSandboxPool(gvisor);
    const env = preparedInstancesEnv(gvisor);
    assert.equal(env.FSB_PREPARED_INSTANCES, "2");
    assert.equal(env.FSB_PREPARED_FROM_CHECKPOINT, undefined);
    const template = fromJsonString(pb.AgentCreateSandboxRequestSchema, env.FSB_PREPARED_TEMPLATE ?? "");
    assert.equal(template.runtimeType, "gvisor");
    assert.equal(template.image, "busybox");
    // Left unset, a gVisor pool with an image keeps none.
    assert.deepEqual(preparedInstancesEnv(pool({ runtimeType: "gvisor", image: "busybox" })), {});
  });

  it("gives a runc pool's agents no checkpoint", () => {
    const env = preparedInstancesEnv(pool({ image: "busybox", preparedInstances: 1 }));
    assert.equal(env.FSB_PREPARED_INSTANCES, "1");
    assert.equal(env.FSB_PREPARED_FROM_CHECKPOINT, undefined);
  });
});

describe("validateSandboxPool: preparedFromCheckpoint", () => {
  it("needs runtimeType gvisor, and lets a gVisor pool keep instances without an image", () => {
    assert.throws(
      () => validateSandboxPool(pool({ image: "busybox", preparedInstances: 1, preparedFromCheckpoint: "golden" })),
      /preparedFromCheckpoint.*gvisor/,
    );
    assert.throws(() => validateSandboxPool(pool({ runtimeType: "gvisor", preparedInstances: 1 })), /preparedInstances.*preparedFromCheckpoint/);
    assert.throws(
      () => validateSandboxPool(pool({ runtimeType: "gvisor", preparedInstances: 5, preparedFromCheckpoint: "golden" })),
      /greater than maxSandboxesPerPod 4/,
    );
    assert.throws(() => validateSandboxPool(pool({ runtimeType: "gvisor", preparedFromCheckpoint: "Not A Name" })), /preparedFromCheckpoint/);
    validateSandboxPool(pool({ runtimeType: "gvisor", preparedInstances: 4, preparedFromCheckpoint: "golden" }));
  });
});
