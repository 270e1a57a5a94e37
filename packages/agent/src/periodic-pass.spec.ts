import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { PeriodicPass } from "./periodic-pass.js";

describe("PeriodicPass", () => {
  it("never runs two passes at once: one asked for while one runs is skipped", async () => {
    let started = 0;
    let release!: () => void;
    const pass = new PeriodicPass(() => {
      started += 1;
      return new Promise<void>((resolve) => (release = resolve));
    }, 60_000);
    const first = pass.run();
    await pass.run();
    assert.equal(started, 1, "the second was skipped, resolved at once");
    release();
    await first;
    const third = pass.run();
    assert.equal(started, 2, "once the first ended, the next runs");
    release();
    await third;
  });

  it("runs on its interval once started; stop() waits for the pass running and ends them", async () => {
    let runs = 0;
    let running = false;
    const pass = new PeriodicPass(async () => {
      running = true;
      await sleep(30);
      running = false;
      runs += 1;
    }, 10);
    pass.start();
    pass.start(); // one timer, not two
    const deadline = Date.now() + 5_000;
    while (runs < 2 && Date.now() < deadline) await sleep(5);
    assert.ok(runs >= 2, `${runs} passes`);
    await pass.stop();
    assert.equal(running, false, "stop() resolved after the pass in flight");
    const stoppedAt = runs;
    await sleep(60);
    assert.equal(runs, stoppedAt, "no pass after stop()");
  });
});
