import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { pino } from "pino";
import { openSqliteResourceStore, type SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { FakeClock } from "./clock.js";
import { Controller, type ReconcileResult, type Reconciler } from "./controller.js";
import { Informer } from "./informer.js";

const logger = pino({ level: "silent" });

function sandbox(name: string): Sandbox {
  return { apiVersion: API_VERSION, kind: "Sandbox", metadata: { name, namespace: "default" }, spec: { image: "python:3.12", poolRef: "default" } };
}

/** A reconciler that records each call and answers with whatever `answer` says for the key. */
class RecordingReconciler implements Reconciler {
  readonly calls: string[] = [];
  /** Keys being reconciled right now, and the most at once. */
  readonly active = new Set<string>();
  maxConcurrent = 0;
  sameKeyTwice = false;
  answer: (key: string) => Promise<ReconcileResult | void> = async () => undefined;

  async reconcile(key: string): Promise<ReconcileResult | void> {
    if (this.active.has(key)) this.sameKeyTwice = true;
    this.active.add(key);
    this.maxConcurrent = Math.max(this.maxConcurrent, this.active.size);
    this.calls.push(key);
    try {
      return await this.answer(key);
    } finally {
      this.active.delete(key);
    }
  }
}

let store: SqliteResourceStore;
let clock: FakeClock;
let reconciler: RecordingReconciler;
let controller: Controller;

function startController(workers = 2): Promise<void> {
  const informer = new Informer({ store, kind: "Sandbox", logger, clock });
  controller = new Controller({ name: "test", reconciler, logger, clock, workers, initialBackoffMs: 100, maxBackoffMs: 400 });
  controller.watch(informer);
  return controller.start();
}

beforeEach(() => {
  store = openSqliteResourceStore({ path: ":memory:" });
  clock = new FakeClock();
  reconciler = new RecordingReconciler();
});

afterEach(async () => {
  await controller.stop();
  await store.close();
});

describe("Controller", () => {
  it("reconciles every object of the first list, then every object that changes, including deleted ones", async () => {
    await store.create("Sandbox", sandbox("a"));
    await store.create("Sandbox", sandbox("b"));
    await startController();
    await controller.whenIdle();
    assert.deepEqual(reconciler.calls.sort(), ["default/a", "default/b"]);

    reconciler.calls.length = 0;
    await store.create("Sandbox", sandbox("c"));
    await store.delete("Sandbox", { namespace: "default", name: "a" });
    await controller.whenIdle();
    assert.deepEqual(reconciler.calls.sort(), ["default/a", "default/c"]);
  });

  it("runs different keys side by side on its workers, never one key on two workers", async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    reconciler.answer = () => gate;
    await startController(3);
    for (const name of ["a", "b", "c", "d"]) await store.create("Sandbox", sandbox(name));
    // Changes to keys being reconciled: remembered, reconciled again afterwards.
    for (const name of ["a", "b"]) {
      const current = (await store.get("Sandbox", { namespace: "default", name })) ?? assert.fail("missing");
      await store.update("Sandbox", { ...current, metadata: { ...current.metadata, labels: { touched: "yes" } } });
    }
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(reconciler.active.size, 3, "three workers busy");
    release();
    await controller.whenIdle();
    assert.equal(reconciler.maxConcurrent, 3);
    assert.equal(reconciler.sameKeyTwice, false);
    assert.equal(reconciler.calls.filter((key) => key === "default/a").length, 2);
    assert.equal(reconciler.calls.filter((key) => key === "default/d").length, 1);
  });

  it("reconciles a key again after the requeueAfterMs it asked for, measured on the clock", async () => {
    reconciler.answer = async (key) => (key === "default/timed" ? { requeueAfterMs: 60_000 } : undefined);
    await startController();
    await store.create("Sandbox", sandbox("timed"));
    await controller.whenIdle();
    assert.equal(reconciler.calls.length, 1);
    clock.advance(59_999);
    await controller.whenIdle();
    assert.equal(reconciler.calls.length, 1);
    clock.advance(1);
    await controller.whenIdle();
    assert.equal(reconciler.calls.length, 2);
  });

  it("retries a failing key with growing pauses, capped, and starts from the first pause after a success", async () => {
    let failing = true;
    reconciler.answer = async () => {
      if (failing) throw new Error("agent away");
    };
    await startController();
    await store.create("Sandbox", sandbox("flaky"));
    await controller.whenIdle();
    const attemptsAt: number[] = [];
    const t0 = clock.now().getTime();
    for (let ms = 0; ms <= 1500; ms += 10) {
      const before = reconciler.calls.length;
      clock.advance(10);
      await controller.whenIdle();
      if (reconciler.calls.length > before) attemptsAt.push(clock.now().getTime() - t0);
    }
    assert.deepEqual(attemptsAt, [100, 300, 700, 1100, 1500], "pauses of 100, 200, 400, then the cap of 400");
    assert.equal(controller.queue.failures("default/flaky"), 6);

    failing = false;
    clock.advance(400);
    await controller.whenIdle();
    assert.equal(controller.queue.failures("default/flaky"), 0, "forgotten after a success");
  });

  it("logs a reconcile still running after slowReconcileMs, naming its key, and keeps the key until it ends", async () => {
    let release: () => void = () => undefined;
    const hung = new Promise<void>((resolve) => (release = resolve));
    reconciler.answer = (key) => (key === "default/stuck" ? hung : Promise.resolve());
    const errors: { fields: Record<string, unknown>; message: string }[] = [];
    const recording = {
      debug: () => undefined,
      warn: () => undefined,
      error: (fields: Record<string, unknown>, message: string) => errors.push({ fields, message }),
    };
    const informer = new Informer({ store, kind: "Sandbox", logger, clock });
    controller = new Controller({ name: "test", reconciler, logger: recording as never, clock, slowReconcileMs: 60_000 });
    controller.watch(informer);
    await controller.start();
    try {
      controller.enqueue("default/stuck");
      controller.enqueue("default/quick");
      await new Promise((resolve) => setImmediate(resolve));
      clock.advance(59_999);
      assert.equal(errors.length, 0, "the quick one is not logged, the stuck one not yet");
      clock.advance(1);
      assert.equal(errors.length, 1);
      assert.deepEqual(errors[0]?.fields, { controller: "test", key: "default/stuck", runningMs: 60_000 });
      assert.match(errors[0]?.message ?? "", /still running/);
      controller.enqueue("default/stuck");
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(reconciler.calls.filter((key) => key === "default/stuck").length, 1, "not reconciled twice at once");
      release();
      await controller.whenIdle();
      assert.equal(reconciler.calls.filter((key) => key === "default/stuck").length, 2, "reconciled again once it ended");
      clock.advance(120_000);
      assert.equal(errors.length, 1, "the watchdog of a reconcile that ended is gone");
    } finally {
      // Else stop() would wait for it for good.
      release();
    }
  });

  it("reconciles a key it is told about from outside the informers", async () => {
    await startController();
    controller.enqueue("default/not-stored");
    await controller.whenIdle();
    assert.deepEqual(reconciler.calls, ["default/not-stored"]);
  });

  it("stop() waits for the reconciles in progress and takes no new keys", async () => {
    let finished = false;
    reconciler.answer = async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      finished = true;
    };
    await startController();
    await store.create("Sandbox", sandbox("slow"));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(reconciler.active.size, 1);
    await controller.stop();
    assert.equal(finished, true);
    await store.create("Sandbox", sandbox("after-stop"));
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(reconciler.calls, ["default/slow"]);
  });

  it("shares an informer with another controller: each reconciles every object, and one stopping leaves the other running", async () => {
    await store.create("Sandbox", sandbox("a"));
    const shared = new Informer({ store, kind: "Sandbox", logger, clock });
    controller = new Controller({ name: "first", reconciler, logger, clock });
    controller.watch(shared);
    await controller.start();
    await controller.whenIdle();
    // The second joins the running informer later, as a new leader's reconciler does.
    const other = new RecordingReconciler();
    const second = new Controller({ name: "second", reconciler: other, logger, clock });
    second.watch(shared);
    await second.start();
    await second.whenIdle();
    assert.deepEqual(other.calls, ["default/a"]);

    await second.stop();
    await store.create("Sandbox", sandbox("b"));
    await controller.whenIdle();
    assert.deepEqual(reconciler.calls, ["default/a", "default/b"], "the informer runs on for the first");
    assert.deepEqual(other.calls, ["default/a"], "the stopped one hears nothing more");
    await controller.stop();
    assert.equal(shared.isIdle(), true);
    await store.create("Sandbox", sandbox("c"));
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(shared.get("default/c"), undefined, "stopped with its last user");
  });
});
