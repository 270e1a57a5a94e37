import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { setTimeout as realSleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { FakeClock, every, monotonicMs, sleep, systemClock, type Clock } from "./clock.js";

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

  it("moves its wall clock and its monotonic clock together, or its wall clock alone when stepped; timers follow the monotonic one", () => {
    const clock = new FakeClock(new Date("2026-03-04T05:06:07.000Z"));
    const fired: string[] = [];
    clock.setTimeout(() => fired.push(`fired@${clock.now().toISOString()}`), 1000);
    const mono = clock.monotonicMs();
    clock.advance(500);
    assert.equal(clock.monotonicMs() - mono, 500);
    clock.stepWallClock(60_000);
    assert.equal(clock.now().toISOString(), "2026-03-04T05:07:07.500Z");
    assert.equal(clock.monotonicMs() - mono, 500, "a wall-clock step does not move the monotonic clock");
    assert.deepEqual(fired, [], "nor fires a timer");
    assert.equal(clock.nextTimerAt()?.toISOString(), "2026-03-04T05:07:08.000Z");
    clock.stepWallClock(-120_000);
    clock.advance(500);
    assert.deepEqual(fired, ["fired@2026-03-04T05:05:08.000Z"], "fires after its delay (now 60 s behind), whichever way the wall clock stepped");
    assert.equal(clock.monotonicMs() - mono, 1000);
  });

  it("refuses to move backwards", async () => {
    assert.throws(() => new FakeClock().advance(-1), RangeError);
    await assert.rejects(new FakeClock().advanceAsync(-1), RangeError);
  });

  it("advanceAsync lets the code a timer woke await and set its next timer within the same step", async () => {
    const clock = new FakeClock();
    const woken: string[] = [];
    void (async () => {
      for (let i = 0; i < 3; i++) {
        await sleep(clock, 100);
        await Promise.resolve();
        woken.push(clock.now().toISOString());
      }
    })();
    await clock.advanceAsync(250);
    assert.deepEqual(woken, ["2026-01-01T00:00:00.100Z", "2026-01-01T00:00:00.200Z"]);
    assert.equal(clock.now().toISOString(), "2026-01-01T00:00:00.250Z");
    await clock.advanceAsync(50);
    assert.equal(woken.length, 3);
  });
});

describe("sleep", () => {
  it("resolves once the clock has moved by the delay, not before", async () => {
    const clock = new FakeClock();
    let done = false;
    const slept = sleep(clock, 1000).then(() => (done = true));
    await clock.advanceAsync(999);
    assert.equal(done, false);
    await clock.advanceAsync(1);
    await slept;
    assert.equal(done, true);
  });

  it("rejects with the signal's reason and cancels its timer when aborted, or at once when already aborted", async () => {
    const clock = new FakeClock();
    const controller = new AbortController();
    const slept = sleep(clock, 1000, controller.signal);
    controller.abort(new Error("shutting down"));
    await assert.rejects(slept, /shutting down/);
    assert.equal(clock.pendingTimers, 0);
    await assert.rejects(sleep(clock, 1000, controller.signal), /shutting down/);
    assert.equal(clock.pendingTimers, 0);
  });

  it("forgets the signal once it resolved: a later abort changes nothing", async () => {
    const clock = new FakeClock();
    const controller = new AbortController();
    const slept = sleep(clock, 10, controller.signal);
    clock.advance(10);
    await slept;
    // A listener left behind would keep the sleep's closure alive and cancel a fired timer.
    assert.equal(getEventListeners(controller.signal, "abort").length, 0);
    assert.equal(clock.pendingTimers, 0);
    controller.abort();
  });
});

describe("every", () => {
  it("calls back once per interval, the first time one interval from now, each at its own time", () => {
    const clock = new FakeClock();
    const calls: string[] = [];
    every(clock, 1000, () => calls.push(clock.now().toISOString()));
    clock.advance(999);
    assert.deepEqual(calls, []);
    clock.advance(2001);
    assert.deepEqual(calls, ["2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z", "2026-01-01T00:00:03.000Z"]);
  });

  it("stops when cancelled, also from inside the callback, leaving no timer behind", () => {
    const clock = new FakeClock();
    let calls = 0;
    const timer = every(clock, 100, () => {
      calls += 1;
      if (calls === 2) timer.cancel();
    });
    clock.advance(1000);
    assert.equal(calls, 2);
    assert.equal(clock.pendingTimers, 0);

    const outside = every(clock, 100, () => (calls += 1));
    outside.cancel();
    outside.cancel();
    clock.advance(1000);
    assert.equal(calls, 2);
  });

  it("runs on real time with the systemClock", async () => {
    let calls = 0;
    const timer = every(systemClock, 5, () => (calls += 1));
    await realSleep(60);
    timer.cancel();
    assert.ok(calls >= 2, `called ${calls} times`);
    const after = calls;
    await realSleep(30);
    assert.equal(calls, after);
  });
});

describe("systemClock", () => {
  it("fires after the delay and not when cancelled", async () => {
    const fired: string[] = [];
    systemClock.setTimeout(() => fired.push("kept"), 5);
    systemClock.setTimeout(() => fired.push("cancelled"), 5).cancel();
    await realSleep(40);
    assert.deepEqual(fired, ["kept"]);
  });

  it("waits out delays beyond Node's timer limit instead of firing at once", async () => {
    const fired: string[] = [];
    const timer = systemClock.setTimeout(() => fired.push("a month later"), 30 * 24 * 3600 * 1000);
    await realSleep(30);
    assert.deepEqual(fired, []);
    timer.cancel();
  });

  it("tells the real time", () => {
    const before = Date.now();
    const now = systemClock.now().getTime();
    assert.ok(now >= before && now <= Date.now());
  });

  it("has a monotonic reading; a clock without one falls back to its wall-clock time", () => {
    const first = monotonicMs(systemClock);
    assert.ok(monotonicMs(systemClock) >= first);
    const wallOnly: Clock = { now: () => new Date(1234), setTimeout: systemClock.setTimeout };
    assert.equal(monotonicMs(wallOnly), 1234);
  });
});
