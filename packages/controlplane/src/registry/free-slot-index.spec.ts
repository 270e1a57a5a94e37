import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FreeSlotIndex, MAX_SLOTS_PER_AGENT } from "./free-slot-index.js";

describe("FreeSlotIndex", () => {
  it("walks agents from the most free slots down", () => {
    const index = new FreeSlotIndex();
    index.set("a", 2);
    index.set("b", 7);
    index.set("c", 1);
    index.set("d", 7);
    assert.deepEqual([...index.byFreeSlotsDescending()], ["b", "d", "a", "c"]);
  });

  it("finds buckets across bitmap words, up to 1024 free slots", () => {
    const index = new FreeSlotIndex();
    const counts = [1, 31, 32, 33, 63, 64, 65, 511, 1023, MAX_SLOTS_PER_AGENT];
    for (const count of counts) index.set(`agent-${count}`, count);
    assert.deepEqual(
      [...index.byFreeSlotsDescending()],
      counts.toReversed().map((count) => `agent-${count}`),
    );
  });

  it("puts an agent whose count changed at the end of its new bucket", () => {
    const index = new FreeSlotIndex();
    index.set("a", 3);
    index.set("b", 2);
    index.set("a", 2);
    assert.deepEqual([...index.byFreeSlotsDescending()], ["b", "a"]);
    index.set("b", 2);
    assert.deepEqual([...index.byFreeSlotsDescending()], ["b", "a"], "an unchanged count keeps its position");
  });

  it("drops agents with no free slot", () => {
    const index = new FreeSlotIndex();
    index.set("a", 1);
    index.set("b", 4);
    index.set("a", 0);
    index.set("c", -2);
    assert.equal(index.size, 1);
    assert.equal(index.freeSlotsOf("a"), 0);
    assert.deepEqual([...index.byFreeSlotsDescending()], ["b"]);
    assert.equal(index.delete("b"), true);
    assert.equal(index.delete("b"), false);
    assert.deepEqual([...index.byFreeSlotsDescending()], []);
  });

  it("rejects counts above its maximum", () => {
    assert.throws(() => new FreeSlotIndex(8).set("a", 9), RangeError);
    assert.throws(() => new FreeSlotIndex().set("a", 1.5), RangeError);
  });

  it("agrees with a sorted list after thousands of random updates", () => {
    let seed = 7;
    const random = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const index = new FreeSlotIndex(100);
    const model = new Map<string, { free: number; enteredAt: number }>();
    for (let step = 0; step < 5000; step += 1) {
      const name = `agent-${Math.floor(random() * 50)}`;
      const free = Math.floor(random() * 101) - 5;
      index.set(name, free);
      const previous = model.get(name);
      if (free <= 0) model.delete(name);
      else if (previous?.free !== free) model.set(name, { free, enteredAt: step });
      const expected = [...model].sort(([, a], [, b]) => b.free - a.free || a.enteredAt - b.enteredAt).map(([agent]) => agent);
      assert.deepEqual([...index.byFreeSlotsDescending()], expected, `step ${step}`);
      assert.equal(index.size, model.size);
    }
  });
});
