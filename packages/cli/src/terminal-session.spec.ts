import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { UnavailableError, type CommandResult, type FastSandbox } from "@fast-sandbox/sdk";
import { runExitCleanups } from "./output.js";
import { InputForwarder, MAX_INPUT_MESSAGE_BYTES, exitCodeOf, runInTerminal, runWithStdin, type TerminalIo } from "./terminal-session.js";

const MiB = 1024 * 1024;
const tick = () => new Promise((resolve) => setImmediate(resolve));

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

  it("sends at most MAX_INPUT_MESSAGE_BYTES a request, splitting a larger chunk, and pauses its source while a full message waits", async () => {
    const sent: Uint8Array[] = [];
    const flow: string[] = [];
    let release: (() => void) | undefined;
    const forwarder = new InputForwarder(
      async (data) => {
        sent.push(Buffer.from(data));
        await new Promise<void>((resolve) => (release = resolve));
      },
      (error) => assert.fail(String(error)),
      { pause: () => flow.push("pause"), resume: () => flow.push("resume") },
    );
    const input = Buffer.alloc(2.5 * MiB);
    for (let i = 0; i < input.length; i++) input[i] = i % 251;
    forwarder.push(input.subarray(0, 2 * MiB + 100));
    assert.deepEqual(flow, ["pause"], "a full message waits: the source is paused");
    forwarder.push(input.subarray(2 * MiB + 100));
    while (sent.length < 3 || release) {
      const next = release;
      release = undefined;
      next?.();
      await tick();
    }
    await forwarder.drained();
    assert.deepEqual(
      sent.map((data) => data.byteLength),
      [MAX_INPUT_MESSAGE_BYTES, MAX_INPUT_MESSAGE_BYTES, 0.5 * MiB],
    );
    assert.ok(Buffer.concat(sent).equals(input), "every byte, in order");
    assert.deepEqual(flow, ["pause", "resume"], "read on once less than a full message waits");
  });

  it("stops at the first failed send: reports it once, sends nothing after it, and drained() rejects", async () => {
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
    await assert.rejects(forwarder.drained(), /the terminal is gone/);
    forwarder.push(Buffer.from("later"));
    await assert.rejects(forwarder.drained(), /the terminal is gone/);
    assert.deepEqual(sent, []);
    assert.equal(errors.length, 1);
    assert.ok(forwarder.failed);
  });
});

/** A command in a stand-in sandbox that reads stdin through `send` and ends at end of input (exit 0) or when killed. */
function commandReading(send: (data: Uint8Array) => Promise<void>) {
  const seen = { messages: [] as number[], received: [] as Buffer[], closed: false, killed: false };
  let end!: (result: CommandResult) => void;
  const ended = new Promise<CommandResult>((resolve) => (end = resolve));
  const handle = {
    sendStdin: async (data: Uint8Array) => {
      seen.messages.push(data.byteLength);
      await send(data);
      seen.received.push(Buffer.from(data));
    },
    closeStdin: async () => {
      seen.closed = true;
      end({ exitCode: 0, stdout: "", stderr: "" });
    },
    kill: async () => {
      seen.killed = true;
      end({ exitCode: -1, error: "signal: killed", stdout: "", stderr: "" });
      return true;
    },
    wait: () => ended,
  };
  const sandbox = { commands: { run: async () => handle } } as unknown as FastSandbox;
  return { sandbox, seen };
}

function pipedIo(): TerminalIo & { stdin: PassThrough; errors: () => string } {
  const stderr = new PassThrough();
  const errors: Buffer[] = [];
  stderr.on("data", (chunk: Buffer) => errors.push(chunk));
  return { stdin: new PassThrough(), stdout: new PassThrough(), stderr, errors: () => Buffer.concat(errors).toString() };
}

describe("runWithStdin (fsb exec -i)", () => {
  it("sends a large stdin whole, in messages envd takes (at most 1 MiB), then ends the command's input", async () => {
    // envd refuses a message over 16 MiB; the sandbox takes input slower than stdin comes.
    const { sandbox, seen } = commandReading(async (data) => {
      if (data.byteLength > 16 * MiB) throw new Error("resource_exhausted: message larger than 16 MiB");
      await new Promise((resolve) => setTimeout(resolve, 5));
    });
    const io = pipedIo();
    const input = Buffer.alloc(20 * MiB, 7);
    const code = runWithStdin(sandbox, { command: ["wc", "-c"], envs: {} }, io);
    for (let offset = 0; offset < input.length; offset += 64 * 1024) {
      if (!io.stdin.write(input.subarray(offset, offset + 64 * 1024))) await new Promise((resolve) => io.stdin.once("drain", resolve));
    }
    io.stdin.end();
    assert.equal(await code, 0, io.errors());
    assert.ok(Math.max(...seen.messages) <= MAX_INPUT_MESSAGE_BYTES, `messages of ${Math.max(...seen.messages)} bytes`);
    assert.ok(Buffer.concat(seen.received).equals(input), "all of stdin, in order");
    assert.ok(seen.closed);
  });

  it("after a failed send stops reading, kills the command instead of ending its input, and exits non-zero", async () => {
    let sends = 0;
    const { sandbox, seen } = commandReading(async () => {
      if (++sends === 2) throw new Error("the connection was lost");
    });
    const io = pipedIo();
    const code = runWithStdin(sandbox, { command: ["sh", "-c", "cat > /data"], envs: {} }, io);
    io.stdin.end(Buffer.alloc(3 * MiB, 1));
    assert.equal(await code, 1);
    assert.equal(seen.closed, false, "the command did not see the end of a cut-off input");
    assert.ok(seen.killed);
    assert.equal(seen.messages.length, 2, "nothing more was sent after the failure");
    assert.match(io.errors(), /^error: the input could not be sent to the command \(the connection was lost\); it is killed/);
  });
});

describe("the command of fsb exec -i, -it and fsb shell when the CLI ends abnormally", () => {
  /** A command that runs until killed, in a stand-in sandbox whose process stream fails with `streamError` once `fail()` is called. */
  function runningCommand() {
    const seen = { killed: 0 };
    let failWait!: (error: Error) => void;
    let end!: (result: CommandResult) => void;
    const waited = new Promise<CommandResult>((resolve, reject) => ((end = resolve), (failWait = reject)));
    const kill = async () => {
      seen.killed++;
      end({ exitCode: -1, error: "signal: killed", stdout: "", stderr: "" });
      return true;
    };
    const handle = { sendStdin: async () => undefined, closeStdin: async () => undefined, kill, wait: () => waited };
    const terminal = { pid: 7, wait: () => waited };
    const sandbox = {
      commands: { run: async () => handle },
      pty: { create: async () => terminal, kill, sendInput: async () => undefined, resize: async () => undefined },
    } as unknown as FastSandbox;
    return { sandbox, seen, fail: (error: Error) => failWait(error) };
  }

  it("kills the command when its stream fails (exec -i and -it), and still fails", async () => {
    for (const start of [
      (sandbox: FastSandbox, io: TerminalIo) => runWithStdin(sandbox, { command: ["sleep", "1d"], envs: {} }, io),
      (sandbox: FastSandbox, io: TerminalIo) => runInTerminal(sandbox, { command: ["sleep", "1d"], envs: {}, interactive: true }, io),
    ]) {
      const { sandbox, seen, fail } = runningCommand();
      const session = start(sandbox, pipedIo());
      await tick();
      fail(new UnavailableError("the daemon's stream was silent for 60 s"));
      await assert.rejects(session, UnavailableError);
      assert.equal(seen.killed, 1, "killed, not left running without a deadline");
    }
  });

  it("kills the command before the CLI exits on a failed write of its output (EPIPE), and not after the session ended", async () => {
    const { sandbox, seen } = runningCommand();
    const session = runInTerminal(sandbox, { command: ["sleep", "1d"], envs: {}, interactive: false }, pipedIo());
    await tick();
    // What exitWhenReaderGoes runs before process.exit.
    await runExitCleanups();
    assert.equal(seen.killed, 1);
    assert.equal(await session, 137);
    await runExitCleanups();
    assert.equal(seen.killed, 1, "unregistered once the session ended");
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
