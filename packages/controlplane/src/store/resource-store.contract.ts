/**
 * The contract of the `ResourceStore` port, as node:test cases any adapter must pass: the SQLite
 * store, the in-memory store and the Kubernetes API server run the same cases
 * (`resource-store.contract.spec.ts`, test/e2e/resource-store-contract-on-three-backends/).
 *
 * Every case gets a fresh context with two namespaces no other case uses, so the cases also run on a
 * shared API server; they never assume when an event arrives (only its order), nor what a
 * resourceVersion looks like (only equality).
 */
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";
import { AlreadyExistsError, ConflictError, ExpiredError, NotFoundError, ValidationError, type Sandbox, type SandboxPool } from "@fast-sandbox/api";
import type { ResourceStore, Watch, WatchEvent, WatchOptions } from "./resource-store.js";

export interface ContractContext {
  store: ResourceStore;
  /**
   * Two namespaces only this case uses. Better the second the first's name and "-" something (`team`,
   * `team-b`): lists sort by the key "namespace/name" as one string, which puts `team-b/…` before
   * `team/…` ('-' < '/'), where an order by namespace, then name, would not.
   */
  namespaces: [string, string];
  /** Closes the store and removes what the case left. */
  close(): Promise<void>;
}

export interface ContractBackend {
  name: string;
  open(): Promise<ContractContext>;
  /**
   * A resourceVersion the store can no longer replay, after whatever it takes (writes beyond the
   * replay history, a compaction…); undefined when the backend cannot be made to expire one.
   */
  expiredResourceVersion?(context: ContractContext): Promise<string>;
  /** How long to wait for an event that should not come. @default 50 */
  quietMs?: number;
  /** How long to wait for an event that should come. @default 10_000 */
  eventTimeoutMs?: number;
}

const API_VERSION = "sandbox.fast.io/v1alpha1";

function sandbox(
  namespace: string,
  name: string,
  options: { labels?: Record<string, string>; image?: string; resetRevision?: string; finalizers?: string[] } = {},
): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: {
      name,
      namespace,
      ...(options.labels ? { labels: options.labels } : {}),
      ...(options.finalizers ? { finalizers: options.finalizers } : {}),
    },
    spec: { image: options.image ?? "python:3.12", poolRef: "pool", ...(options.resetRevision ? { resetRevision: options.resetRevision } : {}) },
  };
}

function pool(namespace: string, name: string): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name, namespace },
    spec: { capacity: { poolMin: 1, poolMax: 3 }, maxSandboxesPerPod: 10 },
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Registers the contract's cases for one backend. */
export function describeResourceStoreContract(backend: ContractBackend): void {
  const quietMs = backend.quietMs ?? 50;
  const eventTimeoutMs = backend.eventTimeoutMs ?? 10_000;

  void describe(`ResourceStore contract: ${backend.name}`, () => {
    let context: ContractContext;
    let store: ResourceStore;
    let ns: string;
    let other: string;
    const watches: Watch[] = [];

    beforeEach(async () => {
      context = await backend.open();
      store = context.store;
      [ns, other] = context.namespaces;
    });

    afterEach(async () => {
      for (const watch of watches.splice(0)) watch.stop();
      await context.close();
    });

    const key = (name: string, namespace = ns) => ({ namespace, name });

    /** Records a watch's events; `until(n)` waits for the n-th, `settled()` also for silence after it. */
    function record(options: WatchOptions) {
      const events: WatchEvent<Sandbox>[] = [];
      const watch = store.watch("Sandbox", options, (event) => void events.push(event));
      watches.push(watch);
      const summary = () => events.map((e) => `${e.type} ${e.object.metadata.name}`);
      const until = async (count: number): Promise<void> => {
        const deadline = Date.now() + eventTimeoutMs;
        while (events.length < count) {
          if (Date.now() > deadline) assert.fail(`waited ${eventTimeoutMs} ms for ${count} events, got ${JSON.stringify(summary())}`);
          await sleep(5);
        }
      };
      const settled = async (count: number): Promise<string[]> => {
        await until(count);
        await sleep(quietMs);
        return summary();
      };
      return { events, watch, summary, until, settled };
    }

    void describe("create and read", () => {
      void test("create sets uid, resourceVersion, generation 1 and creationTimestamp; get returns the same object", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a", { labels: { app: "web" } }));
        assert.ok(created.metadata.uid);
        assert.ok(created.metadata.resourceVersion);
        assert.equal(created.metadata.generation, 1);
        assert.match(created.metadata.creationTimestamp ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        assert.equal(created.metadata.deletionTimestamp, undefined);
        assert.deepEqual(created.metadata.labels, { app: "web" });
        assert.deepEqual(created.spec, { image: "python:3.12", poolRef: "pool" });
        assert.deepEqual(await store.get("Sandbox", key("a")), created);
      });

      void test("create keeps the owner references sent (Kubernetes' garbage collector acts on them)", async () => {
        const owner = await store.create("SandboxPool", pool(ns, "owner"));
        const reference = { apiVersion: owner.apiVersion, kind: "SandboxPool", name: "owner", uid: owner.metadata.uid ?? "" };
        const input = sandbox(ns, "owned");
        input.metadata.ownerReferences = [reference];
        const created = await store.create("Sandbox", input);
        assert.deepEqual(created.metadata.ownerReferences, [reference]);
        assert.deepEqual((await store.get("Sandbox", key("owned")))?.metadata.ownerReferences, [reference]);
      });

      void test("create ignores status and the identity fields the caller sent", async () => {
        const input = sandbox(ns, "a");
        input.status = { phase: "Running" };
        input.metadata.uid = "0b4f1b9e-0000-4000-8000-000000000000";
        input.metadata.generation = 9;
        const created = await store.create("Sandbox", input);
        assert.equal(created.status, undefined);
        assert.notEqual(created.metadata.uid, input.metadata.uid);
        assert.equal(created.metadata.generation, 1);
      });

      void test("returned objects are copies: changing them, or what was sent, changes nothing stored", async () => {
        const input = sandbox(ns, "a", { labels: { app: "web" } });
        const created = await store.create("Sandbox", input);
        input.spec.image = "changed-input";
        created.spec.image = "changed-result";
        created.metadata.labels = { app: "changed" };
        const read = await store.get("Sandbox", key("a"));
        assert.ok(read);
        assert.equal(read.spec.image, "python:3.12");
        assert.deepEqual(read.metadata.labels, { app: "web" });
        read.spec.image = "changed-read";
        const running = await store.updateStatus("Sandbox", { ...created, status: { phase: "Running" } });
        running.spec.image = "changed-status-result";
        const [listed] = (await store.list("Sandbox", { namespace: ns })).items;
        assert.ok(listed);
        assert.equal(listed.spec.image, "python:3.12");
        listed.spec.image = "changed-list";
        assert.equal((await store.get("Sandbox", key("a")))?.spec.image, "python:3.12");
      });

      void test("get of a missing object is undefined", async () => {
        assert.equal(await store.get("Sandbox", key("missing")), undefined);
        assert.equal(await store.get("SandboxPool", key("missing")), undefined);
      });

      void test("a taken name is AlreadyExistsError; the same name in another namespace or kind is fine", async () => {
        await store.create("Sandbox", sandbox(ns, "a"));
        await assert.rejects(store.create("Sandbox", sandbox(ns, "a")), (error: unknown) => {
          assert.ok(error instanceof AlreadyExistsError, String(error));
          assert.match(error.message, new RegExp(`sandbox ${ns}/a already exists`));
          return true;
        });
        await store.create("Sandbox", sandbox(other, "a"));
        await store.create("SandboxPool", pool(ns, "a"));
      });

      void test("list filters by namespace and labels, sorts by the key namespace/name, and returns a resourceVersion", async () => {
        await store.create("Sandbox", sandbox(other, "b", { labels: { app: "x" } }));
        await store.create("Sandbox", sandbox(ns, "c", { labels: { app: "x", tier: "web" } }));
        await store.create("Sandbox", sandbox(ns, "a", { labels: { app: "y" } }));
        await store.create("SandboxPool", pool(ns, "p"));
        const names = (items: Sandbox[]) => items.map((s) => `${s.metadata.namespace}/${s.metadata.name}`);
        const mine = (items: Sandbox[]) => items.filter((s) => s.metadata.namespace === ns || s.metadata.namespace === other);

        const all = await store.list("Sandbox");
        assert.deepEqual(names(mine(all.items)), [`${ns}/a`, `${ns}/c`, `${other}/b`].sort());
        assert.ok(all.resourceVersion);
        assert.deepEqual(names((await store.list("Sandbox", { namespace: ns })).items), [`${ns}/a`, `${ns}/c`]);
        assert.deepEqual(names(mine((await store.list("Sandbox", { labelSelector: { app: "x" } })).items)), [`${ns}/c`, `${other}/b`].sort());
        assert.deepEqual(names((await store.list("Sandbox", { namespace: ns, labelSelector: { app: "x", tier: "web" } })).items), [`${ns}/c`]);
        assert.deepEqual((await store.list("Sandbox", { namespace: other, labelSelector: { app: "y" } })).items, []);
        assert.deepEqual(
          (await store.list("SandboxPool", { namespace: ns })).items.map((p) => p.metadata.name),
          ["p"],
        );
      });

      void test("list in pages: at most `limit` objects each, in the list's order, each object once, with the filters; `continue` until the last", async () => {
        for (const name of ["e", "a", "d", "c", "b"]) await store.create("Sandbox", sandbox(ns, name, { labels: { app: name === "c" ? "y" : "x" } }));
        for (const name of ["a", "b"]) await store.create("Sandbox", sandbox(other, name, { labels: { app: "x" } }));
        const names = (items: Sandbox[]) => items.map((s) => `${s.metadata.namespace}/${s.metadata.name}`);
        const pages = async (options: { namespace?: string; labelSelector?: Record<string, string> }, limit: number) => {
          const result: string[][] = [];
          let next: string | undefined;
          do {
            const page = await store.list("Sandbox", { ...options, limit, ...(next ? { continue: next } : {}) });
            assert.ok(page.items.length <= limit, `a page of ${page.items.length} for a limit of ${limit}`);
            assert.ok(page.resourceVersion);
            result.push(names(page.items));
            next = page.continue;
          } while (next);
          return result;
        };

        assert.deepEqual(await pages({ namespace: ns }, 2), [[`${ns}/a`, `${ns}/b`], [`${ns}/c`, `${ns}/d`], [`${ns}/e`]]);
        assert.deepEqual(await pages({ namespace: ns, labelSelector: { app: "x" } }, 4), [[`${ns}/a`, `${ns}/b`, `${ns}/d`, `${ns}/e`]]);
        assert.deepEqual((await pages({ namespace: other }, 5)).flat(), [`${other}/a`, `${other}/b`]);
        // Every namespace: the whole list in key order ("namespace/name" as one string, as etcd sorts
        // its keys: see ContractContext.namespaces), and the pages, put together, are the whole list.
        const whole = names((await store.list("Sandbox")).items);
        const mine = (keys: string[]) => keys.filter((k) => k.startsWith(`${ns}/`) || k.startsWith(`${other}/`));
        assert.deepEqual(mine(whole), [...["a", "b", "c", "d", "e"].map((n) => `${ns}/${n}`), `${other}/a`, `${other}/b`].sort());
        assert.deepEqual((await pages({}, 3)).flat(), whole);
        const { items } = await store.list("Sandbox", { namespace: ns, limit: 5 });
        assert.equal(items.length, 5);
      });

      void test("a list with a limit that is not a whole number > 0, or a continue token it did not make, is ValidationError", async () => {
        await store.create("Sandbox", sandbox(ns, "a"));
        for (const limit of [0, -1, 1.5]) {
          await assert.rejects(store.list("Sandbox", { namespace: ns, limit }), (error: unknown) => {
            assert.ok(error instanceof ValidationError, String(error));
            assert.equal(error.field, "limit");
            return true;
          });
        }
        await assert.rejects(store.list("Sandbox", { namespace: ns, limit: 1, continue: "not-a-token" }), ValidationError);
      });

      void test("an invalid object is ValidationError naming the field, and nothing is stored", async () => {
        const bad = sandbox(ns, "a");
        bad.spec.image = "";
        await assert.rejects(store.create("Sandbox", bad), (error: unknown) => {
          assert.ok(error instanceof ValidationError, String(error));
          assert.equal(error.field, "spec.image");
          return true;
        });
        const noNamespace = sandbox(ns, "b");
        delete noNamespace.metadata.namespace;
        await assert.rejects(
          store.create("Sandbox", noNamespace),
          (error: unknown) => error instanceof ValidationError && error.field === "metadata.namespace",
        );
        assert.deepEqual((await store.list("Sandbox", { namespace: ns })).items, []);
      });
    });

    void describe("optimistic concurrency", () => {
      void test("a write with a stale resourceVersion is ConflictError and changes nothing; of two writers from one read exactly one wins", async () => {
        const read = await store.create("Sandbox", sandbox(ns, "a"));
        const results = await Promise.allSettled([
          store.update("Sandbox", { ...read, spec: { ...read.spec, resetRevision: "first" } }),
          store.update("Sandbox", { ...read, spec: { ...read.spec, resetRevision: "second" } }),
        ]);
        assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
        const rejected = results.filter((r) => r.status === "rejected");
        assert.equal(rejected.length, 1);
        assert.ok(rejected[0]?.reason instanceof ConflictError, String(rejected[0]?.reason));
        const winner = await store.get("Sandbox", key("a"));
        assert.ok(winner?.spec.resetRevision === "first" || winner?.spec.resetRevision === "second");

        await assert.rejects(store.update("Sandbox", { ...read, spec: { ...read.spec, resetRevision: "third" } }), ConflictError);
        await assert.rejects(store.updateStatus("Sandbox", { ...read, status: { phase: "Running" } }), ConflictError);
        assert.deepEqual(await store.get("Sandbox", key("a")), winner);
      });

      void test("a write without a resourceVersion is ValidationError unless it asks to be unconditional", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a"));
        await store.updateStatus("Sandbox", { ...created, status: { phase: "Bound" } });
        const blind = sandbox(ns, "a", { resetRevision: "v2" });
        await assert.rejects(
          store.update("Sandbox", blind),
          (error: unknown) => error instanceof ValidationError && error.field === "metadata.resourceVersion",
        );
        await assert.rejects(store.updateStatus("Sandbox", { ...blind, status: { phase: "Running" } }), ValidationError);

        const updated = await store.update("Sandbox", blind, { unconditional: true });
        assert.equal(updated.spec.resetRevision, "v2");
        assert.equal(updated.status?.phase, "Bound");
        const stale = { ...created, status: { phase: "Running" as const } };
        const written = await store.updateStatus("Sandbox", stale, { unconditional: true });
        assert.equal(written.status?.phase, "Running");
        assert.equal(written.spec.resetRevision, "v2");
      });

      void test("an unconditional write still checks the uid: a name deleted and created again is ConflictError", async () => {
        const first = await store.create("Sandbox", sandbox(ns, "a"));
        await store.delete("Sandbox", key("a"));
        await store.create("Sandbox", sandbox(ns, "a"));
        await assert.rejects(store.update("Sandbox", { ...first, spec: { ...first.spec, resetRevision: "v2" } }, { unconditional: true }), ConflictError);
        await assert.rejects(store.updateStatus("Sandbox", { ...first, status: { phase: "Running" } }, { unconditional: true }), ConflictError);
        await assert.rejects(store.update("Sandbox", { ...first, spec: { ...first.spec, resetRevision: "v2" } }), ConflictError);
      });

      void test("writes to a missing object are NotFoundError", async () => {
        const ghost = { ...sandbox(ns, "ghost"), metadata: { ...sandbox(ns, "ghost").metadata, resourceVersion: "1" } };
        await assert.rejects(store.update("Sandbox", ghost), NotFoundError);
        await assert.rejects(store.update("Sandbox", ghost, { unconditional: true }), NotFoundError);
        await assert.rejects(store.updateStatus("Sandbox", { ...ghost, status: { phase: "Running" } }), NotFoundError);
        await assert.rejects(store.delete("Sandbox", key("ghost")), (error: unknown) => {
          assert.ok(error instanceof NotFoundError);
          assert.match(error.message, new RegExp(`sandbox ${ns}/ghost not found`));
          return true;
        });
      });
    });

    void describe("spec, status and generation", () => {
      void test("update writes spec and metadata but never status; updateStatus writes status but never spec or metadata", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a"));
        const bound = await store.updateStatus("Sandbox", {
          ...created,
          metadata: { ...created.metadata, labels: { sneaky: "yes" }, finalizers: ["fast.io/sneaky"] },
          spec: { ...created.spec, resetRevision: "sneaky" },
          status: { phase: "Bound", assignedPod: "agent-1" },
        });
        assert.notEqual(bound.metadata.resourceVersion, created.metadata.resourceVersion);
        assert.equal(bound.metadata.labels, undefined);
        assert.equal(bound.metadata.finalizers, undefined);
        assert.equal(bound.spec.resetRevision, undefined);
        assert.deepEqual(bound.status, { phase: "Bound", assignedPod: "agent-1" });

        const updated = await store.update("Sandbox", {
          ...bound,
          metadata: { ...bound.metadata, labels: { team: "x" }, annotations: { note: "n" } },
          spec: { ...bound.spec, resetRevision: "v2" },
          status: { phase: "Failed" },
        });
        assert.deepEqual(updated.status, { phase: "Bound", assignedPod: "agent-1" });
        assert.deepEqual(updated.metadata.labels, { team: "x" });
        assert.deepEqual(updated.metadata.annotations, { note: "n" });
        assert.equal(updated.spec.resetRevision, "v2");
        assert.deepEqual(await store.get("Sandbox", key("a")), updated);
      });

      void test("generation bumps when the spec changes and when deletion starts, never for status, labels or finalizers", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a"));
        const relabelled = await store.update("Sandbox", { ...created, metadata: { ...created.metadata, labels: { a: "b" }, finalizers: ["fast.io/f"] } });
        assert.equal(relabelled.metadata.generation, 1);
        const withStatus = await store.updateStatus("Sandbox", { ...relabelled, status: { phase: "Running", observedGeneration: 1 } });
        assert.equal(withStatus.metadata.generation, 1);
        const respecced = await store.update("Sandbox", { ...withStatus, spec: { ...withStatus.spec, resetRevision: "1" } });
        assert.equal(respecced.metadata.generation, 2);
        assert.equal(respecced.status?.observedGeneration, 1, "the status still tells which generation it was computed for");
        const marked = await store.delete("Sandbox", key("a"));
        assert.equal(marked?.metadata.generation, 3);
      });

      void test("status.observedGeneration and conditions' observedGeneration are stored, for both kinds", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a"));
        const status = {
          phase: "Running" as const,
          observedGeneration: 1,
          conditions: [{ type: "Ready", status: "True" as const, reason: "Started", observedGeneration: 1, lastTransitionTime: "2026-01-02T03:04:05Z" }],
        };
        const written = await store.updateStatus("Sandbox", { ...created, status });
        assert.deepEqual(written.status, status);
        assert.deepEqual((await store.get("Sandbox", key("a")))?.status, status);
        const createdPool = await store.create("SandboxPool", pool(ns, "p"));
        const poolStatus = { agents: 2, readyAgents: 1, observedGeneration: 1 };
        assert.deepEqual((await store.updateStatus("SandboxPool", { ...createdPool, status: poolStatus })).status, poolStatus);
      });

      void test("update ignores the identity fields sent: generation and creationTimestamp stay the store's", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a"));
        const updated = await store.update("Sandbox", {
          ...created,
          metadata: { ...created.metadata, generation: 42, creationTimestamp: "2001-02-03T04:05:06Z" },
          spec: { ...created.spec, resetRevision: "v2" },
        });
        assert.equal(updated.metadata.generation, 2);
        assert.equal(updated.metadata.creationTimestamp, created.metadata.creationTimestamp);
        assert.equal(updated.metadata.uid, created.metadata.uid);
        assert.deepEqual(await store.get("Sandbox", key("a")), updated);
      });

      void test("a write that changes nothing keeps the resourceVersion and emits no event", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a", { labels: { x: "1" } }));
        const running = await store.updateStatus("Sandbox", { ...created, status: { phase: "Running" } });
        const watch = record({ namespace: ns, resourceVersion: running.metadata.resourceVersion ?? "" });
        const reordered = { ...running, spec: { poolRef: "pool", image: "python:3.12" } } as Sandbox;
        const same = await store.update("Sandbox", reordered);
        assert.equal(same.metadata.resourceVersion, running.metadata.resourceVersion);
        const sameStatus = await store.updateStatus("Sandbox", running);
        assert.equal(sameStatus.metadata.resourceVersion, running.metadata.resourceVersion);
        await store.create("Sandbox", sandbox(ns, "marker"));
        assert.deepEqual(await watch.settled(1), ["ADDED marker"]);
      });
    });

    void describe("delete and finalizers", () => {
      void test("delete without finalizers removes the object and returns undefined; the name is free again", async () => {
        await store.create("Sandbox", sandbox(ns, "a"));
        assert.equal(await store.delete("Sandbox", key("a")), undefined);
        assert.equal(await store.get("Sandbox", key("a")), undefined);
        await store.create("Sandbox", sandbox(ns, "a"));
      });

      void test("delete with finalizers sets deletionTimestamp; deleting again changes nothing; removing the last finalizer deletes", async () => {
        await store.create("Sandbox", sandbox(ns, "a", { finalizers: ["fast.io/a", "fast.io/b"] }));
        const marked = await store.delete("Sandbox", key("a"));
        assert.ok(marked);
        assert.match(marked.metadata.deletionTimestamp ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        assert.deepEqual(marked.metadata.finalizers, ["fast.io/a", "fast.io/b"]);
        assert.deepEqual(await store.get("Sandbox", key("a")), marked);

        const again = await store.delete("Sandbox", key("a"));
        assert.deepEqual(again, marked, "deleting an object being deleted changes nothing");

        const oneLeft = await store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, finalizers: ["fast.io/b"] } });
        assert.deepEqual(oneLeft.metadata.finalizers, ["fast.io/b"]);
        assert.equal(oneLeft.metadata.deletionTimestamp, marked.metadata.deletionTimestamp);
        const running = await store.updateStatus("Sandbox", { ...oneLeft, status: { phase: "Terminating" } });
        assert.ok(await store.get("Sandbox", key("a")));

        const last = await store.update("Sandbox", { ...running, metadata: { ...running.metadata, finalizers: [] } });
        assert.equal(last.metadata.name, "a");
        assert.equal(last.status?.phase, "Terminating", "the returned object is the final state");
        assert.equal(await store.get("Sandbox", key("a")), undefined);
      });

      void test("an empty finalizer list is no finalizer: none is stored, sending one changes nothing, delete removes at once", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a", { finalizers: [] }));
        assert.equal(created.metadata.finalizers, undefined);
        const same = await store.update("Sandbox", { ...created, metadata: { ...created.metadata, finalizers: [] } });
        assert.equal(same.metadata.resourceVersion, created.metadata.resourceVersion);
        assert.equal(await store.delete("Sandbox", key("a")), undefined);
        assert.equal(await store.get("Sandbox", key("a")), undefined);
      });

      void test("removing the finalizers of an object not being deleted keeps it, generation unchanged", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a", { finalizers: ["fast.io/f"] }));
        const cleared = await store.update("Sandbox", { ...created, metadata: { ...created.metadata, finalizers: [] } });
        assert.equal(cleared.metadata.finalizers, undefined);
        assert.equal(cleared.metadata.generation, 1);
        assert.equal(cleared.metadata.deletionTimestamp, undefined);
        assert.deepEqual(await store.get("Sandbox", key("a")), cleared);
      });

      void test("deleting an object already being deleted emits no event", async () => {
        await store.create("Sandbox", sandbox(ns, "a", { finalizers: ["fast.io/f"] }));
        const marked = await store.delete("Sandbox", key("a"));
        assert.ok(marked);
        const watch = record({ namespace: ns, resourceVersion: marked.metadata.resourceVersion ?? "" });
        assert.deepEqual(await store.delete("Sandbox", key("a")), marked);
        await store.create("Sandbox", sandbox(ns, "marker"));
        assert.deepEqual(await watch.settled(1), ["ADDED marker"]);
      });

      void test("an object being deleted accepts no new finalizers but other metadata changes", async () => {
        await store.create("Sandbox", sandbox(ns, "a", { finalizers: ["fast.io/a"] }));
        const marked = await store.delete("Sandbox", key("a"));
        assert.ok(marked);
        await assert.rejects(
          store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, finalizers: ["fast.io/a", "fast.io/late"] } }),
          (error: unknown) => {
            assert.ok(error instanceof ValidationError, String(error));
            assert.equal(error.field, "metadata.finalizers");
            return true;
          },
        );
        const relabelled = await store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, labels: { x: "1" } } });
        assert.deepEqual(relabelled.metadata.finalizers, ["fast.io/a"]);
        assert.equal(relabelled.metadata.deletionTimestamp, marked.metadata.deletionTimestamp);
      });

      void test("update cannot set or clear deletionTimestamp", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a", { finalizers: ["fast.io/f"] }));
        const tried = await store.update("Sandbox", {
          ...created,
          metadata: { ...created.metadata, deletionTimestamp: "2026-01-01T00:00:00Z", labels: { a: "b" } },
        });
        assert.equal(tried.metadata.deletionTimestamp, undefined);
      });
    });

    void describe("watch", () => {
      void test("a watch from a list's resourceVersion sees exactly the later events, in order, each with the write's resourceVersion", async () => {
        const a = await store.create("Sandbox", sandbox(ns, "a"));
        await store.create("Sandbox", sandbox(ns, "b"));
        const listed = await store.list("Sandbox", { namespace: ns });
        const watch = record({ namespace: ns, resourceVersion: listed.resourceVersion });
        const c = await store.create("Sandbox", sandbox(ns, "c"));
        const running = await store.updateStatus("Sandbox", { ...a, status: { phase: "Running" } });
        await store.delete("Sandbox", key("b"));
        const relabelled = await store.update("Sandbox", { ...c, metadata: { ...c.metadata, labels: { x: "1" } } });
        assert.deepEqual(await watch.settled(4), ["ADDED c", "MODIFIED a", "DELETED b", "MODIFIED c"]);
        assert.equal(watch.events[0]?.object.metadata.resourceVersion, c.metadata.resourceVersion);
        assert.equal(watch.events[1]?.object.metadata.resourceVersion, running.metadata.resourceVersion);
        assert.deepEqual(watch.events[1]?.object.status, { phase: "Running" });
        assert.equal(watch.events[3]?.object.metadata.resourceVersion, relabelled.metadata.resourceVersion);
      });

      void test("a watch from an older resourceVersion replays the events after it", async () => {
        const a = await store.create("Sandbox", sandbox(ns, "a"));
        await store.create("Sandbox", sandbox(ns, "b"));
        await store.updateStatus("Sandbox", { ...a, status: { phase: "Running" } });
        await store.create("Sandbox", sandbox(other, "elsewhere"));
        await store.create("SandboxPool", pool(ns, "p"));
        const watch = record({ namespace: ns, resourceVersion: a.metadata.resourceVersion ?? "" });
        assert.deepEqual(await watch.settled(2), ["ADDED b", "MODIFIED a"]);
      });

      void test("the DELETED event of an object with finalizers carries its last state", async () => {
        const created = await store.create("Sandbox", sandbox(ns, "a", { finalizers: ["fast.io/f"] }));
        const running = await store.updateStatus("Sandbox", { ...created, status: { phase: "Running" } });
        const watch = record({ namespace: ns, resourceVersion: running.metadata.resourceVersion ?? "" });
        const marked = await store.delete("Sandbox", key("a"));
        assert.ok(marked);
        await store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, finalizers: [] } });
        assert.deepEqual(await watch.settled(2), ["MODIFIED a", "DELETED a"]);
        const deleted = watch.events[1]?.object;
        assert.deepEqual(deleted?.status, { phase: "Running" });
        assert.equal(deleted?.metadata.deletionTimestamp, marked.metadata.deletionTimestamp);
        assert.equal(deleted?.metadata.uid, created.metadata.uid);
      });

      void test("a label selector filters; objects entering or leaving it arrive as ADDED and DELETED", async () => {
        const start = await store.list("Sandbox", { namespace: ns });
        const watch = record({ namespace: ns, labelSelector: { app: "web" }, resourceVersion: start.resourceVersion });
        const plain = await store.create("Sandbox", sandbox(ns, "plain"));
        const web = await store.create("Sandbox", sandbox(ns, "web", { labels: { app: "web" } }));
        await store.create("Sandbox", sandbox(other, "web-elsewhere", { labels: { app: "web" } }));
        const joined = await store.update("Sandbox", { ...plain, metadata: { ...plain.metadata, labels: { app: "web" } } });
        await store.updateStatus("Sandbox", { ...joined, status: { phase: "Running" } });
        await store.update("Sandbox", { ...web, metadata: { ...web.metadata, labels: { app: "db" } } });
        await store.delete("Sandbox", key("web"));
        assert.deepEqual(await watch.settled(4), ["ADDED web", "ADDED plain", "MODIFIED plain", "DELETED web"]);
      });

      void test("removing the last finalizer in an update that also changes the labels is DELETED for the watches the stored labels matched", async () => {
        await store.create("Sandbox", sandbox(ns, "a", { labels: { app: "web" }, finalizers: ["fast.io/f"] }));
        const start = await store.list("Sandbox", { namespace: ns });
        const web = record({ namespace: ns, labelSelector: { app: "web" }, resourceVersion: start.resourceVersion });
        const gone = record({ namespace: ns, labelSelector: { app: "gone" }, resourceVersion: start.resourceVersion });
        const marked = await store.delete("Sandbox", key("a"));
        assert.ok(marked);
        // One write: a controller that relabels the object as it releases it.
        await store.update("Sandbox", { ...marked, metadata: { ...marked.metadata, labels: { app: "gone" }, finalizers: [] } });
        assert.equal(await store.get("Sandbox", key("a")), undefined);
        await store.create("Sandbox", sandbox(ns, "marker", { labels: { app: "gone" } }));
        assert.deepEqual(await web.settled(2), ["MODIFIED a", "DELETED a"]);
        // The object never was stored with the new labels: their watch sees nothing of it.
        assert.deepEqual(await gone.settled(1), ["ADDED marker"]);
      });

      void test("a watch of one kind sees nothing of the other", async () => {
        const start = await store.list("SandboxPool", { namespace: ns });
        const pools: string[] = [];
        watches.push(
          store.watch("SandboxPool", { namespace: ns, resourceVersion: start.resourceVersion }, (e) => void pools.push(`${e.type} ${e.object.metadata.name}`)),
        );
        await store.create("Sandbox", sandbox(ns, "s"));
        await store.create("SandboxPool", pool(ns, "p"));
        const deadline = Date.now() + eventTimeoutMs;
        while (pools.length < 1 && Date.now() < deadline) await sleep(5);
        await sleep(quietMs);
        assert.deepEqual(pools, ["ADDED p"]);
      });

      void test("each listener gets its own copy of an event's object", async () => {
        const start = await store.list("Sandbox", { namespace: ns });
        const images: string[] = [];
        for (let i = 0; i < 2; i++) {
          watches.push(
            store.watch("Sandbox", { namespace: ns, resourceVersion: start.resourceVersion }, (event) => {
              images.push(event.object.spec.image);
              event.object.spec.image = `changed-by-listener-${i}`;
            }),
          );
        }
        await store.create("Sandbox", sandbox(ns, "a"));
        const deadline = Date.now() + eventTimeoutMs;
        while (images.length < 2 && Date.now() < deadline) await sleep(5);
        assert.deepEqual(images, ["python:3.12", "python:3.12"]);
        assert.equal((await store.get("Sandbox", key("a")))?.spec.image, "python:3.12");
      });

      void test("stop ends delivery at once and resolves done", async () => {
        const start = await store.list("Sandbox", { namespace: ns });
        const watch = record({ namespace: ns, resourceVersion: start.resourceVersion });
        await store.create("Sandbox", sandbox(ns, "a"));
        await watch.until(1);
        watch.watch.stop();
        watch.watch.stop();
        await watch.watch.done;
        await store.create("Sandbox", sandbox(ns, "b"));
        await sleep(quietMs);
        assert.deepEqual(watch.summary(), ["ADDED a"]);
      });

      void test("a listener that throws does not stop the watch", async () => {
        const start = await store.list("Sandbox", { namespace: ns });
        const seen: string[] = [];
        watches.push(
          store.watch("Sandbox", { namespace: ns, resourceVersion: start.resourceVersion }, (event) => {
            seen.push(event.object.metadata.name);
            throw new Error("listener bug (expected by the test)");
          }),
        );
        await store.create("Sandbox", sandbox(ns, "a"));
        await store.create("Sandbox", sandbox(ns, "b"));
        const deadline = Date.now() + eventTimeoutMs;
        while (seen.length < 2 && Date.now() < deadline) await sleep(5);
        assert.deepEqual(seen, ["a", "b"]);
      });

      void test("a resourceVersion too old to replay ends the watch with ExpiredError; a fresh list's works", async (t) => {
        if (backend.expiredResourceVersion === undefined) {
          t.skip("this backend cannot be made to expire a resourceVersion");
          return;
        }
        const tooOld = await backend.expiredResourceVersion(context);
        const expired = record({ namespace: ns, resourceVersion: tooOld });
        await assert.rejects(expired.watch.done, (error: unknown) => {
          assert.ok(error instanceof ExpiredError, String(error));
          assert.equal(error.code, "failed_precondition");
          return true;
        });
        assert.deepEqual(expired.events, []);
        const listed = await store.list("Sandbox", { namespace: ns });
        const fresh = record({ namespace: ns, resourceVersion: listed.resourceVersion });
        await store.create("Sandbox", sandbox(ns, "after-relist"));
        assert.deepEqual(await fresh.settled(1), ["ADDED after-relist"]);
      });
    });
  });
}
