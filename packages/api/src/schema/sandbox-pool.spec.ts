import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION } from "./object-meta.js";
import { DEFAULT_PREPARED_INSTANCES, preparedInstancesOf, type SandboxPool, type SandboxPoolSpec } from "./sandbox-pool.js";
import { validateSandboxPool } from "./validation.js";

function spec(fields: Partial<SandboxPoolSpec> = {}): SandboxPoolSpec {
  return { capacity: { poolMin: 1, poolMax: 2 }, maxSandboxesPerPod: 8, runtimeType: "container", image: "busybox:1.36", ...fields };
}

function pool(fields: Partial<SandboxPoolSpec>): SandboxPool {
  return { apiVersion: API_VERSION, kind: "SandboxPool", metadata: { name: "p", namespace: "team" }, spec: spec(fields) };
}

describe("preparedInstancesOf", () => {
  it("gives a runc pool that names an image and leaves the field unset the default of 2", () => {
    assert.equal(DEFAULT_PREPARED_INSTANCES, 2);
    assert.equal(preparedInstancesOf(spec()), 2);
    // runtimeType unset is runc.
    const { runtimeType: _runtimeType, ...withoutRuntime } = spec();
    assert.equal(preparedInstancesOf(withoutRuntime), 2);
  });

  it("keeps an explicit 0 apart from unset: 0 means none", () => {
    assert.equal(preparedInstancesOf(spec({ preparedInstances: 0 })), 0);
    validateSandboxPool(pool({ preparedInstances: 0 }));
  });

  it("takes an explicit count as it is", () => {
    assert.equal(preparedInstancesOf(spec({ preparedInstances: 5 })), 5);
    assert.equal(preparedInstancesOf(spec({ preparedInstances: 1 })), 1);
  });

  it("gives a gVisor pool that names preparedFromCheckpoint the default copies, capped by its slots", () => {
    assert.equal(preparedInstancesOf(spec({ runtimeType: "gvisor", preparedFromCheckpoint: "golden" })), 2);
    assert.equal(preparedInstancesOf(spec({ runtimeType: "gvisor", preparedFromCheckpoint: "golden", maxSandboxesPerPod: 1 })), 1);
    assert.equal(preparedInstancesOf(spec({ runtimeType: "gvisor", preparedFromCheckpoint: "golden", preparedInstances: 0 })), 0);
  });

  it("gives a gVisor pool none by default, image or not", () => {
    assert.equal(preparedInstancesOf(spec({ runtimeType: "gvisor" })), 0);
    const { image: _image, ...noImage } = spec({ runtimeType: "gvisor" });
    assert.equal(preparedInstancesOf(noImage), 0);
  });

  it("gives a pool that names no image none by default: there is no template to prepare", () => {
    const { image: _image, ...noImage } = spec();
    assert.equal(preparedInstancesOf(noImage), 0);
    validateSandboxPool(pool({ image: undefined }));
  });

  it("caps the default by the agent's sandbox slots", () => {
    assert.equal(preparedInstancesOf(spec({ maxSandboxesPerPod: 1 })), 1);
    assert.equal(preparedInstancesOf(spec({ maxSandboxesPerPod: 2 })), 2);
    assert.equal(preparedInstancesOf(spec({ maxSandboxesPerPod: 1024 })), 2);
  });

  it("gives every pool the validation accepts a count the validation would accept if it were explicit", () => {
    for (const fields of [{}, { maxSandboxesPerPod: 1 }, { runtimeType: "gvisor" as const }, { image: undefined }]) {
      const count = preparedInstancesOf(spec(fields));
      validateSandboxPool(pool({ ...fields, preparedInstances: count }));
    }
  });
});

describe("validateSandboxPool: preparedInstances", () => {
  it("accepts 0 on any pool (the way to opt out), gVisor and image-less ones included", () => {
    validateSandboxPool(pool({ runtimeType: "gvisor", preparedInstances: 0 }));
    validateSandboxPool(pool({ image: undefined, preparedInstances: 0 }));
  });

  it("takes a count on a gVisor pool with an image: its instances wait in the helper like runc ones", () => {
    validateSandboxPool(pool({ runtimeType: "gvisor", preparedInstances: 3 }));
    assert.equal(preparedInstancesOf(spec({ runtimeType: "gvisor", preparedInstances: 3 })), 3);
  });

  it("refuses a count on a pool without an image (or a gVisor checkpoint), and one above the slots or 64", () => {
    assert.throws(() => validateSandboxPool(pool({ image: undefined, preparedInstances: 1 })), /spec\.preparedInstances.*needs spec\.image/);
    assert.throws(
      () => validateSandboxPool(pool({ runtimeType: "gvisor", image: undefined, preparedInstances: 1 })),
      /spec\.preparedInstances.*needs spec\.image/,
    );
    assert.throws(() => validateSandboxPool(pool({ maxSandboxesPerPod: 2, preparedInstances: 3 })), /greater than maxSandboxesPerPod 2/);
    assert.throws(() => validateSandboxPool(pool({ maxSandboxesPerPod: 100, preparedInstances: 65 })), /spec\.preparedInstances/);
    assert.throws(() => validateSandboxPool(pool({ preparedInstances: -1 })), /spec\.preparedInstances/);
  });
});
