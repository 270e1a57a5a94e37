import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AlreadyExistsError, UnavailableError } from "@fast-sandbox/api/core";
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

  it("refuses a retry of a create in flight as a duplicate, running nothing more, and keeps tracking the first", async () => {
    const creates = new CreatesInFlight();
    let finish: (value: string) => void = () => undefined;
    let runs = 0;
    const first = creates.track("a", () => {
      runs += 1;
      return new Promise<string>((resolve) => (finish = resolve));
    });
    await assert.rejects(
      creates.track("a", () => {
        runs += 1;
        return Promise.resolve("second");
      }),
      (error: unknown) => error instanceof AlreadyExistsError && /is being created already/.test(error.message),
    );
    assert.equal(runs, 1, "the retry ran no create of its own");
    let settled = false;
    const waiting = creates.settled("a").then(() => (settled = true));
    await Promise.resolve();
    assert.equal(settled, false, "the first create is still tracked");
    finish("first");
    assert.equal(await first, "first");
    await waiting;
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

  it("refuses a create of an id while a delete of it runs (two overlapping deletes: until both ended), and runs it afterwards", async () => {
    const creates = new CreatesInFlight();
    let finishFirst: () => void = () => undefined;
    let finishSecond: () => void = () => undefined;
    const first = creates.deleting("x", () => new Promise<void>((resolve) => (finishFirst = resolve)));
    const second = creates.deleting("x", () => new Promise<void>((resolve) => (finishSecond = resolve)));
    await assert.rejects(
      creates.track("x", () => Promise.resolve("made")),
      (error: Error) => error instanceof UnavailableError && /being deleted/.test(error.message),
    );
    assert.equal(await creates.track("y", () => Promise.resolve("other")), "other", "other ids are not held up");
    finishFirst();
    await first;
    await assert.rejects(
      creates.track("x", () => Promise.resolve("made")),
      UnavailableError,
    );
    finishSecond();
    await second;
    assert.equal(await creates.track("x", () => Promise.resolve("made")), "made");
  });
});
