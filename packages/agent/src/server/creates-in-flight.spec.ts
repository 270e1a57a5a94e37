import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CreatesInFlight } from "./creates-in-flight.js";

describe("CreatesInFlight", () => {
  it("lists a create while it runs and forgets it when it settles, success or failure", async () => {
    const creates = new CreatesInFlight();
    let finish: (value: string) => void = () => undefined;
    const ok = creates.track("a", () => new Promise<string>((resolve) => (finish = resolve)));
    const failing = creates.track("b", () => Promise.reject(new Error("boom")));
    assert.deepEqual(creates.ids().sort(), ["a", "b"]);
    await assert.rejects(failing, /boom/);
    assert.deepEqual(creates.ids(), ["a"]);
    finish("done");
    assert.equal(await ok, "done");
    assert.deepEqual(creates.ids(), []);
  });

  it("drain waits for the creates in flight, and gives up after the timeout", async () => {
    const creates = new CreatesInFlight();
    assert.equal(await creates.drain(10), true);
    let finish: () => void = () => undefined;
    void creates.track("slow", () => new Promise<void>((resolve) => (finish = resolve)));
    assert.equal(await creates.drain(20), false);
    const drained = creates.drain(5000);
    finish();
    assert.equal(await drained, true);
  });

  it("settled waits for the create of one id, success or failure, and is immediate for others", async () => {
    const creates = new CreatesInFlight();
    let fail: (error: Error) => void = () => undefined;
    const failing = creates.track("x", () => new Promise<void>((_, reject) => (fail = reject)));
    failing.catch(() => undefined);
    let settled = false;
    const waiting = creates.settled("x").then(() => (settled = true));
    await creates.settled("other");
    assert.equal(settled, false);
    fail(new Error("boom"));
    await waiting;
    assert.equal(settled, true);
  });
});
