import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FailedPreconditionError, PermissionDeniedError } from "@fast-sandbox/api";
import { KubernetesAgentFleet } from "../fleet/kubernetes-agent-fleet.js";
import { testKubeConfig } from "../store/kube-config.fixture.js";
import { openSqliteResourceStore } from "../store/sqlite-resource-store.js";
import { applySandboxPool } from "./pool-service.js";
import { poolOf } from "./sandbox-manager.fixture.js";

describe("applySandboxPool", () => {
  it("creates a pool, then updates its spec", async () => {
    const store = openSqliteResourceStore({ path: ":memory:" });
    try {
      const created = await applySandboxPool(store, poolOf("web"));
      const updated = await applySandboxPool(store, poolOf("web", { maxSandboxesPerPod: 3 }));
      assert.equal(updated.metadata.uid, created.metadata.uid);
      assert.equal((await store.get("SandboxPool", { namespace: "default", name: "web" }))?.spec.maxSandboxesPerPod, 3);
    } finally {
      store.close();
    }
  });

  it("refuses to update a pool being deleted (its cleanup ends with the record: the apply would be reported, then vanish)", async () => {
    const store = openSqliteResourceStore({ path: ":memory:" });
    try {
      const pool = poolOf("web");
      pool.metadata.finalizers = ["sandbox.fast.io/pool-cleanup"];
      await applySandboxPool(store, pool);
      await store.delete("SandboxPool", { namespace: "default", name: "web" });
      await assert.rejects(
        applySandboxPool(store, poolOf("web", { maxSandboxesPerPod: 3 })),
        (error: unknown) =>
          error instanceof FailedPreconditionError && /pool default\/web is being deleted; apply it again once it is gone/.test(error.message),
      );
      assert.notEqual((await store.get("SandboxPool", { namespace: "default", name: "web" }))?.spec.maxSandboxesPerPod, 3);
    } finally {
      store.close();
    }
  });

  it("refuses, storing nothing, a pool the deployment refuses (Kubernetes mode's template policy and pool namespaces), saying why", async () => {
    const store = openSqliteResourceStore({ path: ":memory:" });
    // The Kubernetes fleet's own check, as the Kubernetes control plane wires it (never started: no API server is called).
    const fleet = new KubernetesAgentFleet({ kubeConfig: testKubeConfig("http://127.0.0.1:9"), logger: console, poolNamespaces: ["team-a"] });
    const admit = (pool: Parameters<typeof fleet.admitPool>[0]) => fleet.admitPool(pool);
    try {
      const hostPid = poolOf("web");
      hostPid.metadata.namespace = "team-a";
      hostPid.spec.agentTemplate = { spec: { hostPID: true } };
      await assert.rejects(
        applySandboxPool(store, hostPid, admit),
        (error: unknown) =>
          error instanceof PermissionDeniedError &&
          /^spec\.agentTemplate\.spec\.hostPID is not allowed by the deployment's agent template policy/.test(error.message),
      );
      const elsewhere = poolOf("web");
      elsewhere.metadata.namespace = "team-b";
      await assert.rejects(
        applySandboxPool(store, elsewhere, admit),
        (error: unknown) => error instanceof PermissionDeniedError && /team-b/.test(error.message),
      );
      assert.deepEqual((await store.list("SandboxPool")).items, [], "nothing stored");

      // An allowed pool is stored; a later apply that the policy refuses leaves its spec as it was.
      const allowed = poolOf("web");
      allowed.metadata.namespace = "team-a";
      await applySandboxPool(store, allowed, admit);
      await assert.rejects(applySandboxPool(store, hostPid, admit), PermissionDeniedError);
      assert.equal((await store.get("SandboxPool", { namespace: "team-a", name: "web" }))?.spec.agentTemplate, undefined);
    } finally {
      store.close();
    }
  });
});
