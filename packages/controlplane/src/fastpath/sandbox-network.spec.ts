import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, FailedPreconditionError, ValidationError, type Sandbox, type SandboxPool, type SandboxStatus } from "@fast-sandbox/api";
import { instanceNetwork, portsHeldBy, portsOnAgent, withSandboxIP } from "./sandbox-network.js";

function pool(network: SandboxPool["spec"]["network"]): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: "p", namespace: "team" },
    spec: { capacity: { poolMin: 0, poolMax: 1 }, maxSandboxesPerPod: 1, ...(network ? { network } : {}) },
  };
}

function sandbox(status: SandboxStatus | undefined, exposedPorts = [8080, 9090]): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "s", namespace: "team" },
    spec: { image: "busybox", poolRef: "p", exposedPorts },
    ...(status ? { status } : {}),
  };
}

describe("instanceNetwork", () => {
  it("is the pool's Isolated network, with the sandbox's egress when it sets one", () => {
    const isolated = pool({ mode: "Isolated", egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8" }] }, allowSandboxToSandbox: true });
    assert.deepEqual(instanceNetwork({ image: "x", poolRef: "p" }, isolated), {
      mode: "Isolated",
      egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8" }] },
      allowSandboxToSandbox: true,
    });
    assert.deepEqual(instanceNetwork({ image: "x", poolRef: "p", egress: { policy: "denyAll" } }, isolated), {
      mode: "Isolated",
      egress: { policy: "denyAll" },
      allowSandboxToSandbox: true,
    });
  });

  it("is Shared, with nothing else, for a Shared pool", () => {
    assert.deepEqual(instanceNetwork({ image: "x", poolRef: "p" }, pool({ mode: "Shared" })), { mode: "Shared" });
  });

  it("refuses a stored sandbox's CIDR with bits set after the prefix (the API server's format lets it through)", () => {
    assert.throws(
      () => instanceNetwork({ image: "x", poolRef: "p", egress: { policy: "allowList", allow: [{ cidr: "10.0.0.1/8" }] } }, pool({ mode: "Isolated" })),
      (error: unknown) => error instanceof ValidationError && error.field === "spec.egress.allow[0].cidr",
    );
  });

  it("refuses to network sandboxes of a pool whose own settings are invalid, naming the pool and the fix", () => {
    // Written through the Kubernetes API, whose rules cannot know that an unset mode means Shared today.
    const invalid = pool({ mode: "Shared", egress: { policy: "denyAll" } });
    assert.throws(
      () => instanceNetwork({ image: "x", poolRef: "p" }, invalid),
      (error: unknown) =>
        error instanceof FailedPreconditionError &&
        /^pool team\/p cannot take sandboxes until its spec is fixed: spec\.network\.egress: applies to an Isolated network only/.test(error.message),
    );
  });
});

describe("portsOnAgent", () => {
  it("is the exposed ports on a Shared network and none on an Isolated one", () => {
    const spec = { image: "x", poolRef: "p", exposedPorts: [80] };
    assert.deepEqual(portsOnAgent(spec, { mode: "Shared" }), [80]);
    assert.deepEqual(portsOnAgent(spec, { mode: "Isolated", egress: { policy: "allowAll" }, allowSandboxToSandbox: false }), []);
    assert.deepEqual(portsOnAgent({ image: "x", poolRef: "p" }, { mode: "Shared" }), []);
  });
});

describe("portsHeldBy", () => {
  const isolated = pool({ mode: "Isolated" });
  const shared = pool({ mode: "Shared" });

  it("is none for an instance with an address of its own, whatever its pool says now", () => {
    for (const current of [isolated, shared, undefined]) {
      assert.deepEqual(portsHeldBy(sandbox({ phase: "Running", sandboxIP: "10.88.0.2" }), current), []);
    }
  });

  it("follows the pool's mode for an instance being created (Bound), Shared when the pool is unknown", () => {
    assert.deepEqual(portsHeldBy(sandbox({ phase: "Bound" }), isolated), []);
    assert.deepEqual(portsHeldBy(sandbox({ phase: "Bound" }), shared), [8080, 9090]);
    assert.deepEqual(portsHeldBy(sandbox({ phase: "Bound" }), undefined), [8080, 9090]);
  });

  it("is the exposed ports for an instance that runs without an address: it is in its agent's network", () => {
    assert.deepEqual(portsHeldBy(sandbox({ phase: "Running" }), isolated), [8080, 9090]);
    assert.deepEqual(portsHeldBy(sandbox({ phase: "Running" }, []), shared), []);
  });
});

describe("withSandboxIP", () => {
  it("sets the address, or leaves an undefined key behind where there was one, so a status write removes it", () => {
    assert.deepEqual(withSandboxIP({ phase: "Running" }, "10.88.0.2"), { phase: "Running", sandboxIP: "10.88.0.2" });
    const cleared = withSandboxIP({ phase: "Running", sandboxIP: "10.88.0.2" }, undefined);
    assert.equal("sandboxIP" in cleared, true);
    assert.equal(cleared.sandboxIP, undefined);
    assert.deepEqual(withSandboxIP({ phase: "Running" }, undefined), { phase: "Running" });
  });
});
