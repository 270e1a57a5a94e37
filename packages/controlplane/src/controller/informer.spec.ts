import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { API_VERSION, ExpiredError, UnavailableError, type Sandbox } from "@fast-sandbox/api";
import { pino } from "pino";
import type { ResourceStore, Watch } from "../store/resource-store.js";
import { openSqliteResourceStore, type SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { FakeClock } from "./clock.js";
import { Informer } from "./informer.js";

const logger = pino({ level: "silent" });

function sandbox(name: string, agent?: string, namespace = "default"): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name, namespace },
    spec: { image: "python:3.12", poolRef: "default" },
    ...(agent ? { status: { phase: "Running", assignedPod: agent } } : {}),
  };
}

/** Calls the informer makes, and a way to end its current watch as an API server does. */
interface Spy {
  lists: number;
  watchedFrom: string[];
  /** Ends the current watch without an error (`done` resolves). */
  endWatch(): void;
  /** The current watch's `onProgress` (what a Kubernetes bookmark calls). */
  progress?: (resourceVersion: string) => void;
}

/**
 * The store, watched through a spy; its next list() calls fail with `failures.list`, and its next
 * watches end at once with `failures.watch` (through `done`, as the stores report an expired version).
 */
function spied(store: ResourceStore, failures: { watch?: Error[]; list?: Error[] } = {}): { source: ResourceStore; spy: Spy } {
  let current: Watch | undefined;
  const spy: Spy = { lists: 0, watchedFrom: [], endWatch: () => current?.stop() };
  const source = new Proxy(store, {
    get(target, property, receiver) {
      if (property === "watch") {
        return (...args: Parameters<ResourceStore["watch"]>): Watch => {
          spy.watchedFrom.push(args[1].resourceVersion);
          spy.progress = args[1].onProgress;
          const failure = failures.watch?.shift();
          if (failure) {
            const done = Promise.reject(failure);
            done.catch(() => undefined);
            return { stop: () => undefined, done };
          }
          return (current = target.watch(...args));
        };
      }
      if (property === "list") {
        return (...args: Parameters<ResourceStore["list"]>) => {
          spy.lists += 1;
          const failure = failures.list?.shift();
          if (failure) return Promise.reject(failure);
          return target.list(...args);
        };
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { source, spy };
}

let store: SqliteResourceStore;
let clock: FakeClock;
let informers: Informer<"Sandbox">[];
/** What the handlers were told, as `add web`, `update web Pending->Running`, `delete web`. */
let seen: string[];

function startInformer(source: ResourceStore = store): Informer<"Sandbox"> {
  const informer = new Informer({
    store: source,
    kind: "Sandbox",
    logger,
    clock,
    indexes: { agent: (s) => (s.status?.assignedPod ? [s.status.assignedPod] : []) },
  });
  informer.addHandlers({
    onAdd: (s) => seen.push(`add ${s.metadata.name}`),
    onUpdate: (previous, current) => seen.push(`update ${current.metadata.name} ${previous.status?.phase ?? "-"}->${current.status?.phase ?? "-"}`),
    onDelete: (s) => seen.push(`delete ${s.metadata.name}`),
  });
  informers.push(informer);
  informer.start();
  return informer;
}

async function setStatus(name: string, phase: "Pending" | "Running" | "Lost", agent?: string): Promise<void> {
  const current = (await store.get("Sandbox", { namespace: "default", name })) ?? assert.fail(`no sandbox ${name}`);
  await store.updateStatus("Sandbox", { ...current, status: { phase, ...(agent ? { assignedPod: agent } : {}) } });
}

beforeEach(() => {
  store = openSqliteResourceStore({ path: ":memory:" });
  clock = new FakeClock();
  informers = [];
  seen = [];
});

afterEach(async () => {
  for (const informer of informers) informer.stop();
  await store.close();
});

describe("Informer", () => {
  it("lists what exists into its cache, tells the handlers, and reports synced", async () => {
    await store.create("Sandbox", sandbox("a"));
    await store.create("Sandbox", sandbox("b"));
    const informer = startInformer();
    assert.equal(informer.hasSynced(), false);
    await informer.waitForSync();
    assert.equal(informer.hasSynced(), true);
    assert.deepEqual(
      informer
        .list()
        .map((s) => s.metadata.name)
        .sort(),
      ["a", "b"],
    );
    assert.equal(informer.get("default/a")?.metadata.name, "a");
    assert.equal(informer.get("other/a"), undefined);
    assert.deepEqual(seen.sort(), ["add a", "add b"]);
  });

  it("follows creates, updates and deletes through the watch, in order, with the previous state on updates", async () => {
    const informer = startInformer();
    await informer.waitForSync();
    await store.create("Sandbox", sandbox("web"));
    await setStatus("web", "Running", "agent-0");
    await store.delete("Sandbox", { namespace: "default", name: "web" });
    await informer.whenIdle();
    assert.deepEqual(seen, ["add web", "update web -->Running", "delete web"]);
    assert.equal(informer.get("default/web"), undefined);
  });

  it("never runs a handler inside the store's write call, and has the change cached when it does", async () => {
    let writing = false;
    const insideWrite: boolean[] = [];
    const cachedAtHandler: (string | undefined)[] = [];
    const informer = new Informer({ store, kind: "Sandbox", logger, clock });
    informer.addHandlers({
      onAdd: (s) => {
        insideWrite.push(writing);
        cachedAtHandler.push(informer.get(`default/${s.metadata.name}`)?.metadata.resourceVersion);
      },
    });
    informers.push(informer);
    informer.start();
    await informer.waitForSync();

    writing = true;
    const write = store.create("Sandbox", sandbox("web"));
    writing = false;
    const created = await write;
    assert.deepEqual(insideWrite, [], "not even before the writer got its answer");
    await informer.whenIdle();
    assert.deepEqual(insideWrite, [false]);
    assert.deepEqual(cachedAtHandler, [created.metadata.resourceVersion]);
  });

  it("keeps named indexes in step with the cache", async () => {
    const informer = startInformer();
    await informer.waitForSync();
    for (const name of ["a", "b", "c"]) await store.create("Sandbox", sandbox(name));
    await setStatus("a", "Running", "agent-0");
    await setStatus("b", "Running", "agent-0");
    await setStatus("c", "Running", "agent-1");
    await informer.whenIdle();
    const onAgent = (agent: string) =>
      informer
        .byIndex("agent", agent)
        .map((s) => s.metadata.name)
        .sort();
    assert.deepEqual(onAgent("agent-0"), ["a", "b"]);
    assert.deepEqual(onAgent("agent-1"), ["c"]);

    await setStatus("b", "Running", "agent-1");
    await setStatus("c", "Pending");
    await store.delete("Sandbox", { namespace: "default", name: "a" });
    await informer.whenIdle();
    assert.deepEqual(onAgent("agent-0"), []);
    assert.deepEqual(onAgent("agent-1"), ["b"]);
    assert.throws(() => informer.byIndex("pool", "default"), /has no index "pool" \(it has: agent\)/);
  });

  it("lists again when the watch expires, with growing pauses through the clock, and tells the handlers what changed meanwhile", async () => {
    await store.create("Sandbox", sandbox("kept"));
    await store.create("Sandbox", sandbox("changed"));
    await store.create("Sandbox", sandbox("removed"));
    const { source, spy } = spied(store, { watch: [new ExpiredError("too old"), new ExpiredError("too old again")] });
    const informer = startInformer(source);
    await informer.waitForSync();
    seen = [];

    // The watch failed to start: changes now are only seen by the next list.
    await setStatus("changed", "Running", "agent-0");
    await store.delete("Sandbox", { namespace: "default", name: "removed" });
    await store.create("Sandbox", sandbox("added"));
    await informer.whenIdle();
    assert.deepEqual(seen, []);

    clock.advance(99);
    await settle(informer);
    assert.deepEqual(seen, [], "not before the first pause (100 ms)");
    clock.advance(1);
    await settle(informer);
    assert.deepEqual(seen.sort(), ["add added", "delete removed", "update changed -->Running"]);
    assert.deepEqual(
      informer.byIndex("agent", "agent-0").map((s) => s.metadata.name),
      ["changed"],
    );

    // The second watch failed too: the pause doubles; then the watch runs and changes flow again.
    seen = [];
    await setStatus("kept", "Lost");
    clock.advance(199);
    await settle(informer);
    assert.deepEqual(seen, []);
    clock.advance(1);
    await settle(informer);
    assert.deepEqual(seen, ["update kept -->Lost"]);
    await store.delete("Sandbox", { namespace: "default", name: "kept" });
    await informer.whenIdle();
    assert.deepEqual(seen, ["update kept -->Lost", "delete kept"]);
    assert.equal(clock.pendingTimers, 0, "no relist pending once the watch runs");
    assert.equal(spy.lists, 3);
  });

  it("watches again from the last version it saw when a watch ends, without listing again or missing a change", async () => {
    await store.create("Sandbox", sandbox("a"));
    const { source, spy } = spied(store);
    const informer = startInformer(source);
    await informer.waitForSync();
    await setStatus("a", "Running", "agent-0");
    await informer.whenIdle();
    const lastSeen = informer.get("default/a")?.metadata.resourceVersion ?? assert.fail("not cached");
    seen = [];

    spy.endWatch();
    // Changes between the end and the next watch are replayed by the store from the last version.
    await store.create("Sandbox", sandbox("b"));
    await settle(informer);
    assert.deepEqual(seen, ["add b"]);
    assert.equal(spy.lists, 1, "no relist");
    assert.equal(spy.watchedFrom.at(-1), lastSeen);

    // A watch that keeps ending at once is watched again after growing pauses.
    spy.endWatch();
    await settle(informer);
    spy.endWatch();
    await settle(informer);
    const watches = spy.watchedFrom.length;
    assert.equal(clock.pendingTimers, 1, "the next watch waits");
    clock.advance(200);
    await settle(informer);
    assert.equal(spy.watchedFrom.length, watches + 1);
    await setStatus("b", "Lost");
    await informer.whenIdle();
    assert.deepEqual(seen, ["add b", "update b -->Lost"]);
  });

  it("watches again from the version a bookmark said the watch reached, past the last change it saw", async () => {
    await store.create("Sandbox", sandbox("a"));
    const { source, spy } = spied(store);
    const informer = startInformer(source);
    await informer.waitForSync();
    assert.ok(spy.progress, "the informer asks for progress");
    // A quiet kind: no change for a while, and the API server's bookmark says how far the watch got.
    const bookmark = String(Number(spy.watchedFrom.at(-1)) + 1000);
    spy.progress(bookmark);
    spy.endWatch();
    await settle(informer);
    assert.equal(spy.watchedFrom.at(-1), bookmark);
    assert.equal(spy.lists, 1, "no relist");
  });

  it("lists again after a failed list, and is synced only by a list that worked", async () => {
    await store.create("Sandbox", sandbox("a"));
    const { source } = spied(store, { list: [new UnavailableError("store away")] });
    const informer = startInformer(source);
    await settle(informer);
    assert.equal(informer.hasSynced(), false);
    clock.advance(100);
    await informer.waitForSync();
    assert.deepEqual(seen, ["add a"]);
  });

  it("gives up a list that never finishes and lists again, dropping the first should it come late", async () => {
    await store.create("Sandbox", sandbox("a"));
    let lists = 0;
    let answerFirst: () => void = () => undefined;
    const source = new Proxy(store, {
      get(target, property, receiver) {
        if (property === "list") {
          return async (...args: Parameters<ResourceStore["list"]>) => {
            lists += 1;
            // The first list is a request nobody answers (until the test lets it, long after).
            if (lists === 1) {
              const first = await target.list(...args);
              await new Promise<void>((resolve) => (answerFirst = resolve));
              return { ...first, items: [] };
            }
            return target.list(...args);
          };
        }
        const value: unknown = Reflect.get(target, property, receiver);
        return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    const informer = new Informer({ store: source, kind: "Sandbox", logger, clock, listTimeoutMs: 60_000 });
    informer.addHandlers({ onAdd: (s) => seen.push(`add ${s.metadata.name}`), onDelete: (s) => seen.push(`delete ${s.metadata.name}`) });
    informers.push(informer);
    informer.start();
    await settle(informer);
    clock.advance(59_999);
    await settle(informer);
    assert.equal(lists, 1, "not given up before its time");
    clock.advance(1);
    await settle(informer);
    clock.advance(100);
    await informer.waitForSync();
    assert.equal(lists, 2);
    assert.deepEqual(seen, ["add a"]);
    answerFirst();
    await settle(informer);
    assert.deepEqual(seen, ["add a"], "the list given up does not empty the cache when it comes");
    assert.equal(informer.list().length, 1);
  });

  it("tells nothing more once stopped, and a wait for sync fails when it stops first", async () => {
    const informer = startInformer(spied(store, { list: [new UnavailableError("store away")] }).source);
    const sync = informer.waitForSync();
    informer.stop();
    await assert.rejects(sync, UnavailableError);

    const running = startInformer();
    await running.waitForSync();
    running.stop();
    await store.create("Sandbox", sandbox("late"));
    await running.whenIdle();
    assert.deepEqual(seen, []);
  });

  it("tells handlers added while it runs about every cached object first, then about every change after", async () => {
    await store.create("Sandbox", sandbox("a"));
    const informer = startInformer();
    await informer.waitForSync();
    await store.create("Sandbox", sandbox("b"));
    // Added with the change to b still on its way: b's add is told once, in order.
    const late: string[] = [];
    informer.addHandlers({
      onAdd: (s) => late.push(`add ${s.metadata.name}`),
      onUpdate: (_previous, current) => late.push(`update ${current.metadata.name} ${current.status?.phase ?? "-"}`),
      onDelete: (s) => late.push(`delete ${s.metadata.name}`),
    });
    await informer.whenIdle();
    assert.deepEqual(late.sort(), ["add a", "add b"]);
    await setStatus("a", "Running", "agent-0");
    await store.delete("Sandbox", { namespace: "default", name: "b" });
    await informer.whenIdle();
    assert.deepEqual(late.slice(2), ["update a Running", "delete b"]);
  });

  it("tells a removed handler nothing more, even one removed before it was told about the cache", async () => {
    await store.create("Sandbox", sandbox("a"));
    const informer = startInformer();
    await informer.waitForSync();
    const told: string[] = [];
    const joined = informer.addHandlers({ onAdd: (s) => told.push(`joined ${s.metadata.name}`) });
    const removedAtOnce = informer.addHandlers({ onAdd: (s) => told.push(`removed ${s.metadata.name}`) });
    removedAtOnce();
    await informer.whenIdle();
    joined();
    await store.create("Sandbox", sandbox("b"));
    await informer.whenIdle();
    assert.deepEqual(told, ["joined a"]);
    assert.deepEqual(seen, ["add a", "add b"], "the other handlers still hear");
  });

  it("serves all its users with one list and one watch, and runs until the last of them stops", async () => {
    await store.create("Sandbox", sandbox("a"));
    const { source, spy } = spied(store);
    const informer = startInformer(source);
    informer.start();
    await informer.waitForSync();
    assert.equal(spy.lists, 1);
    assert.equal(spy.watchedFrom.length, 1);

    informer.stop();
    await store.create("Sandbox", sandbox("b"));
    await informer.whenIdle();
    assert.deepEqual(seen.sort(), ["add a", "add b"], "one user left: it still follows the store");
    informer.stop();
    await store.create("Sandbox", sandbox("c"));
    await informer.whenIdle();
    assert.deepEqual(seen.sort(), ["add a", "add b"], "the last user stopped it");
    informer.start();
    await settle(informer);
    assert.equal(spy.lists, 1, "a stopped informer does not start again");
  });

  it("takes indexes while it runs, built over the cache; an index of the same name must be the same function", async () => {
    const informer = startInformer();
    await informer.waitForSync();
    await store.create("Sandbox", sandbox("a"));
    await setStatus("a", "Running", "agent-0");
    await informer.whenIdle();
    const byPhase = (s: Sandbox) => (s.status?.phase ? [s.status.phase] : []);
    informer.addIndexes({ phase: byPhase });
    informer.addIndexes({ phase: byPhase });
    assert.deepEqual(
      informer.byIndex("phase", "Running").map((s) => s.metadata.name),
      ["a"],
    );
    await setStatus("a", "Lost", "agent-0");
    await informer.whenIdle();
    assert.deepEqual(informer.byIndex("phase", "Running"), []);
    assert.deepEqual(
      informer.byIndex("phase", "Lost").map((s) => s.metadata.name),
      ["a"],
    );
    assert.throws(() => informer.addIndexes({ phase: (s) => byPhase(s) }), /has an index "phase" already, made by another function/);
  });
});

/** Lets the informer's list calls and deliveries run (they are promises and immediates, not timers). */
async function settle(informer: Informer<"Sandbox">): Promise<void> {
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    await informer.whenIdle();
  }
}
