import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PreparedPool } from "./prepared-pool.js";

/** A prepare whose calls are counted and which fails when told to. */
function preparer(failures: Set<number> = new Set()) {
  let calls = 0;
  return {
    get calls() {
      return calls;
    },
    prepare: () => {
      calls += 1;
      const n = calls;
      return failures.has(n) ? Promise.reject(new Error(`prepare ${n} failed`)) : Promise.resolve(n);
    },
  };
}

describe("PreparedPool", () => {
  it("takes the oldest item a predicate accepts, leaving the others in order, and refills", async () => {
    const source = preparer();
    const pool = new PreparedPool({ target: 4, prepare: source.prepare });
    await pool.filled();
    assert.equal(
      pool.take((n): n is number => n % 2 === 0),
      2,
    );
    assert.equal(
      pool.take((n): n is number => n > 10),
      undefined,
    );
    await pool.filled();
    assert.equal(pool.size, 4);
    assert.deepEqual([pool.take(), pool.take(), pool.take(), pool.take()], [1, 3, 4, 5]);
  });

  it("prepares nothing until asked, then fills up to its target, one at a time", async () => {
    const source = preparer();
    let running = 0;
    let maxRunning = 0;
    const pool = new PreparedPool({
      target: 3,
      prepare: async () => {
        running += 1;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((resolve) => setImmediate(resolve));
        running -= 1;
        return source.prepare();
      },
    });
    assert.equal(source.calls, 0);
    await pool.filled();
    assert.equal(pool.size, 3);
    assert.equal(source.calls, 3);
    assert.equal(maxRunning, 1);
  });

  it("hands out the oldest first and refills behind each take", async () => {
    const source = preparer();
    const pool = new PreparedPool({ target: 2, prepare: source.prepare });
    await pool.filled();
    assert.equal(pool.take(), 1);
    await pool.filled();
    assert.deepEqual([pool.take(), pool.take()], [2, 3]);
    await pool.filled();
    assert.equal(pool.size, 2);
  });

  it("take() on an empty pool answers undefined at once (the caller prepares its own)", () => {
    const pool = new PreparedPool({ target: 2, prepare: () => new Promise<number>(() => undefined) });
    assert.equal(pool.take(), undefined);
    assert.equal(new PreparedPool({ target: 0, prepare: () => Promise.resolve(1) }).take(), undefined);
  });

  it("retries a failed prepare and reports each failure", async () => {
    const source = preparer(new Set([1, 2]));
    const errors: string[] = [];
    const pool = new PreparedPool({ target: 1, prepare: source.prepare, retryDelayMs: 1, onError: (error) => errors.push((error as Error).message) });
    await pool.filled();
    assert.deepEqual(errors, ["prepare 1 failed", "prepare 2 failed"]);
    assert.equal(pool.take(), 3);
  });

  it("says why it is short of its target while its prepares fail, and forgets it once one succeeds", async () => {
    const source = preparer(new Set([1, 2]));
    const seen: (string | undefined)[] = [];
    const pool: PreparedPool<number> = new PreparedPool({
      target: 1,
      prepare: source.prepare,
      retryDelayMs: 1,
      onError: () => seen.push((pool.failure?.error as Error | undefined)?.message),
    });
    assert.equal(pool.failure, undefined);
    await pool.filled();
    assert.deepEqual(seen, ["prepare 1 failed", "prepare 2 failed"]);
    assert.equal(pool.failure, undefined);
    assert.equal(pool.size, 1);
  });
  it("adopted items are taken first, even beyond the target", async () => {
    const source = preparer();
    const pool = new PreparedPool({ target: 1, prepare: source.prepare });
    pool.adopt([101, 102]);
    assert.equal(pool.size, 2);
    assert.equal(pool.take(), 101);
    assert.equal(pool.take(), 102);
    await pool.filled();
    assert.equal(pool.take(), 1);
  });

  it("drain stops refilling, waits for the prepare in progress and returns every ready item", async () => {
    let finish: (value: number) => void = () => undefined;
    const pool = new PreparedPool({ target: 3, prepare: () => new Promise<number>((resolve) => (finish = resolve)) });
    pool.adopt([7]);
    pool.fill();
    const drained = pool.drain();
    finish(8);
    assert.deepEqual(await drained, [7, 8]);
    assert.equal(pool.take(), undefined);
    assert.throws(() => pool.adopt([9]));
  });

  it("waits for beforeEachPrepare before every prepare, and a drain ends the wait", async () => {
    let gate: () => void = () => undefined;
    let waits = 0;
    let made = 0;
    const pool = new PreparedPool({
      target: 2,
      prepare: async () => ++made,
      beforeEachPrepare: (signal) =>
        new Promise<void>((resolve, reject) => {
          waits += 1;
          gate = resolve;
          signal.addEventListener("abort", () => reject(new Error("stopped")));
        }),
    });
    pool.fill();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(waits, 1);
    assert.equal(made, 0, "nothing is prepared while the gate is closed");
    gate();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(made, 1);
    assert.equal(waits, 2);
    assert.deepEqual(await pool.drain(), [1]);
    assert.equal(made, 1, "a drained pool prepares nothing more");
  });

  it("prepares nothing when a taken item is given back while the refill waits (a claim refused before it touched the item)", async () => {
    let gate: () => void = () => undefined;
    let made = 0;
    const pool = new PreparedPool({
      target: 2,
      prepare: async () => 100 + ++made,
      beforeEachPrepare: () => new Promise<void>((resolve) => (gate = resolve)),
    });
    pool.adopt([1, 2]);
    const taken = pool.take();
    assert.equal(taken, 1);
    await new Promise((resolve) => setImmediate(resolve));
    pool.adopt([1]);
    gate();
    await pool.filled();
    assert.equal(made, 0, "the pool is at its target again: nothing more is made");
    assert.equal(pool.size, 2);
    await pool.drain();
  });

  it("randomized takes, adoptions and fills against a model: every item is handed out once, kept, or drained", async () => {
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let round = 0; round < 20; round++) {
      let next = 0;
      const made = new Set<number>();
      const pool = new PreparedPool({
        target: 1 + Math.floor(random() * 4),
        retryDelayMs: 1,
        prepare: async () => {
          await new Promise((resolve) => setImmediate(resolve));
          if (random() < 0.2) throw new Error("flaky");
          next += 1;
          made.add(next);
          return next;
        },
      });
      const handedOut: number[] = [];
      for (let op = 0; op < 40; op++) {
        const choice = random();
        if (choice < 0.5) {
          const item = pool.take();
          if (item !== undefined) handedOut.push(item);
        } else if (choice < 0.6) {
          const adopted = 1000 * (round + 1) + op;
          made.add(adopted);
          pool.adopt([adopted]);
        } else if (choice < 0.8) {
          await pool.filled();
          assert.ok(pool.size >= pool.target);
        } else {
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
      const drained = await pool.drain();
      const all = [...handedOut, ...drained];
      assert.equal(new Set(all).size, all.length, "an item was handed out twice");
      assert.deepEqual(new Set(all), made, "an item was lost");
    }
  });
});
