import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AsyncQueue } from "./async-queue.js";

async function drain<T>(queue: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of queue) items.push(item);
  return items;
}

describe("AsyncQueue", () => {
  it("yields items pushed before iteration, in order, then ends", async () => {
    const queue = new AsyncQueue<number>();
    queue.push(1);
    queue.push(2);
    queue.push(3);
    queue.end();
    assert.deepEqual(await drain(queue), [1, 2, 3]);
  });

  it("wakes a waiting consumer when items arrive later", async () => {
    const queue = new AsyncQueue<string>();
    const drained = drain(queue);
    await Promise.resolve();
    queue.push("a");
    await new Promise((resolve) => setImmediate(resolve));
    queue.push("b");
    queue.end();
    assert.deepEqual(await drained, ["a", "b"]);
  });

  it("delivers the buffered items before the failure it ended with", async () => {
    const queue = new AsyncQueue<number>();
    const failure = new Error("stream broke");
    const seen: number[] = [];
    queue.push(1);
    queue.push(2);
    queue.end(failure);
    await assert.rejects(async () => {
      for await (const item of queue) seen.push(item);
    }, failure);
    assert.deepEqual(seen, [1, 2]);
  });

  it("rejects a waiting consumer when ended with an error", async () => {
    const queue = new AsyncQueue<number>();
    const drained = drain(queue);
    await Promise.resolve();
    queue.end(new Error("gone"));
    await assert.rejects(drained, /gone/);
  });

  it("ignores pushes and a second end after the first end", async () => {
    const queue = new AsyncQueue<number>();
    queue.push(1);
    queue.end();
    queue.push(2);
    queue.end(new Error("late"));
    assert.deepEqual(await drain(queue), [1]);
  });

  it("tells a producer when the consumer has caught up (whenBelow)", async () => {
    const queue = new AsyncQueue<number>();
    for (let i = 0; i < 10; i++) queue.push(i);
    assert.equal(queue.size, 10);
    let drained = false;
    const below = queue.whenBelow(3).then(() => (drained = true));
    const iterator = queue[Symbol.asyncIterator]();
    for (let i = 0; i < 7; i++) await iterator.next();
    await Promise.resolve();
    assert.equal(drained, false, "3 items still wait");
    await iterator.next();
    await below;
    assert.equal(queue.size, 2);
    // Already below: resolves at once; and ending the queue releases every waiter.
    await queue.whenBelow(5);
    const pending = queue.whenBelow(1);
    queue.end();
    await pending;
  });

  it("yields falsy items such as 0 and empty strings", async () => {
    const queue = new AsyncQueue<number | string>();
    queue.push(0);
    queue.push("");
    queue.end();
    assert.deepEqual(await drain(queue), [0, ""]);
  });

  it("lets a consumer stop early with break", async () => {
    const queue = new AsyncQueue<number>();
    for (let i = 0; i < 5; i++) queue.push(i);
    const seen: number[] = [];
    for await (const item of queue) {
      seen.push(item);
      if (item === 1) break;
    }
    assert.deepEqual(seen, [0, 1]);
  });
});
