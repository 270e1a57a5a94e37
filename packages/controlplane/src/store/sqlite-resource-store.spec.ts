import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, copyFileSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, test } from "node:test";
import Database from "better-sqlite3";
import {
  AlreadyExistsError,
  ConflictError,
  ExpiredError,
  FailedPreconditionError,
  NotFoundError,
  UnavailableError,
  ValidationError,
  type Sandbox,
  type SandboxPool,
} from "@fast-sandbox/api";
import { FakeClock } from "../controller/clock.js";
import type { WatchEvent } from "./resource-store.js";
import {
  RESOURCE_VERSION_GAP,
  SQLITE_STORE_SCHEMA_VERSION,
  jsonEqual,
  openSqliteResourceStore,
  type SqliteResourceStore,
  type SqliteResourceStoreOptions,
} from "./sqlite-resource-store.js";

const NOW = new Date("2026-01-02T03:04:05.678Z");

function sandbox(name: string, options: { namespace?: string; labels?: Record<string, string>; image?: string } = {}): Sandbox {
  return {
    apiVersion: "sandbox.fast.io/v1alpha1",
    kind: "Sandbox",
    metadata: {
      name,
      namespace: options.namespace ?? "default",
      ...(options.labels ? { labels: options.labels } : {}),
    },
    spec: { image: options.image ?? "python:3.12", poolRef: "pool" },
  };
}

function pool(name: string, namespace = "default"): SandboxPool {
  return {
    apiVersion: "sandbox.fast.io/v1alpha1",
    kind: "SandboxPool",
    metadata: { name, namespace },
    spec: { capacity: { poolMin: 1, poolMax: 3 }, maxSandboxesPerPod: 10 },
  };
}

const key = (name: string, namespace = "default") => ({ namespace, name });

/** Collects a watch's events; lets tests await replays, which arrive from a microtask. */
function recorder<T>() {
  const events: WatchEvent<T>[] = [];
  const summary = () => events.map((e) => `${e.type} ${(e.object as Sandbox).metadata.name}@${(e.object as Sandbox).metadata.resourceVersion}`);
  return { events, summary, onEvent: (event: WatchEvent<T>) => void events.push(event) };
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("SqliteResourceStore", () => {
  let directory: string;
  let path: string;
  const opened: SqliteResourceStore[] = [];

  const open = (options: Partial<SqliteResourceStoreOptions> = {}): SqliteResourceStore => {
    const store = openSqliteResourceStore({ path, clock: new FakeClock(NOW), ...options });
    opened.push(store);
    return store;
  };

  beforeEach(() => {
    directory = mkdtempSync(join(tmpdir(), "fsb-store-"));
    path = join(directory, "state.db");
  });

  afterEach(async () => {
    for (const store of opened.splice(0)) await store.close();
    rmSync(directory, { recursive: true, force: true });
  });

  describe("create and read", () => {
    test("create sets uid, resourceVersion, generation 1 and a creationTimestamp from the clock", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a"));
      assert.match(created.metadata.uid ?? "", /^[0-9a-f-]{36}$/);
      assert.equal(created.metadata.resourceVersion, "1");
      assert.equal(created.metadata.generation, 1);
      assert.equal(created.metadata.creationTimestamp, "2026-01-02T03:04:05Z");
      assert.deepEqual(await store.get("Sandbox", key("a")), created);
    });

    test("create ignores status and identity fields the caller sent", async () => {
      const store = open();
      const input = sandbox("a");
      input.status = { phase: "Running" };
      input.metadata.uid = "mine";
      input.metadata.resourceVersion = "77";
      input.metadata.generation = 9;
      input.metadata.deletionTimestamp = "2020-01-01T00:00:00Z";
      const created = await store.create("Sandbox", input);
      assert.equal(created.status, undefined);
      assert.notEqual(created.metadata.uid, "mine");
      assert.equal(created.metadata.resourceVersion, "1");
      assert.equal(created.metadata.generation, 1);
      assert.equal(created.metadata.deletionTimestamp, undefined);
    });

    test("get returns undefined for a missing object", async () => {
      const store = open();
      assert.equal(await store.get("Sandbox", key("missing")), undefined);
    });

    test("returned objects are copies: mutating them or the input changes nothing stored", async () => {
      const store = open();
      const input = sandbox("a", { labels: { team: "x" } });
      const created = await store.create("Sandbox", input);
      input.spec.image = "changed";
      created.spec.image = "changed";
      const read = await store.get("Sandbox", key("a"));
      assert.ok(read);
      read.metadata.labels = { team: "y" };
      assert.equal((await store.get("Sandbox", key("a")))?.spec.image, "python:3.12");
      assert.deepEqual((await store.get("Sandbox", key("a")))?.metadata.labels, { team: "x" });
    });

    test("a taken name is AlreadyExistsError; the same name in another namespace or kind is fine", async () => {
      const store = open();
      await store.create("Sandbox", sandbox("a"));
      await assert.rejects(store.create("Sandbox", sandbox("a")), (error: unknown) => {
        assert.ok(error instanceof AlreadyExistsError);
        assert.match(error.message, /sandbox default\/a already exists/);
        return true;
      });
      await store.create("Sandbox", sandbox("a", { namespace: "other" }));
      await store.create("SandboxPool", pool("a"));
    });

    test("list sorts by the key namespace/name, filters by namespace and labels, and returns the store's resourceVersion", async () => {
      const store = open();
      await store.create("Sandbox", sandbox("b", { namespace: "team-b", labels: { app: "x" } }));
      await store.create("Sandbox", sandbox("c", { labels: { app: "x", tier: "web" } }));
      await store.create("Sandbox", sandbox("a", { labels: { app: "y" } }));
      await store.create("Sandbox", sandbox("a", { namespace: "team-a" }));
      await store.create("SandboxPool", pool("pool"));

      const all = await store.list("Sandbox");
      assert.deepEqual(
        all.items.map((s) => `${s.metadata.namespace}/${s.metadata.name}`),
        ["default/a", "default/c", "team-a/a", "team-b/b"],
      );
      assert.equal(all.resourceVersion, "5");

      const inDefault = await store.list("Sandbox", { namespace: "default" });
      assert.deepEqual(
        inDefault.items.map((s) => s.metadata.name),
        ["a", "c"],
      );

      const appX = await store.list("Sandbox", { labelSelector: { app: "x" } });
      assert.deepEqual(
        appX.items.map((s) => s.metadata.name),
        ["c", "b"],
      );
      const web = await store.list("Sandbox", { labelSelector: { app: "x", tier: "web" } });
      assert.deepEqual(
        web.items.map((s) => s.metadata.name),
        ["c"],
      );
      const none = await store.list("Sandbox", { namespace: "team-b", labelSelector: { app: "y" } });
      assert.deepEqual(none.items, []);

      const pools = await store.list("SandboxPool");
      assert.deepEqual(
        pools.items.map((p) => p.metadata.name),
        ["pool"],
      );
    });
  });

  describe("validation", () => {
    test("an object without namespace is rejected naming metadata.namespace", async () => {
      const store = open();
      const input = sandbox("a");
      delete input.metadata.namespace;
      await assert.rejects(store.create("Sandbox", input), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.equal(error.field, "metadata.namespace");
        return true;
      });
    });

    test("invalid objects are rejected with a message naming the field, and nothing is stored", async () => {
      const store = open();
      const cases: [unknown, string][] = [
        [{ ...sandbox("a"), spec: { image: "", poolRef: "pool" } }, "spec.image"],
        [{ ...sandbox("a"), spec: { image: "x", poolRef: "pool", exposedPorts: [70000] } }, "spec.exposedPorts[0]"],
        [{ ...sandbox("Bad_Name") }, "metadata.name"],
        [{ ...sandbox("a"), spec: { image: "x", poolRef: "pool", surprise: true } }, "spec.surprise"],
      ];
      for (const [input, field] of cases) {
        await assert.rejects(store.create("Sandbox", input as Sandbox), (error: unknown) => {
          assert.ok(error instanceof ValidationError, String(error));
          // startsWith: the API's validator currently names unknown fields "spec.surprise.?" (reported).
          assert.ok(error.field.startsWith(field), `${error.field} should name ${field}`);
          assert.ok(error.message.startsWith(`${error.field}: `), error.message);
          return true;
        });
      }
      const badPool = pool("p");
      badPool.spec.capacity = { poolMin: 5, poolMax: 1 };
      await assert.rejects(store.create("SandboxPool", badPool), /spec\.capacity\.poolMin: 5 is greater than poolMax 1/);
      assert.deepEqual((await store.list("Sandbox")).items, []);
      assert.equal((await store.list("Sandbox")).resourceVersion, "0");
    });

    test("a Sandbox stored under the SandboxPool kind is rejected", async () => {
      const store = open();
      await assert.rejects(store.create("SandboxPool", sandbox("a") as unknown as SandboxPool), ValidationError);
    });

    test("update validates the new object and keeps the stored one when it is invalid", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a"));
      await assert.rejects(store.update("Sandbox", { ...created, spec: { ...created.spec, workingDir: "relative" } }), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.equal(error.field, "spec.workingDir");
        return true;
      });
      assert.deepEqual(await store.get("Sandbox", key("a")), created);
    });

    test("updateStatus validates the status", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a"));
      const bad = { ...created, status: { phase: "Dancing" } } as unknown as Sandbox;
      await assert.rejects(store.updateStatus("Sandbox", bad), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.equal(error.field, "status.phase");
        return true;
      });
    });
  });

  describe("resourceVersion and optimistic concurrency", () => {
    test("every write bumps one store-wide resourceVersion, across kinds", async () => {
      const store = open();
      const a = await store.create("Sandbox", sandbox("a"));
      const p = await store.create("SandboxPool", pool("p"));
      const a2 = await store.update("Sandbox", { ...a, metadata: { ...a.metadata, labels: { x: "1" } } });
      const a3 = await store.updateStatus("Sandbox", { ...a2, status: { phase: "Running" } });
      assert.deepEqual(
        [a, p, a2, a3].map((o) => o.metadata.resourceVersion),
        ["1", "2", "3", "4"],
      );
      assert.equal((await store.list("SandboxPool")).resourceVersion, "4");
    });

    test("an update with a stale resourceVersion is ConflictError and changes nothing", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a"));
      await store.update("Sandbox", { ...created, spec: { ...created.spec, image: "v2" } });
      await assert.rejects(store.update("Sandbox", { ...created, spec: { ...created.spec, image: "v3" } }), (error: unknown) => {
        assert.ok(error instanceof ConflictError);
        assert.equal(error.message, "sandbox default/a was modified (resourceVersion 2, you sent 1); read it again and retry");
        return true;
      });
      await assert.rejects(store.updateStatus("Sandbox", { ...created, status: { phase: "Running" } }), ConflictError);
      const stored = await store.get("Sandbox", key("a"));
      assert.equal(stored?.spec.image, "v2");
      assert.equal(stored?.status, undefined);
    });

    test("an empty or absent resourceVersion is ValidationError unless the write is explicitly unconditional", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a"));
      await store.update("Sandbox", { ...created, spec: { ...created.spec, image: "v2" } });
      const blind = sandbox("a", { image: "v3" });
      await assert.rejects(store.update("Sandbox", blind), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.equal(error.field, "metadata.resourceVersion");
        assert.match(error.message, /is required to update sandbox default\/a: send the resourceVersion you read/);
        return true;
      });
      await assert.rejects(store.updateStatus("Sandbox", { ...blind, status: { phase: "Running" } }), ValidationError);
      assert.equal((await store.update("Sandbox", blind, { unconditional: true })).spec.image, "v3");
      const empty = { ...blind, metadata: { ...blind.metadata, resourceVersion: "" }, spec: { ...blind.spec, image: "v4" } };
      assert.equal((await store.update("Sandbox", empty, { unconditional: true })).spec.image, "v4");
      const stale = { ...created, status: { phase: "Running" as const } };
      assert.equal((await store.updateStatus("Sandbox", stale, { unconditional: true })).status?.phase, "Running");
    });

    test("an unconditional update naming another uid (deleted and created again) is ConflictError", async () => {
      const store = open();
      const first = await store.create("Sandbox", sandbox("a"));
      await store.delete("Sandbox", key("a"));
      await store.create("Sandbox", sandbox("a"));
      await assert.rejects(store.update("Sandbox", first, { unconditional: true }), /was deleted and created again/);
      await assert.rejects(store.updateStatus("Sandbox", first, { unconditional: true }), ConflictError);
    });

    test("two updates from the same read: exactly one wins", async () => {
      const store = open();
      const read = await store.create("Sandbox", sandbox("a"));
      const results = await Promise.allSettled([
        store.update("Sandbox", { ...read, spec: { ...read.spec, image: "from-first" } }),
        store.update("Sandbox", { ...read, spec: { ...read.spec, image: "from-second" } }),
        store.updateStatus("Sandbox", { ...read, status: { phase: "Running" } }),
      ]);
      const fulfilled = results.filter((r) => r.status === "fulfilled");
      const rejected = results.filter((r) => r.status === "rejected");
      assert.equal(fulfilled.length, 1);
      assert.equal(rejected.length, 2);
      for (const r of rejected) assert.ok(r.reason instanceof ConflictError);
      assert.equal((await store.get("Sandbox", key("a")))?.spec.image, "from-first");
    });

    test("writes to a missing object are NotFoundError", async () => {
      const store = open();
      await assert.rejects(store.update("Sandbox", sandbox("nope"), { unconditional: true }), NotFoundError);
      await assert.rejects(
        store.updateStatus("Sandbox", { ...sandbox("nope"), metadata: { ...sandbox("nope").metadata, resourceVersion: "1" } }),
        /sandbox default\/nope not found/,
      );
      await assert.rejects(store.delete("Sandbox", key("nope")), NotFoundError);
    });
  });

  describe("spec, status and generation", () => {
    test("update writes spec and metadata but keeps the stored status", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a"));
      const running = await store.updateStatus("Sandbox", { ...created, status: { phase: "Running", assignedPod: "agent-1" } });
      const updated = await store.update("Sandbox", {
        ...running,
        metadata: { ...running.metadata, labels: { team: "x" }, annotations: { note: "n" } },
        spec: { ...running.spec, image: "v2" },
        status: { phase: "Failed" },
      });
      assert.deepEqual(updated.status, { phase: "Running", assignedPod: "agent-1" });
      assert.deepEqual(updated.metadata.labels, { team: "x" });
      assert.deepEqual(updated.metadata.annotations, { note: "n" });
      assert.equal(updated.spec.image, "v2");
      assert.deepEqual(await store.get("Sandbox", key("a")), updated);
    });

    test("updateStatus writes status only and returns the new resourceVersion", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a"));
      const result = await store.updateStatus("Sandbox", {
        ...created,
        metadata: { ...created.metadata, labels: { sneaky: "yes" }, finalizers: ["x"] },
        spec: { ...created.spec, image: "sneaky" },
        status: { phase: "Bound" },
      });
      assert.equal(result.metadata.resourceVersion, "2");
      assert.equal(result.metadata.generation, 1);
      assert.equal(result.metadata.labels, undefined);
      assert.equal(result.metadata.finalizers, undefined);
      assert.equal(result.spec.image, "python:3.12");
      assert.deepEqual(result.status, { phase: "Bound" });
      assert.deepEqual(await store.get("Sandbox", key("a")), result);
    });

    test("generation bumps only when the spec changes", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a"));
      const relabelled = await store.update("Sandbox", { ...created, metadata: { ...created.metadata, labels: { a: "b" } } });
      assert.equal(relabelled.metadata.generation, 1);
      assert.equal(relabelled.metadata.resourceVersion, "2");
      const withStatus = await store.updateStatus("Sandbox", { ...relabelled, status: { phase: "Running" } });
      assert.equal(withStatus.metadata.generation, 1);
      const respecced = await store.update("Sandbox", { ...withStatus, spec: { ...withStatus.spec, args: ["-c", "1"] } });
      assert.equal(respecced.metadata.generation, 2);
      const again = await store.update("Sandbox", { ...respecced, spec: { ...respecced.spec, args: ["-c", "2"] } });
      assert.equal(again.metadata.generation, 3);
    });

    test("an update or status write that changes nothing keeps the resourceVersion and emits no event", async () => {
      const store = open();
      const created = await store.create("Sandbox", sandbox("a", { labels: { x: "1" } }));
      const watch = recorder<Sandbox>();
      store.watch("Sandbox", { resourceVersion: created.metadata.resourceVersion ?? "" }, watch.onEvent);
      // Same spec with keys in another order, same labels, empty finalizer list: all "no change".
      const reordered = {
        ...created,
        metadata: { ...created.metadata, finalizers: [] },
        spec: { poolRef: "pool", image: "python:3.12" },
      } as Sandbox;
      const same = await store.update("Sandbox", reordered);
      assert.equal(same.metadata.resourceVersion, "1");
      assert.equal(same.metadata.generation, 1);
      const sameStatus = await store.updateStatus("Sandbox", created);
      assert.equal(sameStatus.metadata.resourceVersion, "1");
      await tick();
      assert.deepEqual(watch.events, []);
    });
  });

  describe("delete and finalizers", () => {
    test("delete without finalizers removes the object and returns undefined", async () => {
      const store = open();
      await store.create("Sandbox", sandbox("a"));
      assert.equal(await store.delete("Sandbox", key("a")), undefined);
      assert.equal(await store.get("Sandbox", key("a")), undefined);
      assert.equal((await store.list("Sandbox")).resourceVersion, "2");
      await store.create("Sandbox", sandbox("a"));
    });

    test("delete with finalizers sets deletionTimestamp once; removing the last finalizer deletes", async () => {
      const clock = new FakeClock(NOW);
      const store = open({ clock });
      const setTime = (iso: string) => clock.advance(Date.parse(iso) - clock.now().getTime());
      const created = await store.create("Sandbox", { ...sandbox("a"), metadata: { ...sandbox("a").metadata, finalizers: ["fsb/a", "fsb/b"] } });
      setTime("2026-01-02T04:00:00Z");
      const marked = await store.delete("Sandbox", key("a"));
      assert.ok(marked);
      assert.equal(marked.metadata.deletionTimestamp, "2026-01-02T04:00:00Z");
      assert.equal(marked.metadata.resourceVersion, "2");
      // As on Kubernetes: the start of deletion bumps generation.
      assert.equal(marked.metadata.generation, (created.metadata.generation ?? 0) + 1);

      setTime("2026-01-02T05:00:00Z");
      const again = await store.delete("Sandbox", key("a"));
      assert.deepEqual(again, marked);

      const oneLeft = await store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, finalizers: ["fsb/b"] } });
      assert.deepEqual(oneLeft.metadata.finalizers, ["fsb/b"]);
      assert.ok(await store.get("Sandbox", key("a")));

      const last = await store.update("Sandbox", { ...oneLeft, metadata: { ...oneLeft.metadata, finalizers: [] } });
      assert.equal(last.metadata.resourceVersion, "4");
      assert.equal(await store.get("Sandbox", key("a")), undefined);
    });

    test("an object being deleted accepts no new finalizers", async () => {
      const store = open();
      await store.create("Sandbox", { ...sandbox("a"), metadata: { ...sandbox("a").metadata, finalizers: ["fsb/a"] } });
      const marked = await store.delete("Sandbox", key("a"));
      assert.ok(marked);
      await assert.rejects(store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, finalizers: ["fsb/a", "fsb/late"] } }), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.equal(error.field, "metadata.finalizers");
        assert.match(error.message, /cannot add finalizer "fsb\/late": sandbox default\/a is being deleted/);
        return true;
      });
      // Changing other metadata while being deleted is still allowed.
      const relabelled = await store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, labels: { x: "1" } } });
      assert.deepEqual(relabelled.metadata.finalizers, ["fsb/a"]);
      assert.equal(relabelled.metadata.deletionTimestamp, marked.metadata.deletionTimestamp);
    });

    test("update cannot set or clear deletionTimestamp", async () => {
      const store = open();
      const created = await store.create("Sandbox", { ...sandbox("a"), metadata: { ...sandbox("a").metadata, finalizers: ["f"] } });
      const tried = await store.update("Sandbox", {
        ...created,
        metadata: { ...created.metadata, deletionTimestamp: "2026-01-01T00:00:00Z", labels: { a: "b" } },
      });
      assert.equal(tried.metadata.deletionTimestamp, undefined);
    });
  });

  describe("watch", () => {
    test("replays the events after the given version in order, then delivers live ones", async () => {
      const store = open();
      const a = await store.create("Sandbox", sandbox("a"));
      await store.create("Sandbox", sandbox("b"));
      await store.updateStatus("Sandbox", { ...a, status: { phase: "Running" } });
      await store.create("SandboxPool", pool("p"));
      await store.delete("Sandbox", key("b"));

      const watch = recorder<Sandbox>();
      const handle = store.watch("Sandbox", { resourceVersion: "1" }, watch.onEvent);
      await tick();
      assert.deepEqual(watch.summary(), ["ADDED b@2", "MODIFIED a@3", "DELETED b@5"]);

      await store.create("Sandbox", sandbox("c"));
      assert.deepEqual(watch.summary().slice(3), ["ADDED c@6"], "live events arrive before the write resolves");

      handle.stop();
      await store.create("Sandbox", sandbox("d"));
      await tick();
      assert.equal(watch.events.length, 4);
    });

    test("a watch from the list's resourceVersion misses nothing and repeats nothing", async () => {
      const store = open();
      await store.create("Sandbox", sandbox("a"));
      const listed = await store.list("Sandbox");
      const watch = recorder<Sandbox>();
      store.watch("Sandbox", { resourceVersion: listed.resourceVersion }, watch.onEvent);
      await store.create("Sandbox", sandbox("b"));
      await tick();
      assert.deepEqual(watch.summary(), ["ADDED b@2"]);
    });

    test("the DELETED event carries the last state with a new resourceVersion", async () => {
      const store = open();
      const created = await store.create("Sandbox", { ...sandbox("a"), metadata: { ...sandbox("a").metadata, finalizers: ["f"] } });
      const running = await store.updateStatus("Sandbox", { ...created, status: { phase: "Running" } });
      const watch = recorder<Sandbox>();
      store.watch("Sandbox", { resourceVersion: running.metadata.resourceVersion ?? "" }, watch.onEvent);
      const marked = await store.delete("Sandbox", key("a"));
      assert.ok(marked);
      await store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, finalizers: [] } });
      assert.deepEqual(watch.summary(), ["MODIFIED a@3", "DELETED a@4"]);
      const deleted = watch.events[1]?.object;
      assert.deepEqual(deleted?.status, { phase: "Running" });
      assert.equal(deleted?.metadata.deletionTimestamp, marked.metadata.deletionTimestamp);
      assert.equal(deleted?.metadata.finalizers, undefined);

      await store.create("Sandbox", sandbox("b"));
      await store.delete("Sandbox", key("b"));
      assert.deepEqual(watch.summary().slice(2), ["ADDED b@5", "DELETED b@6"]);
    });

    test("filters by namespace and labels; objects entering or leaving the selector arrive as ADDED/DELETED", async () => {
      const store = open();
      const byNamespace = recorder<Sandbox>();
      const byLabel = recorder<Sandbox>();
      store.watch("Sandbox", { resourceVersion: "0", namespace: "team" }, byNamespace.onEvent);
      store.watch("Sandbox", { resourceVersion: "0", labelSelector: { app: "web" } }, byLabel.onEvent);

      await store.create("Sandbox", sandbox("in-team", { namespace: "team" }));
      const plain = await store.create("Sandbox", sandbox("plain"));
      const web = await store.create("Sandbox", sandbox("web", { labels: { app: "web" } }));
      const joined = await store.update("Sandbox", { ...plain, metadata: { ...plain.metadata, labels: { app: "web" } } });
      await store.updateStatus("Sandbox", { ...joined, status: { phase: "Running" } });
      await store.update("Sandbox", { ...web, metadata: { ...web.metadata, labels: { app: "db" } } });
      await store.delete("Sandbox", key("web"));

      assert.deepEqual(byNamespace.summary(), ["ADDED in-team@1"]);
      assert.deepEqual(byLabel.summary(), ["ADDED web@3", "ADDED plain@4", "MODIFIED plain@5", "DELETED web@6"]);
    });

    test("a too-old resourceVersion is ExpiredError; the current one is always accepted", async () => {
      const store = open({ watchHistory: 3 });
      for (const name of ["a", "b", "c", "d", "e"]) await store.create("Sandbox", sandbox(name));
      // Versions 3, 4, 5 are kept: a watch from 2 or later can be served, 1 cannot.
      await assert.rejects(store.watch("Sandbox", { resourceVersion: "1" }, () => {}).done, (error: unknown) => {
        assert.ok(error instanceof ExpiredError);
        assert.equal(error.code, "failed_precondition");
        assert.match(error.message, /too old to replay.*list again/);
        return true;
      });
      const watch = recorder<Sandbox>();
      const fromTwo = store.watch("Sandbox", { resourceVersion: "2" }, watch.onEvent);
      const fromFive = store.watch("Sandbox", { resourceVersion: "5" }, () => {});
      await tick();
      assert.deepEqual(watch.summary(), ["ADDED c@3", "ADDED d@4", "ADDED e@5"]);
      fromTwo.stop();
      fromFive.stop();
      await Promise.all([fromTwo.done, fromFive.done]);

      const noHistory = open({ path: join(directory, "no-history.db"), watchHistory: 0 });
      await noHistory.create("Sandbox", sandbox("a"));
      await assert.rejects(noHistory.watch("Sandbox", { resourceVersion: "0" }, () => {}).done, ExpiredError);
      noHistory.watch("Sandbox", { resourceVersion: "1" }, () => {});
    });

    test("keeps the last 1 000 events by default (a bounded ring: memory does not grow with the store)", async () => {
      const store = open();
      const first = await store.create("Sandbox", sandbox("counter"));
      let current = first;
      for (let i = 0; i < 1_000; i++) current = await store.updateStatus("Sandbox", { ...current, status: { phase: i % 2 === 0 ? "Running" : "Pending" } });
      const start = Number(first.metadata.resourceVersion);
      // 1 001 writes: the one right after `first` is still replayable, `first`'s own predecessor is not.
      const replayed = recorder<Sandbox>();
      const fromFirst = store.watch("Sandbox", { resourceVersion: String(start) }, replayed.onEvent);
      await tick();
      assert.equal(replayed.summary().length, 1_000);
      fromFirst.stop();
      await assert.rejects(store.watch("Sandbox", { resourceVersion: String(start - 1) }, () => {}).done, ExpiredError);
    });

    test("a version newer than the store ends the watch with ExpiredError and a malformed one is ValidationError", async () => {
      const store = open();
      await assert.rejects(store.watch("Sandbox", { resourceVersion: "9" }, () => {}).done, ExpiredError);
      assert.throws(() => store.watch("Sandbox", { resourceVersion: "" }, () => {}), ValidationError);
      assert.throws(() => store.watch("Sandbox", { resourceVersion: "abc" }, () => {}), ValidationError);
    });

    test("closing the store ends its watches cleanly", async () => {
      const store = open();
      const watch = store.watch("Sandbox", { resourceVersion: "0" }, () => {});
      await store.close();
      await watch.done;
    });

    test("a listener that throws breaks neither the store nor other listeners", async () => {
      const warnings: string[] = [];
      const store = open({ logger: { warn: (_bindings, message) => void warnings.push(message) } });
      const healthy = recorder<Sandbox>();
      store.watch("Sandbox", { resourceVersion: "0" }, () => {
        throw new Error("listener bug");
      });
      store.watch("Sandbox", { resourceVersion: "0" }, () => Promise.reject(new Error("async listener bug")) as unknown as void);
      store.watch("Sandbox", { resourceVersion: "0" }, healthy.onEvent);
      await store.create("Sandbox", sandbox("a"));
      await store.create("Sandbox", sandbox("b"));
      await tick();
      assert.deepEqual(healthy.summary(), ["ADDED a@1", "ADDED b@2"]);
      assert.equal(warnings.length, 4);
      assert.equal((await store.list("Sandbox")).items.length, 2);
    });

    test("events are delivered after commit: a separate connection already sees the write", async () => {
      const store = open();
      const reader = new Database(path, { readonly: true });
      try {
        const seen: unknown[] = [];
        store.watch("Sandbox", { resourceVersion: "0" }, (event) => {
          seen.push(reader.prepare("SELECT resource_version FROM objects WHERE name = ?").get(event.object.metadata.name));
        });
        await store.create("Sandbox", sandbox("a"));
        assert.deepEqual(seen, [{ resource_version: 1 }]);
      } finally {
        reader.close();
      }
    });

    test("a listener that writes does not reorder events for other listeners", async () => {
      const store = open();
      const observer = recorder<Sandbox>();
      store.watch("Sandbox", { resourceVersion: "0" }, (event) => {
        if (event.type === "ADDED" && event.object.metadata.name === "a") {
          void store.create("Sandbox", sandbox("from-listener"));
        }
      });
      store.watch("Sandbox", { resourceVersion: "0" }, observer.onEvent);
      await store.create("Sandbox", sandbox("a"));
      await store.create("Sandbox", sandbox("b"));
      await tick();
      assert.deepEqual(observer.summary(), ["ADDED a@1", "ADDED from-listener@2", "ADDED b@3"]);
    });

    test("each listener gets its own copy of the object", async () => {
      const store = open();
      const second = recorder<Sandbox>();
      store.watch("Sandbox", { resourceVersion: "0" }, (event) => {
        event.object.spec.image = "mutated";
      });
      store.watch("Sandbox", { resourceVersion: "0" }, second.onEvent);
      await store.create("Sandbox", sandbox("a"));
      assert.equal(second.events[0]?.object.spec.image, "python:3.12");
      assert.equal((await store.get("Sandbox", key("a")))?.spec.image, "python:3.12");
    });
  });

  describe("persistence and schema", () => {
    test("reopening the file keeps objects and the resourceVersion, and new versions are higher", async () => {
      const first = open();
      const a = await first.create("Sandbox", sandbox("a"));
      await first.updateStatus("Sandbox", { ...a, status: { phase: "Running" } });
      await first.create("Sandbox", sandbox("b"));
      await first.delete("Sandbox", key("b")); // version 4 leaves no row behind: the counter must still remember it
      await first.close();

      const second = open();
      const listed = await second.list("Sandbox");
      // Each open moves the counter ahead (see the next test).
      const reopened = 4 + RESOURCE_VERSION_GAP;
      assert.equal(listed.resourceVersion, String(reopened));
      assert.deepEqual(
        listed.items.map((s) => [s.metadata.name, s.status?.phase, s.metadata.uid]),
        [["a", "Running", a.metadata.uid]],
      );
      const c = await second.create("Sandbox", sandbox("c"));
      assert.equal(c.metadata.resourceVersion, String(reopened + 1));

      // Events from before the restart are gone: an old version expires, the current one works.
      await assert.rejects(second.watch("Sandbox", { resourceVersion: "4" }, () => {}).done, ExpiredError);
      const watch = recorder<Sandbox>();
      second.watch("Sandbox", { resourceVersion: String(reopened) }, watch.onEvent);
      await tick();
      assert.deepEqual(watch.summary(), [`ADDED c@${reopened + 1}`]);
    });

    test("a version handed out by writes a power loss undid is never handed out again", async () => {
      const first = open();
      await first.create("Sandbox", sandbox("a"));
      const lost = await first.create("Sandbox", sandbox("lost"));
      await first.close();
      // As a power loss leaves the file when the WAL's last commits never reached the disk.
      const db = new Database(path);
      db.prepare("DELETE FROM objects WHERE name = ?").run("lost");
      db.prepare("UPDATE store_state SET resource_version = resource_version - 1 WHERE id = 1").run();
      db.close();
      const second = open();
      const other = await second.create("Sandbox", sandbox("other"));
      assert.ok(
        Number(other.metadata.resourceVersion) > Number(lost.metadata.resourceVersion),
        `${other.metadata.resourceVersion} after ${lost.metadata.resourceVersion}`,
      );
      // A client still holding the lost version cannot take it for the new content.
      await assert.rejects(
        second.update("Sandbox", { ...other, metadata: { ...other.metadata, resourceVersion: lost.metadata.resourceVersion } }),
        ConflictError,
      );
    });

    test("a new database whose first writes a power loss undid never hands their versions out again", async () => {
      const first = open();
      // What open() committed was synced; the writes after it are in the WAL only (synchronous = NORMAL).
      const synced = statSync(`${path}-wal`).size;
      const lost = await first.create("Sandbox", sandbox("a"));
      const lastLost = await first.updateStatus("Sandbox", { ...lost, status: { phase: "Running" } });
      // The file as a power loss leaves it: the WAL's unsynced tail is gone, the store_state counter reads 0 again.
      const crashed = join(directory, "crashed.db");
      copyFileSync(path, crashed);
      copyFileSync(`${path}-wal`, `${crashed}-wal`);
      truncateSync(`${crashed}-wal`, synced);
      await first.close();
      const second = open({ path: crashed });
      assert.deepEqual((await second.list("Sandbox")).items, []);
      const other = await second.create("Sandbox", sandbox("a", { image: "node:22" }));
      assert.ok(
        Number(other.metadata.resourceVersion) > Number(lastLost.metadata.resourceVersion),
        `${other.metadata.resourceVersion} after ${lastLost.metadata.resourceVersion}`,
      );
      await assert.rejects(
        second.update("Sandbox", { ...other, metadata: { ...other.metadata, resourceVersion: lost.metadata.resourceVersion } }),
        ConflictError,
      );
    });

    test("an object stored before a rule that now refuses its spec still takes its status and the removal of its finalizers; a change to its spec is refused", async () => {
      const first = open();
      const created = await first.create("Sandbox", { ...sandbox("old"), metadata: { ...sandbox("old").metadata, finalizers: ["sandbox.fast.io/cleanup"] } });
      await first.close();
      // As an older control plane, whose checks accepted it, left it.
      const db = new Database(path);
      db.prepare("UPDATE objects SET spec_json = ? WHERE name = ?").run(JSON.stringify({ image: "Registry.Example/Team/App:1", poolRef: "pool" }), "old");
      db.close();
      const store = open();
      const stored = await store.get("Sandbox", key("old"));
      assert.ok(stored);
      const withStatus = await store.updateStatus("Sandbox", { ...stored, status: { phase: "Running" } });
      assert.equal(withStatus.status?.phase, "Running");
      await assert.rejects(store.update("Sandbox", { ...withStatus, spec: { ...withStatus.spec, image: "Another Bad:1" } }), ValidationError);
      await store.delete("Sandbox", key("old"));
      const deleting = await store.get("Sandbox", key("old"));
      assert.ok(deleting?.metadata.deletionTimestamp);
      await store.update("Sandbox", { ...deleting, metadata: { ...deleting.metadata, finalizers: [] } });
      assert.equal(await store.get("Sandbox", key("old")), undefined, "gone with its last finalizer");
      assert.equal(created.metadata.name, "old");
    });

    test("a new database is in WAL mode at the current schema version", async () => {
      const store = open();
      await store.close();
      const db = new Database(path, { readonly: true });
      try {
        assert.equal(db.pragma("user_version", { simple: true }), SQLITE_STORE_SCHEMA_VERSION);
        assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
      } finally {
        db.close();
      }
    });

    test("a database of a release before the key-order index gets it, then lists and pages in key order, its schema version unchanged", async () => {
      const old = open();
      for (const [namespace, name] of [
        ["team", "x"],
        ["team-b", "y"],
        ["team0", "z"],
        ["team", "w"],
      ] as const) {
        await old.create("Sandbox", sandbox(name, { namespace }));
      }
      await old.close();
      // As a release before the index left the file: the same schema version and tables, no index.
      const db = new Database(path);
      db.exec("DROP INDEX objects_by_key");
      db.close();

      const store = open();
      const keys = (items: Sandbox[]) => items.map((s) => `${s.metadata.namespace}/${s.metadata.name}`);
      const inKeyOrder = ["team-b/y", "team/w", "team/x", "team0/z"];
      assert.deepEqual(keys((await store.list("Sandbox")).items), inKeyOrder);
      const paged: string[] = [];
      let next: string | undefined;
      do {
        const page = await store.list("Sandbox", { limit: 1, ...(next ? { continue: next } : {}) });
        paged.push(...keys(page.items));
        next = page.continue;
      } while (next);
      assert.deepEqual(paged, inKeyOrder);
      // Opening a file it did not create moves the counter ahead, as any reopen does.
      assert.equal((await store.list("Sandbox")).resourceVersion, String(4 + RESOURCE_VERSION_GAP));
      await store.close();

      const migrated = new Database(path, { readonly: true });
      try {
        assert.equal(migrated.pragma("user_version", { simple: true }), SQLITE_STORE_SCHEMA_VERSION);
        assert.ok(migrated.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'objects_by_key'").get());
      } finally {
        migrated.close();
      }
    });

    test("a database with a newer schema version is refused with a clear error and left untouched", async () => {
      await open().close();
      const db = new Database(path);
      db.pragma(`user_version = ${SQLITE_STORE_SCHEMA_VERSION + 1}`);
      db.close();
      assert.throws(
        () => open(),
        (error: unknown) => {
          assert.ok(error instanceof FailedPreconditionError);
          assert.match(
            error.message,
            new RegExp(
              `schema version ${SQLITE_STORE_SCHEMA_VERSION + 1}, but this control plane knows versions up to ${SQLITE_STORE_SCHEMA_VERSION}; run a newer Fast Sandbox`,
            ),
          );
          return true;
        },
      );
      const after = new Database(path, { readonly: true });
      assert.equal(after.pragma("user_version", { simple: true }), SQLITE_STORE_SCHEMA_VERSION + 1);
      after.close();
    });

    test("a database this process cannot write is refused at open with FailedPrecondition, saying to make it writable", async () => {
      await open().close();
      chmodSync(path, 0o444);
      chmodSync(directory, 0o555);
      try {
        // Root writes whatever the modes say: then the store opens in a child process as nobody (65534).
        const asRoot = process.getuid?.() === 0;
        const probe = `
          const { openSqliteResourceStore } = await import(${JSON.stringify(new URL("./sqlite-resource-store.ts", import.meta.url).href)});
          try {
            openSqliteResourceStore({ path: ${JSON.stringify(path)} });
            process.stdout.write(JSON.stringify({ opened: true }));
          } catch (error) {
            process.stdout.write(JSON.stringify({ code: error.code, message: error.message }));
          }
        `;
        const child = spawnSync(process.execPath, ["--conditions=development", "--import", "tsx", "--input-type=module", "-e", probe], {
          encoding: "utf8",
          timeout: 60_000,
          ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
        });
        assert.equal(child.status, 0, `the probe failed: ${String(child.error ?? child.stderr)}`);
        const outcome = JSON.parse(child.stdout) as { opened?: boolean; code?: string; message?: string };
        assert.equal(outcome.code, "failed_precondition", child.stdout);
        assert.ok(outcome.message?.startsWith(`the state database ${path} is read-only: `), child.stdout);
        assert.match(outcome.message ?? "", /\(SQLITE_READONLY\w*\); make it writable/);
      } finally {
        chmodSync(directory, 0o755);
        chmodSync(path, 0o644);
      }
      // Writable again, the same file opens.
      assert.equal((await open().list("Sandbox")).items.length, 0);
    });

    test("a file that is not a SQLite database is refused", () => {
      const notADatabase = join(directory, "not-a-db");
      writeFileSync(notADatabase, "this is not sqlite ".repeat(100));
      assert.throws(() => open({ path: notADatabase }), /not a usable SQLite database/);
    });

    test(":memory: works for throw-away stores", async () => {
      const store = open({ path: ":memory:" });
      await store.create("Sandbox", sandbox("a"));
      assert.equal((await store.list("Sandbox")).items.length, 1);
    });

    test("a closed store rejects calls with UnavailableError", async () => {
      const store = open();
      await store.close();
      await store.close();
      await assert.rejects(store.get("Sandbox", key("a")), UnavailableError);
      await assert.rejects(store.create("Sandbox", sandbox("a")), UnavailableError);
      assert.throws(() => store.watch("Sandbox", { resourceVersion: "0" }, () => {}), UnavailableError);
    });
  });
});

describe("jsonEqual", () => {
  test("ignores key order and undefined fields but not array order", () => {
    assert.ok(jsonEqual({ a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 }));
    assert.ok(jsonEqual({ a: 1, b: undefined }, { a: 1 }));
    assert.ok(!jsonEqual({ a: [1, 2] }, { a: [2, 1] }));
    assert.ok(!jsonEqual({ a: 1 }, { a: "1" }));
    assert.ok(!jsonEqual([], {}));
    assert.ok(!jsonEqual(null, {}));
  });
});
