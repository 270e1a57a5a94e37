import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FakeClock } from "./clock.js";
import { WorkQueue, backoffDelayMs } from "./work-queue.js";

function queue(options: { initialBackoffMs?: number; maxBackoffMs?: number } = {}): { queue: WorkQueue; clock: FakeClock } {
  const clock = new FakeClock();
  return { queue: new WorkQueue({ clock, ...options }), clock };
}

/** Every key ready now, handed out (and left processing). */
function takeAll(queue: WorkQueue): string[] {
  const keys: string[] = [];
  for (let key = queue.tryGet(); key !== undefined; key = queue.tryGet()) keys.push(key);
  return keys;
}

describe("WorkQueue", () => {
  it("hands out each added key once, in the order keys were first added", () => {
    const { queue: q } = queue();
    for (const key of ["ns/a", "ns/b", "ns/a", "ns/c", "ns/b"]) q.add(key);
    assert.equal(q.readyCount, 3);
    assert.deepEqual(takeAll(q), ["ns/a", "ns/b", "ns/c"]);
  });

  it("never hands a key to a second worker while it is processed; adds meanwhile make it ready again after done", () => {
    const { queue: q } = queue();
    q.add("ns/a");
    assert.equal(q.tryGet(), "ns/a");
    q.add("ns/a");
    q.add("ns/a");
    assert.equal(q.tryGet(), undefined, "not while the first worker has it");
    q.done("ns/a");
    assert.deepEqual(takeAll(q), ["ns/a"], "once more, however many adds arrived meanwhile");
    q.done("ns/a");
    assert.equal(q.tryGet(), undefined);
    assert.ok(q.isIdle());
  });

  it("adds a key after a delay through the clock; an earlier pending time for the key wins", () => {
    const { queue: q, clock } = queue();
    q.addAfter("ns/a", 5000);
    q.addAfter("ns/a", 1000);
    q.addAfter("ns/a", 3000);
    assert.equal(q.delayedCount, 1);
    clock.advance(999);
    assert.equal(q.tryGet(), undefined);
    clock.advance(1);
    assert.deepEqual(takeAll(q), ["ns/a"]);
    q.done("ns/a");
    clock.advance(10_000);
    assert.equal(q.tryGet(), undefined, "the later times were dropped");
    q.addAfter("ns/b", 0);
    assert.deepEqual(takeAll(q), ["ns/b"], "no delay: ready at once");
  });

  it("backs a failing key off exponentially, capped, until it is forgotten", () => {
    const { queue: q, clock } = queue({ initialBackoffMs: 100, maxBackoffMs: 1000 });
    const retryDelays: number[] = [];
    for (let failure = 1; failure <= 6; failure++) {
      q.addRateLimited("ns/a");
      const started = clock.now().getTime();
      while (q.tryGet() === undefined) clock.advance(1);
      retryDelays.push(clock.now().getTime() - started);
      q.done("ns/a");
    }
    assert.deepEqual(retryDelays, [100, 200, 400, 800, 1000, 1000]);
    assert.equal(q.failures("ns/a"), 6);
    q.forget("ns/a");
    assert.equal(q.failures("ns/a"), 0);
    q.addRateLimited("ns/a");
    clock.advance(100);
    assert.deepEqual(takeAll(q), ["ns/a"], "back to the first delay");
  });

  it("folds adds into a failed key's back-off, during and after its processing (no tight retry loop through the key's own writes)", () => {
    const { queue: q, clock } = queue({ initialBackoffMs: 100 });
    q.add("ns/a");
    q.tryGet();
    q.add("ns/a"); // e.g. the failing reconcile wrote a status, whose event adds the key
    q.addRateLimited("ns/a");
    q.done("ns/a");
    q.add("ns/a"); // the event of that write arriving after the processing
    q.addAfter("ns/a", 10);
    clock.advance(99);
    assert.equal(q.tryGet(), undefined);
    clock.advance(1);
    assert.deepEqual(takeAll(q), ["ns/a"], "once, when the back-off ends");
    q.forget("ns/a");
    q.done("ns/a");
    q.add("ns/a");
    assert.deepEqual(takeAll(q), ["ns/a"], "after a success, adds are not held back");
  });

  it("wakes a waiting worker when a key becomes ready", async () => {
    const { queue: q } = queue();
    const next = q.get();
    q.add("ns/a");
    assert.equal(await next, "ns/a");
    assert.equal(q.processingCount, 1);
  });

  it("after shutDown ignores adds, drops ready and delayed keys and answers waiting workers with undefined", async () => {
    const { queue: q, clock } = queue();
    const waiting = q.get();
    q.shutDown();
    assert.equal(await waiting, undefined);
    q.add("ns/a");
    q.addAfter("ns/b", 10);
    clock.advance(10);
    assert.equal(await q.get(), undefined);
    assert.equal(q.readyCount + q.delayedCount, 0);
  });

  it("tells when it is idle: nothing ready, nothing processed (delayed keys do not count)", async () => {
    const { queue: q } = queue();
    q.addAfter("ns/later", 1000);
    assert.ok(q.isIdle());
    q.add("ns/a");
    let idle = false;
    const whenIdle = q.whenIdle().then(() => (idle = true));
    const key = q.tryGet() ?? assert.fail("no key");
    await Promise.resolve();
    assert.equal(idle, false);
    q.done(key);
    await whenIdle;
    assert.equal(idle, true);
  });
});

/** mulberry32: small, fast, good enough to drive a test. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const INITIAL_BACKOFF_MS = 50;
const MAX_BACKOFF_MS = 800;

/** The queue's rules, written as plainly as possible: lists and brute-force scans. */
class NaiveModel {
  nowMs = 0;
  ready: string[] = [];
  /** Keys added while processed: ready again after done. */
  addedWhileProcessing = new Set<string>();
  processing = new Set<string>();
  /** key → when it becomes ready, the order its time was set (ties fire in that order), and whether it is a back-off. */
  delayed = new Map<string, { dueAtMs: number; order: number; backoff: boolean }>();
  failures = new Map<string, number>();
  shutDown = false;
  private order = 0;

  add(key: string): void {
    if (this.shutDown || this.delayed.get(key)?.backoff) return;
    if (this.processing.has(key)) this.addedWhileProcessing.add(key);
    else if (!this.ready.includes(key)) this.ready.push(key);
  }

  addAfter(key: string, delayMs: number): void {
    if (this.shutDown) return;
    if (delayMs <= 0) return this.add(key);
    const dueAtMs = this.nowMs + delayMs;
    const pending = this.delayed.get(key);
    if (pending && (pending.backoff || pending.dueAtMs <= dueAtMs)) return;
    this.delayed.set(key, { dueAtMs, order: this.order++, backoff: false });
  }

  addRateLimited(key: string): void {
    if (this.shutDown) return;
    const failures = (this.failures.get(key) ?? 0) + 1;
    this.failures.set(key, failures);
    this.addedWhileProcessing.delete(key);
    this.ready = this.ready.filter((k) => k !== key);
    const delayMs = Math.min(MAX_BACKOFF_MS, INITIAL_BACKOFF_MS * 2 ** (failures - 1));
    this.delayed.set(key, { dueAtMs: this.nowMs + delayMs, order: this.order++, backoff: true });
  }

  get(): string | undefined {
    if (this.shutDown) return undefined;
    const key = this.ready.shift();
    if (key !== undefined) this.processing.add(key);
    return key;
  }

  done(key: string): void {
    if (!this.processing.delete(key)) return;
    if (this.addedWhileProcessing.delete(key) && !this.shutDown) this.ready.push(key);
  }

  advance(ms: number): void {
    const targetMs = this.nowMs + ms;
    for (;;) {
      const due = [...this.delayed].filter(([, d]) => d.dueAtMs <= targetMs).sort(([, a], [, b]) => a.dueAtMs - b.dueAtMs || a.order - b.order)[0];
      if (!due) break;
      this.delayed.delete(due[0]);
      this.nowMs = due[1].dueAtMs;
      this.add(due[0]);
    }
    this.nowMs = targetMs;
  }

  shut(): void {
    this.shutDown = true;
    this.ready = [];
    this.addedWhileProcessing.clear();
    this.delayed.clear();
  }
}

const KEYS = Array.from({ length: 12 }, (_, index) => `ns/key-${index}`);

function runRandomOperations(seed: number, steps: number): { handedOut: number; retried: number; timed: number } {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const clock = new FakeClock(new Date(0));
  const q = new WorkQueue({ clock, initialBackoffMs: INITIAL_BACKOFF_MS, maxBackoffMs: MAX_BACKOFF_MS });
  const model = new NaiveModel();
  let handedOut = 0;
  let retried = 0;
  let timed = 0;

  for (let step = 0; step < steps; step++) {
    const context = `seed ${seed} step ${step}`;
    const roll = random();
    if (roll < 0.25) {
      const key = pick(KEYS);
      q.add(key);
      model.add(key);
    } else if (roll < 0.33) {
      const key = pick(KEYS);
      const delayMs = Math.floor(random() * 400) - 20;
      q.addAfter(key, delayMs);
      model.addAfter(key, delayMs);
    } else if (roll < 0.35) {
      // Any key may be backed off, not only one being processed.
      const key = pick(KEYS);
      q.addRateLimited(key);
      model.addRateLimited(key);
    } else if (roll < 0.6) {
      const got = q.tryGet();
      assert.equal(got, model.get(), `${context}: handed out`);
      if (got !== undefined) handedOut++;
    } else if (roll < 0.8) {
      // A worker finishes one of its keys: success (forget, maybe a timed requeue) or failure (back-off).
      const key = [...model.processing][Math.floor(random() * model.processing.size)];
      const outcome = random();
      if (key !== undefined && outcome < 0.3) {
        q.addRateLimited(key);
        model.addRateLimited(key);
        retried++;
      } else if (key !== undefined && outcome < 0.5) {
        q.forget(key);
        model.failures.delete(key);
        const delayMs = Math.floor(random() * 300);
        q.addAfter(key, delayMs);
        model.addAfter(key, delayMs);
        timed++;
      } else if (key !== undefined) {
        q.forget(key);
        model.failures.delete(key);
      }
      const finished = key ?? pick(KEYS);
      q.done(finished);
      model.done(finished);
    } else if (roll < 0.998 || step < steps * 0.9) {
      const ms = Math.floor(random() * 120);
      clock.advance(ms);
      model.advance(ms);
    } else {
      // Late in the run only, so that most of it exercises a live queue.
      q.shutDown();
      model.shut();
    }

    assert.equal(q.readyCount, model.ready.length, `${context}: ready keys`);
    assert.equal(q.processingCount, model.processing.size, `${context}: keys processed`);
    assert.equal(q.delayedCount, model.delayed.size, `${context}: delayed keys`);
    assert.equal(q.isIdle(), model.ready.length === 0 && model.processing.size === 0, `${context}: idle`);
    for (const key of KEYS) assert.equal(q.failures(key), model.failures.get(key) ?? 0, `${context}: failures of ${key}`);
    for (const key of model.ready) assert.ok(!model.processing.has(key), `${context}: ${key} ready while processed`);
  }
  return { handedOut, retried, timed };
}

describe("WorkQueue against a naive model", () => {
  for (const seed of [1, 2, 3, 42, 2024]) {
    it(`agrees on every operation of 5,000 random ones (seed ${seed})`, () => {
      const { handedOut, retried, timed } = runRandomOperations(seed, 5_000);
      // Guard against a generator that never exercises one of the paths.
      assert.ok(handedOut > 500, `only ${handedOut} keys were handed out`);
      assert.ok(retried > 100, `only ${retried} failures were retried`);
      assert.ok(timed > 100, `only ${timed} timed requeues`);
    });
  }
});

describe("backoffDelayMs", () => {
  it("is 0 before any failure, doubles from the initial delay, and stops at the cap", () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 10, 2000].map((failures) => backoffDelayMs(failures, 200, 60_000)),
      [0, 200, 400, 800, 1600, 60_000, 60_000],
    );
  });
});
