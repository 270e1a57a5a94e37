import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InputForwarder, exitCodeOf } from "./terminal-session.js";

describe("InputForwarder", () => {
  it("sends chunks in order, one request at a time, joining what arrived while one was in flight", async () => {
    const sent: string[] = [];
    let inFlight = 0;
    let release: (() => void) | undefined;
    const forwarder = new InputForwarder(
      async (data) => {
        inFlight++;
        assert.equal(inFlight, 1, "one request at a time");
        sent.push(Buffer.from(data).toString());
        await new Promise<void>((resolve) => (release = resolve));
        inFlight--;
      },
      (error) => assert.fail(String(error)),
    );
    forwarder.push(Buffer.from("l"));
    forwarder.push(Buffer.from("s"));
    forwarder.push(Buffer.from(" "));
    await new Promise((resolve) => setImmediate(resolve));
    forwarder.push(Buffer.from("-l"));
    forwarder.push(Buffer.from("\r"));
    while (sent.length < 2 || release) {
      const next = release;
      release = undefined;
      next?.();
      await new Promise((resolve) => setImmediate(resolve));
    }
    await forwarder.drained();
    assert.deepEqual(sent, ["l", "s -l\r"]);
  });

  it("reports a failed send and goes on with later input", async () => {
    const sent: string[] = [];
    const errors: unknown[] = [];
    const forwarder = new InputForwarder(
      async (data) => {
        const text = Buffer.from(data).toString();
        if (text === "bad") throw new Error("the terminal is gone");
        sent.push(text);
      },
      (error) => errors.push(error),
    );
    forwarder.push(Buffer.from("bad"));
    await forwarder.drained();
    forwarder.push(Buffer.from("good"));
    await forwarder.drained();
    assert.deepEqual(sent, ["good"]);
    assert.match(String(errors[0]), /the terminal is gone/);
  });
});

describe("exitCodeOf", () => {
  it("is the command's own code, or 128 + the signal that killed it, as a shell says", () => {
    assert.equal(exitCodeOf({ exitCode: 0 }), 0);
    assert.equal(exitCodeOf({ exitCode: 7 }), 7);
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: killed" }), 137);
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: terminated" }), 143);
    assert.equal(exitCodeOf({ exitCode: -1, error: "something else" }), 1);
  });
});
