import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { FakeClock, systemClock } from "./clock.js";

describe("FakeClock", () => {
  it("stands still until advanced, then fires the timers that fell due, in due order, each at its own time", () => {
    const clock = new FakeClock(new Date("2026-03-04T05:06:07.000Z"));
    const fired: string[] = [];
    clock.setTimeout(() => fired.push(`b@${clock.now().toISOString()}`), 2000);
    clock.setTimeout(() => fired.push(`a@${clock.now().toISOString()}`), 1000);
    clock.setTimeout(() => fired.push("c"), 5000);

    clock.advance(999);
    assert.deepEqual(fired, []);
    assert.equal(clock.now().toISOString(), "2026-03-04T05:06:07.999Z");

    clock.advance(1001);
    assert.deepEqual(fired, ["a@2026-03-04T05:06:08.000Z", "b@2026-03-04T05:06:09.000Z"]);
    assert.equal(clock.now().toISOString(), "2026-03-04T05:06:09.000Z");
    assert.equal(clock.pendingTimers, 1);
    assert.equal(clock.nextTimerAt()?.toISOString(), "2026-03-04T05:06:12.000Z");
  });

  it("fires timers due at the same moment in the order they were set", () => {
    const clock = new FakeClock();
    const fired: number[] = [];
    for (const n of [1, 2, 3]) clock.setTimeout(() => fired.push(n), 100);
    clock.advance(100);
    assert.deepEqual(fired, [1, 2, 3]);
  });

  it("fires a timer set by a firing timer when it falls inside the same step, not otherwise", () => {
    const clock = new FakeClock();
    const fired: string[] = [];
    clock.setTimeout(() => {
      fired.push("first");
      clock.setTimeout(() => fired.push("inside"), 50);
      clock.setTimeout(() => fired.push("beyond"), 500);
    }, 100);
    clock.advance(200);
    assert.deepEqual(fired, ["first", "inside"]);
    clock.advance(400);
    assert.deepEqual(fired, ["first", "inside", "beyond"]);
  });

  it("never fires a cancelled timer, and a zero delay waits for the next advance", () => {
    const clock = new FakeClock();
    const fired: string[] = [];
    const cancelled = clock.setTimeout(() => fired.push("cancelled"), 10);
    clock.setTimeout(() => fired.push("zero"), 0);
    assert.deepEqual(fired, [], "never synchronously");
    cancelled.cancel();
    cancelled.cancel();
    clock.advance(0);
    assert.deepEqual(fired, ["zero"]);
    clock.advance(100);
    assert.deepEqual(fired, ["zero"]);
    assert.equal(clock.pendingTimers, 0);
  });

  it("refuses to move backwards", () => {
    assert.throws(() => new FakeClock().advance(-1), RangeError);
  });
});

describe("systemClock", () => {
  it("fires after the delay and not when cancelled", async () => {
    const fired: string[] = [];
    systemClock.setTimeout(() => fired.push("kept"), 5);
    systemClock.setTimeout(() => fired.push("cancelled"), 5).cancel();
    await sleep(40);
    assert.deepEqual(fired, ["kept"]);
  });

  it("waits out delays beyond Node's timer limit instead of firing at once", async () => {
    const fired: string[] = [];
    const timer = systemClock.setTimeout(() => fired.push("a month later"), 30 * 24 * 3600 * 1000);
    await sleep(30);
    assert.deepEqual(fired, []);
    timer.cancel();
  });

  it("tells the real time", () => {
    const before = Date.now();
    const now = systemClock.now().getTime();
    assert.ok(now >= before && now <= Date.now());
  });
});
