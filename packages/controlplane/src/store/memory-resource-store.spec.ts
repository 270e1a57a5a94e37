/** What the in-memory store adds for controller tests (its ResourceStore semantics are the contract's). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConflictError, ExpiredError, UnavailableError, type Sandbox } from "@fast-sandbox/api";
import { MemoryResourceStore } from "./memory-resource-store.js";
import type { WatchEvent } from "./resource-store.js";
import { updateWithRetry } from "./retry-on-conflict.js";

function sandbox(name: string): Sandbox {
  return { apiVersion: "sandbox.fast.io/v1alpha1", kind: "Sandbox", metadata: { name, namespace: "default" }, spec: { image: "busybox", poolRef: "pool" } };
}

const key = (name: string) => ({ namespace: "default", name });
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("MemoryResourceStore", () => {
  test("events arrive after the write has returned, never inside it", async () => {
    const store = new MemoryResourceStore();
    const seen: string[] = [];
    store.watch("Sandbox", { resourceVersion: "0" }, (event) => void seen.push(event.object.metadata.name));
    await store.create("Sandbox", sandbox("a"));
    assert.deepEqual(seen, []);
    await tick();
    assert.deepEqual(seen, ["a"]);
  });

  test("endWatches ends open watches after their queued events: cleanly, or with the error given", async () => {
    const store = new MemoryResourceStore();
    const seen: WatchEvent<Sandbox>[] = [];
    const clean = store.watch("Sandbox", { resourceVersion: "0" }, (event) => void seen.push(event));
    await store.create("Sandbox", sandbox("a"));
    store.endWatches();
    await clean.done;
    assert.deepEqual(
      seen.map((e) => e.object.metadata.name),
      ["a"],
    );
    assert.equal(store.openWatches, 0);

    const failing = store.watch("Sandbox", { resourceVersion: "1" }, () => undefined);
    store.endWatches(new UnavailableError("connection reset"));
    await assert.rejects(failing.done, UnavailableError);
  });

  test("expireWatches ends open watches with ExpiredError and makes every version seen so far too old", async () => {
    const store = new MemoryResourceStore();
    const created = await store.create("Sandbox", sandbox("a"));
    const open = store.watch("Sandbox", { resourceVersion: "0" }, () => undefined);
    store.expireWatches();
    await assert.rejects(open.done, ExpiredError);
    await assert.rejects(store.watch("Sandbox", { resourceVersion: created.metadata.resourceVersion ?? "" }, () => undefined).done, ExpiredError);
    await store.create("Sandbox", sandbox("b"));
    const listed = await store.list("Sandbox");
    const seen: string[] = [];
    store.watch("Sandbox", { resourceVersion: listed.resourceVersion }, (event) => void seen.push(event.object.metadata.name));
    await store.create("Sandbox", sandbox("c"));
    await tick();
    assert.deepEqual(seen, ["c"]);
  });

  test("failNext makes the next calls of one verb fail, in order", async () => {
    const store = new MemoryResourceStore();
    store.failNext("list", new UnavailableError("first"));
    store.failNext("list", new UnavailableError("second"));
    store.failNext("watch", new UnavailableError("watch refused"));
    await assert.rejects(store.list("Sandbox"), /first/);
    await assert.rejects(store.list("Sandbox"), /second/);
    assert.deepEqual((await store.list("Sandbox")).items, []);
    await assert.rejects(store.watch("Sandbox", { resourceVersion: "0" }, () => undefined).done, /watch refused/);
  });

  test("a closed store refuses calls and has ended its watches", async () => {
    const store = new MemoryResourceStore();
    const watch = store.watch("Sandbox", { resourceVersion: "0" }, () => undefined);
    await store.close();
    await watch.done;
    await assert.rejects(store.get("Sandbox", key("a")), UnavailableError);
    assert.throws(() => store.watch("Sandbox", { resourceVersion: "0" }, () => undefined), UnavailableError);
  });
});

describe("updateWithRetry", () => {
  test("computes the change from a fresh read and retries on conflict, never merging onto a stale copy", async () => {
    const store = new MemoryResourceStore();
    const created = await store.create("Sandbox", sandbox("a"));
    await store.updateStatus("Sandbox", { ...created, status: { phase: "Running", recreations: 1 } });
    let calls = 0;
    const written = await updateWithRetry(
      store,
      "Sandbox",
      key("a"),
      (current) => {
        calls++;
        // Another writer changes the status between the first read and its write.
        if (calls === 1) void store.updateStatus("Sandbox", { ...current, status: { ...current.status, recreations: 2 } });
        return { ...current, status: { ...current.status, phase: "Lost" } };
      },
      { status: true },
    );
    assert.equal(calls, 2);
    assert.deepEqual(written?.status, { phase: "Lost", recreations: 2 });
  });

  test("gives up after the attempts with the last ConflictError", async () => {
    const store = new MemoryResourceStore();
    await store.create("Sandbox", sandbox("a"));
    for (let i = 0; i < 3; i++) store.failNext("update", new ConflictError(`conflict ${i}`));
    await assert.rejects(
      updateWithRetry(store, "Sandbox", key("a"), (s) => ({ ...s, metadata: { ...s.metadata, labels: { x: "1" } } }), { attempts: 3 }),
      /conflict 2/,
    );
  });

  test("returns undefined for a missing object or another uid, and the current one when there is nothing to do", async () => {
    const store = new MemoryResourceStore();
    const created = await store.create("Sandbox", sandbox("a"));
    assert.equal(await updateWithRetry(store, "Sandbox", key("missing"), (s) => s), undefined);
    assert.equal(await updateWithRetry(store, "Sandbox", key("a"), (s) => s, { uid: "another" }), undefined);
    assert.deepEqual(await updateWithRetry(store, "Sandbox", key("a"), () => undefined), created);
  });
});
