import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FailedPreconditionError } from "@fast-sandbox/api";
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
});
