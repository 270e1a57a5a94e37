import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { FailedPreconditionError, NotFoundError } from "@fast-sandbox/api";
import { UnavailableError, type CommandResult, type FastSandbox } from "@fast-sandbox/sdk";
import { runExitCleanups } from "./output.js";
import {
  INPUT_FAILURE_END_WAIT_MS,
  InputForwarder,
  MAX_INPUT_MESSAGE_BYTES,
  exitCodeOf,
  runInTerminal,
  runWithStdin,
  signalNumberOf,
  type TerminalIo,
} from "./terminal-session.js";

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

describe("runWithStdin (fsb exec -i) when the command stops taking its input", () => {
  /**
   * A command that reads the first message and then, per `after`, ends (`exitCode`) or goes on
   * without reading; later sends fail with `error`.
   */
  function stopsReading(error: Error, after: { endsWith?: number; endsAfterMs?: number }) {
    const seen = { killed: false, sends: 0 };
    let end!: (result: CommandResult) => void;
    const ended = new Promise<CommandResult>((resolve) => (end = resolve));
    const handle = {
      sendStdin: async () => {
        if (++seen.sends === 1) {
          if (after.endsWith !== undefined) setTimeout(() => end({ exitCode: after.endsWith!, stdout: "", stderr: "" }), after.endsAfterMs ?? 5);
          return;
        }
        throw error;
      },
      closeStdin: async () => undefined,
      kill: async () => {
        seen.killed = true;
        end({ exitCode: -1, error: "signal: killed", stdout: "", stderr: "" });
        return true;
      },
      wait: () => ended,
    };
    const sandbox = { commands: { run: async () => handle } } as unknown as FastSandbox;
    return { sandbox, seen, end };
  }

  /** Feeds stdin (as `yes` does) until the session ends; resolves with its exit code. */
  async function feed(sandbox: FastSandbox, io: ReturnType<typeof pipedIo>): Promise<number> {
    const code = runWithStdin(sandbox, { command: ["head", "-1"], envs: {} }, io);
    const feeding = setInterval(() => io.stdin.write(Buffer.alloc(64 * 1024, 0x79)), 1);
    try {
      return await code;
    } finally {
      clearInterval(feeding);
    }
  }

  it("ends quietly with the command's own code when it exited before taking all of stdin (yes | fsb exec -i sb -- head -1)", async () => {
    const { sandbox, seen } = stopsReading(new FailedPreconditionError("process 42: stdin was closed"), { endsWith: 0 });
    const io = pipedIo();
    assert.equal(await feed(sandbox, io), 0);
    assert.equal(io.errors(), "", "no error for a command that simply stopped reading");
    assert.equal(seen.killed, false);
  });

  it("ends quietly when the daemon no longer knows the process (it ended), with its own code", async () => {
    const { sandbox, seen } = stopsReading(new NotFoundError("no such process with pid 42 (it never ran or has ended)"), { endsWith: 3 });
    const io = pipedIo();
    assert.equal(await feed(sandbox, io), 3);
    assert.equal(io.errors(), "");
    assert.equal(seen.killed, false);
  });

  it("neither reports nor kills a command that closed its stdin and runs on (as a pipeline would)", async () => {
    const { sandbox, seen, end } = stopsReading(new FailedPreconditionError("process 42 no longer reads its input: broken pipe"), {});
    const io = pipedIo();
    const code = feed(sandbox, io);
    while (seen.sends < 2) await tick();
    await new Promise((resolve) => setTimeout(resolve, INPUT_FAILURE_END_WAIT_MS + 200));
    assert.equal(seen.killed, false);
    end({ exitCode: 5, stdout: "", stderr: "" });
    assert.equal(await code, 5);
    assert.equal(io.errors(), "");
  });

  it("does not report another failure of a send when the command ends meanwhile", async () => {
    const { sandbox, seen } = stopsReading(new UnavailableError("the connection was reset"), { endsWith: 0, endsAfterMs: 100 });
    const io = pipedIo();
    assert.equal(await feed(sandbox, io), 0);
    assert.equal(io.errors(), "");
    assert.equal(seen.killed, false);
  });
});

describe("runInTerminal (fsb exec -it, fsb shell): the window size", () => {
  function terminalIo(cols: number, rows: number) {
    const stdout = Object.assign(new PassThrough(), { isTTY: true, columns: cols, rows });
    return { stdin: new PassThrough(), stdout, stderr: new PassThrough() };
  }

  it("sends a resize that came while the terminal was being made, once it is made", async () => {
    const io = terminalIo(80, 24);
    const resizes: { pid: number; cols: number; rows: number }[] = [];
    let created: { cols: number; rows: number } | undefined;
    let end!: (result: CommandResult) => void;
    const sandbox = {
      pty: {
        create: async (options: { cols: number; rows: number }) => {
          created = { cols: options.cols, rows: options.rows };
          // The window is resized while the daemon makes the terminal.
          await tick();
          io.stdout.columns = 120;
          io.stdout.rows = 40;
          io.stdout.emit("resize");
          await tick();
          return { pid: 9, wait: () => new Promise<CommandResult>((resolve) => (end = resolve)) };
        },
        resize: async (pid: number, size: { cols: number; rows: number }) => void resizes.push({ pid, ...size }),
        kill: async () => true,
        sendInput: async () => undefined,
      },
    } as unknown as FastSandbox;
    const session = runInTerminal(sandbox, { command: ["sh"], envs: {}, interactive: false }, io);
    while (!end) await tick();
    assert.deepEqual(created, { cols: 80, rows: 24 });
    assert.deepEqual(resizes, [{ pid: 9, cols: 120, rows: 40 }]);
    // Later resizes are sent as they come.
    io.stdout.columns = 100;
    io.stdout.emit("resize");
    await tick();
    assert.deepEqual(resizes.at(-1), { pid: 9, cols: 100, rows: 40 });
    end({ exitCode: 0, stdout: "", stderr: "" });
    assert.equal(await session, 0);
    assert.equal(io.stdout.listenerCount("resize"), 0);
  });

  it("sends no resize when the size did not change while the terminal was made", async () => {
    const io = terminalIo(80, 24);
    const resizes: unknown[] = [];
    const sandbox = {
      pty: {
        create: async () => ({ pid: 9, wait: async () => ({ exitCode: 0, stdout: "", stderr: "" }) }),
        resize: async (...args: unknown[]) => void resizes.push(args),
        kill: async () => true,
        sendInput: async () => undefined,
      },
    } as unknown as FastSandbox;
    assert.equal(await runInTerminal(sandbox, { command: ["true"], envs: {}, interactive: false }, io), 0);
    assert.deepEqual(resizes, []);
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
  // envd's wording of a signal death is Go's os.ProcessState.String(): "signal: " + syscall.Signal's
  // name (zerrors_linux_amd64.go's table), " (core dumped)" after it when the process dumped core.
  const GO_SIGNALS: [string, number][] = [
    ["hangup", 1],
    ["interrupt", 2],
    ["quit", 3],
    ["illegal instruction", 4],
    ["trace/breakpoint trap", 5],
    ["aborted", 6],
    ["bus error", 7],
    ["floating point exception", 8],
    ["killed", 9],
    ["user defined signal 1", 10],
    ["segmentation fault", 11],
    ["user defined signal 2", 12],
    ["broken pipe", 13],
    ["alarm clock", 14],
    ["terminated", 15],
    ["stack fault", 16],
    ["child exited", 17],
    ["continued", 18],
    ["stopped (signal)", 19],
    ["stopped", 20],
    ["stopped (tty input)", 21],
    ["stopped (tty output)", 22],
    ["urgent I/O condition", 23],
    ["CPU time limit exceeded", 24],
    ["file size limit exceeded", 25],
    ["virtual timer expired", 26],
    ["profiling timer expired", 27],
    ["window changed", 28],
    ["I/O possible", 29],
    ["power failure", 30],
    ["bad system call", 31],
  ];

  it("is 128 + n for every signal name of Go's table, with or without (core dumped)", () => {
    for (const [name, number] of GO_SIGNALS) {
      assert.equal(exitCodeOf({ exitCode: -1, error: `signal: ${name}` }), 128 + number, name);
      assert.equal(exitCodeOf({ exitCode: -1, error: `signal: ${name} (core dumped)` }), 128 + number, `${name} (core dumped)`);
    }
  });

  it("reads a signal without a name (signal N, a real-time one), C names, and gives 1 for what it cannot read", () => {
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: signal 34" }), 162);
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: signal 64 (core dumped)" }), 192);
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: SIGSEGV" }), 139);
    assert.equal(signalNumberOf("signal: signal 300"), undefined);
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: signal 300" }), 1);
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: a signal from elsewhere" }), 1);
    assert.equal(exitCodeOf({ exitCode: -1 }), 1);
  });

  it("is the command's own code, or 128 + the signal that killed it, as a shell says", () => {
    assert.equal(exitCodeOf({ exitCode: 0 }), 0);
    assert.equal(exitCodeOf({ exitCode: 7 }), 7);
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: killed" }), 137);
    assert.equal(exitCodeOf({ exitCode: -1, error: "signal: terminated" }), 143);
    assert.equal(exitCodeOf({ exitCode: -1, error: "something else" }), 1);
  });
});
