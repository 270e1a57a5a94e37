import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { RECREATE_BACK_OFF_MAX_MS, RECREATE_BACK_OFF_RESET_MS, RecreateBackOff } from "./recreate-back-off.js";

const MIN = 60_000;

describe("RecreateBackOff", () => {
  it("replaces a first loss at once, then doubles from 10 s for each instance lost within 10 minutes of being made, up to 5 minutes", () => {
    const backOff = new RecreateBackOff();
    assert.deepEqual(backOff.delay({ key: "default/a", sandboxId: "i0", madeAtMs: undefined, lostAtMs: 1000 }), { delayMs: 0, untilMs: 1000, inARow: 0 });
    const delays: number[] = [];
    for (let i = 1; i <= 8; i += 1) delays.push(backOff.delay({ key: "default/a", sandboxId: `i${i}`, madeAtMs: i * MIN, lostAtMs: i * MIN + 1000 }).delayMs);
    assert.deepEqual(delays, [10_000, 20_000, 40_000, 80_000, 160_000, RECREATE_BACK_OFF_MAX_MS, RECREATE_BACK_OFF_MAX_MS, RECREATE_BACK_OFF_MAX_MS]);
  });

  it("answers the same for the same lost instance however often it is asked, from the time of its loss first given", () => {
    const backOff = new RecreateBackOff();
    const lost = { key: "default/a", sandboxId: "i1", madeAtMs: 0, lostAtMs: 5000 };
    assert.deepEqual(backOff.delay(lost), { delayMs: 10_000, untilMs: 15_000, inARow: 1 });
    assert.deepEqual(backOff.delay(lost), { delayMs: 10_000, untilMs: 15_000, inARow: 1 });
    // A loss without a recorded time is given the time of the reconcile: the first one counts.
    assert.deepEqual(backOff.delay({ ...lost, lostAtMs: 9000 }), { delayMs: 10_000, untilMs: 15_000, inARow: 1 });
    assert.equal(backOff.delay({ ...lost, sandboxId: "i2" }).delayMs, 20_000);
  });

  it("starts over after an instance that ran 10 minutes, and forgets a sandbox that is gone", () => {
    const backOff = new RecreateBackOff();
    assert.equal(backOff.delay({ key: "default/a", sandboxId: "i1", madeAtMs: 0, lostAtMs: 1000 }).delayMs, 10_000);
    assert.equal(backOff.delay({ key: "default/a", sandboxId: "i2", madeAtMs: 0, lostAtMs: RECREATE_BACK_OFF_RESET_MS }).delayMs, 0);
    assert.equal(backOff.delay({ key: "default/a", sandboxId: "i3", madeAtMs: 0, lostAtMs: 1000 }).delayMs, 10_000, "the count started over");
    assert.equal(backOff.delay({ key: "default/b", sandboxId: "j1", madeAtMs: 0, lostAtMs: 1000 }).delayMs, 10_000, "each sandbox its own");
    backOff.forget("default/a");
    assert.equal(
      backOff.delay({ key: "default/a", sandboxId: "i4", madeAtMs: 0, lostAtMs: 1000 }).delayMs,
      10_000,
      "a quick loss of one not known counts as the first in a row",
    );
  });
});
