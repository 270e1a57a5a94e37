import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { MemoryResourceStore } from "../store/memory-resource-store.js";
import { hashAccessToken } from "./access-token.js";
import { SandboxDirectory } from "./sandbox-directory.js";

/** Waits (a macrotask at a time: the store's watch delivers on one) until `done` holds. */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(done(), "in time");
}

describe("SandboxDirectory.onChange", () => {
  it("tells of a sandbox's change (its record now) and of its deletion (as last seen), until stopped", async () => {
    const store = new MemoryResourceStore();
    const directory = new SandboxDirectory({ store, logger: pino({ level: "silent" }) });
    const created = await store.create("Sandbox", {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name: "web", namespace: "team" },
      spec: { image: "busybox", poolRef: "default" },
    } satisfies Sandbox);
    const withToken = await store.updateStatus("Sandbox", {
      ...created,
      status: { phase: "Running", sandboxID: "id-1", accessTokenHash: hashAccessToken("old") },
    });
    await directory.start();
    const told: { hash: string | undefined; deleted: boolean }[] = [];
    const stop = directory.onChange((sandbox, deleted) => told.push({ hash: sandbox.status?.accessTokenHash, deleted }));
    try {
      await store.updateStatus("Sandbox", { ...withToken, status: { ...withToken.status, accessTokenHash: hashAccessToken("new") } });
      await until(() => told.length === 1);
      await store.delete("Sandbox", { namespace: "team", name: "web" });
      await until(() => told.length === 2);
      assert.deepEqual(told, [
        { hash: hashAccessToken("new"), deleted: false },
        { hash: hashAccessToken("new"), deleted: true },
      ]);
      stop();
      await store.create("Sandbox", { ...created, metadata: { name: "again", namespace: "team" } });
      await directory.lookup("none");
      assert.equal(told.length, 2, "nothing told once stopped");
    } finally {
      stop();
      directory.stop();
      await store.close();
    }
  });
});
