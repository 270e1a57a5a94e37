import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { onStopSignal, stopSignalled, type StopSignal } from "./stop-signals.js";

const listeners = () => ({ SIGINT: process.listenerCount("SIGINT"), SIGTERM: process.listenerCount("SIGTERM") });

describe("stop signals", () => {
  it("resolves with the first of SIGINT and SIGTERM and then listens for neither: a later SIGTERM is not swallowed", async () => {
    for (const first of ["SIGINT", "SIGTERM"] as const) {
      const before = listeners();
      const signalled = stopSignalled();
      assert.deepEqual(listeners(), { SIGINT: before.SIGINT + 1, SIGTERM: before.SIGTERM + 1 });
      process.emit(first, first);
      assert.equal(await signalled, first);
      assert.deepEqual(listeners(), before, `after ${first}`);
    }
  });

  it("calls the handler once, and not at all once the work ended first", () => {
    const before = listeners();
    const heard: StopSignal[] = [];
    const stopListening = onStopSignal((signal) => heard.push(signal));
    process.emit("SIGTERM", "SIGTERM");
    assert.deepEqual(listeners(), before);
    stopListening();
    assert.deepEqual(heard, ["SIGTERM"]);
    const never = onStopSignal((signal) => heard.push(signal));
    never();
    assert.deepEqual(listeners(), before);
    assert.deepEqual(heard, ["SIGTERM"]);
  });
});
