import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AlwaysLeader } from "./always-leader.js";

describe("AlwaysLeader", () => {
  it("leads from run() until stop(), which aborts the signal and calls onStoppedLeading once", async () => {
    const elector = new AlwaysLeader();
    const events: string[] = [];
    let signal: AbortSignal | undefined;
    assert.equal(elector.isLeader(), false);
    elector.run({ onStartedLeading: (s) => ((signal = s), events.push("started")), onStoppedLeading: () => void events.push("stopped") });
    assert.equal(elector.isLeader(), true);
    await elector.stop();
    await elector.stop();
    assert.equal(elector.isLeader(), false);
    assert.equal(signal?.aborted, true);
    assert.deepEqual(events, ["started", "stopped"]);
    assert.throws(() => elector.run({ onStartedLeading: () => undefined, onStoppedLeading: () => undefined }), /stopped/);
  });
});
