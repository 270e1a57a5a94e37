import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport } from "@connectrpc/connect";
import { FailedPreconditionError, NotFoundError, TimeoutError, UnauthenticatedError, UnavailableError, ValidationError } from "@fast-sandbox/api";
import { Connection } from "./connection.js";
import { CommandExitError } from "./errors.js";
import { Process, ProcessEventSchema } from "./gen/envd/process/process_pb.js";
import { STREAM_SILENCE_MS } from "./request-options.js";
import { FakeControlPlane, FakeDaemon, type FakeProcessIO } from "./sandbox.fixture.js";
import { FastSandbox } from "./sandbox.js";

async function sandboxWithDaemon(): Promise<{ sandbox: FastSandbox; daemon: FakeDaemon }> {
  const plane = new FakeControlPlane();
  const daemon = new FakeDaemon();
  const connection = new Connection({ transport: plane.transport, daemon: daemon.factory });
  return { sandbox: await FastSandbox.create({ connection }), daemon };
}

/** Resolves after the in-memory transport's pending work ran, without timers (for specs that mock them). */
const drain = async () => {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** Resolves after the event loop ran the in-memory transport's pending work. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 5));

describe("commands.run", () => {
  let sandbox: FastSandbox;
  let daemon: FakeDaemon;
  beforeEach(async () => ({ sandbox, daemon } = await sandboxWithDaemon()));
  afterEach(() => daemon.killAll());

  it("resolves with the exit code and all of stdout and stderr, running the line with bash -l -c", async () => {
    daemon.define("echo out; echo err >&2", async (io) => {
      io.stdout("out\n");
      io.stderr("err\n");
      return 0;
    });
    assert.deepEqual(await sandbox.commands.run("echo out; echo err >&2"), { exitCode: 0, stdout: "out\n", stderr: "err\n" });
  });

  it("streams output to onStdout/onStderr as it arrives, before the command ends", async () => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    daemon.define("slow", async (io) => {
      io.stdout("first\n");
      await released;
      io.stderr("second\n");
      return 0;
    });
    const seen: string[] = [];
    const running = sandbox.commands.run("slow", { onStdout: (data) => seen.push(`out:${data}`), onStderr: (data) => seen.push(`err:${data}`) });
    for (let i = 0; i < 50 && seen.length === 0; i++) await settle();
    assert.deepEqual(seen, ["out:first\n"], "stdout arrived while the command still ran");
    release();
    const result = await running;
    assert.deepEqual(seen, ["out:first\n", "err:second\n"]);
    assert.equal(result.stdout, "first\n");
  });

  it("decodes UTF-8 split across chunks, and hands the raw chunks to onRawOutput unchanged", async () => {
    const bytes = new TextEncoder().encode("héllo\n");
    daemon.define("split", async (io) => {
      io.stdout(bytes.slice(0, 2));
      io.stdout(bytes.slice(2));
      io.stderr(new Uint8Array([0xff]));
      return 0;
    });
    const raw: [string, number[]][] = [];
    const result = await sandbox.commands.run("split", { onRawOutput: (stream, data) => raw.push([stream, [...data]]) });
    assert.equal(result.stdout, "héllo\n");
    assert.deepEqual(raw, [
      ["stdout", [...bytes.slice(0, 2)]],
      ["stdout", [...bytes.slice(2)]],
      ["stderr", [0xff]],
    ]);
  });

  it("rejects with a CommandExitError carrying the exit code and the output when the command fails", async () => {
    daemon.define("exit 3", async (io) => {
      io.stdout("partial\n");
      io.stderr("it broke\n");
      return 3;
    });
    await assert.rejects(sandbox.commands.run("exit 3"), (error: unknown) => {
      assert.ok(error instanceof CommandExitError);
      assert.equal(error.exitCode, 3);
      assert.equal(error.stdout, "partial\n");
      assert.equal(error.stderr, "it broke\n");
      assert.equal(error.code, "failed_precondition");
      assert.match(error.message, /command "exit 3" in sandbox sb-0000000001 exited with code 3: it broke/);
      return true;
    });
  });

  it("runs an array as a program and its arguments, with envs, cwd and the user", async () => {
    let seen: { envs: Record<string, string>; cwd: string | undefined; user: string } | undefined;
    daemon.define("printenv A", async (io) => {
      seen = { envs: io.envs, cwd: io.cwd, user: io.user };
      io.stdout(`${io.envs.A ?? ""}\n`);
      return 0;
    });
    const result = await sandbox.commands.run(["printenv", "A"], { envs: { A: "1" }, cwd: "/tmp", user: "user" });
    assert.equal(result.stdout, "1\n");
    assert.deepEqual(seen, { envs: { A: "1" }, cwd: "/tmp", user: "user" });
    const start = daemon.requests.find((r) => r.what === "process.Process/Start");
    assert.equal(start?.headers.get("authorization"), `Basic ${Buffer.from("user:").toString("base64")}`);
    assert.equal(start?.headers.get("keepalive-ping-interval"), "30");
  });

  it("kills the command when its timeoutMs passes and rejects with a TimeoutError naming the option", async () => {
    daemon.define("sleep 100", async (io) => {
      await io.killed;
      return 0;
    });
    await assert.rejects(sandbox.commands.run("sleep 100", { timeoutMs: 50 }), (error: unknown) => {
      assert.ok(error instanceof TimeoutError, String(error));
      assert.match(error.message, /did not finish within 50 ms \(timeoutMs\)/);
      return true;
    });
    for (let i = 0; i < 50 && [...daemon.processes.values()].some((p) => !p.end); i++) await settle();
    assert.ok(
      [...daemon.processes.values()].every((p) => p.end?.exitCode === -1),
      "the daemon killed it",
    );
  });

  it("reports a kill at the deadline as a TimeoutError also when the daemon's end event comes before the client's own timer", async () => {
    daemon.killEarlierMs = 15;
    daemon.define("sleep 100", async (io) => {
      await io.killed;
      return 0;
    });
    await assert.rejects(sandbox.commands.run("sleep 100", { timeoutMs: 200 }), (error: unknown) => {
      assert.ok(error instanceof TimeoutError, String(error));
      assert.match(error.message, /did not finish within 200 ms \(timeoutMs\) and was killed/);
      return true;
    });
    // A kill long before the deadline is no timeout.
    const handle = await sandbox.commands.run("sleep 100", { background: true, timeoutMs: 60_000 });
    await handle.kill();
    await assert.rejects(handle.wait(), CommandExitError);
  });

  it("rejects with the signal's reason when the caller aborts", async () => {
    daemon.define("sleep 100", async (io) => {
      await io.killed;
      return 0;
    });
    const controller = new AbortController();
    const running = sandbox.commands.run("sleep 100", { signal: controller.signal });
    await settle();
    controller.abort(new Error("the user gave up"));
    await assert.rejects(running, /the user gave up/);
  });

  it("kills the command when the caller aborts a run that waits for it, not one in the background", async () => {
    daemon.define("sleep 100", async (io) => {
      io.stdout("started\n");
      await io.killed;
      return 0;
    });
    const controller = new AbortController();
    let started!: () => void;
    const output = new Promise<void>((resolve) => (started = resolve));
    const running = sandbox.commands.run("sleep 100", { signal: controller.signal, onStdout: started });
    await output;
    assert.equal((await sandbox.commands.list()).length, 1);
    controller.abort();
    await assert.rejects(running, (error: unknown) => error instanceof DOMException && error.name === "AbortError");
    assert.deepEqual(await sandbox.commands.list(), [], "the process is gone from the sandbox");
    assert.ok(daemon.requests.some((request) => request.what === "process.Process/SendSignal"));

    const background = new AbortController();
    const handle = await sandbox.commands.run("sleep 100", { background: true, signal: background.signal });
    background.abort();
    await assert.rejects(handle.wait(), (error: unknown) => error instanceof DOMException && error.name === "AbortError");
    assert.deepEqual(
      (await sandbox.commands.list()).map((process) => process.pid),
      [handle.pid],
      "a command in the background keeps running",
    );
  });

  it("kills a command whose start the caller gave up on before its pid came (aborted, or past requestTimeoutMs)", async () => {
    daemon.define("sleep 100", async (io) => {
      await io.killed;
      return 0;
    });
    daemon.startEventDelayMs = 100;
    const controller = new AbortController();
    const running = sandbox.commands.run("sleep 100", { signal: controller.signal });
    while (daemon.processes.size === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    controller.abort(new Error("the user gave up"));
    await assert.rejects(running, /the user gave up/);
    assert.deepEqual(await sandbox.commands.list(), [], "the process is gone from the sandbox");
    assert.ok(daemon.requests.some((request) => request.what === "process.Process/SendSignal"));

    await assert.rejects(sandbox.commands.run("sleep 100", { requestTimeoutMs: 20 }), (error: unknown) => {
      assert.ok(error instanceof TimeoutError, String(error));
      assert.match(error.message, /did not start within 20 ms \(requestTimeoutMs\)/);
      return true;
    });
    assert.deepEqual(await sandbox.commands.list(), [], "the timed-out start's process is gone too");

    // A start event that does not come within the grace: the run rejects all the same, once it ends.
    daemon.startEventDelayMs = 60_000;
    const late = new AbortController();
    const waiting = sandbox.commands.run("sleep 100", { signal: late.signal });
    while (daemon.processes.size < 3) await new Promise((resolve) => setTimeout(resolve, 5));
    const abortedAt = Date.now();
    late.abort(new Error("no pid in time"));
    await assert.rejects(waiting, /no pid in time/);
    const waitedMs = Date.now() - abortedAt;
    assert.ok(waitedMs >= 1_500, `rejected after ${waitedMs} ms, before the grace (2 s) ended`);
    for (const process of daemon.processes.values()) process.kill();

    // Following a running command (Connect) and giving up on it leaves the command alone.
    daemon.startEventDelayMs = 0;
    const handle = await sandbox.commands.run("sleep 100", { background: true });
    const following = new AbortController();
    const connecting = sandbox.commands.connect(handle.pid, { signal: following.signal });
    following.abort();
    await assert.rejects(connecting);
    assert.deepEqual(
      (await sandbox.commands.list()).map((process) => process.pid),
      [handle.pid],
    );
    await handle.kill();
  });

  it("refuses an empty command and bad durations before sending anything", async () => {
    daemon.requests.length = 0;
    await assert.rejects(sandbox.commands.run("  "), (error: unknown) => error instanceof ValidationError && error.field === "command");
    await assert.rejects(sandbox.commands.run([]), (error: unknown) => error instanceof ValidationError && error.field === "command");
    await assert.rejects(sandbox.commands.run("true", { timeoutMs: -1 }), (error: unknown) => error instanceof ValidationError && error.field === "timeoutMs");
    assert.equal(daemon.requests.length, 0);
  });

  it("refuses arguments of the wrong type with a ValidationError naming the field, before sending anything", async () => {
    daemon.requests.length = 0;
    const refused = (field: string) => (error: unknown) => error instanceof ValidationError && error.field === field && /is not/.test(error.message);
    await assert.rejects(sandbox.commands.run(["echo", 1] as unknown as string[]), refused("command[1]"));
    await assert.rejects(sandbox.commands.run(5 as unknown as string), refused("command"));
    await assert.rejects(sandbox.commands.run("true", { envs: { A: 1 } as unknown as Record<string, string> }), refused("envs.A"));
    await assert.rejects(sandbox.commands.run("true", { cwd: 5 as unknown as string }), refused("cwd"));
    await assert.rejects(sandbox.commands.run("true", { tag: 5 as unknown as string }), refused("tag"));
    await assert.rejects(sandbox.pty.create({ cols: 80, rows: 24, command: ["bash", 1] as unknown as string[] }), refused("command[1]"));
    await assert.rejects(sandbox.pty.create({ cols: 80, rows: 24, envs: { A: 1 } as unknown as Record<string, string> }), refused("envs.A"));
    assert.equal(daemon.requests.length, 0);
  });

  it("fails with the daemon's reason when the program cannot start", async () => {
    await assert.rejects(sandbox.commands.run(["nosuch"]), (error: unknown) => {
      assert.ok(error instanceof ValidationError);
      assert.match(error.message, /starting command "nosuch" in sandbox sb-0000000001: .*executable file not found/);
      return true;
    });
  });

  it("explains a sandbox the proxy cannot reach and a user the daemon refuses", async () => {
    daemon.define("true", async () => 0);
    await assert.rejects(
      sandbox.commands.run("true", { user: "nobody" }),
      (error: unknown) => error instanceof UnauthenticatedError && /nobody/.test(error.message),
    );
    daemon.gone = true;
    await assert.rejects(sandbox.commands.run("true"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.match(error.message, /not reachable through the sandbox proxy/);
      return true;
    });
  });
});

describe("commands in the background", () => {
  let sandbox: FastSandbox;
  let daemon: FakeDaemon;
  beforeEach(async () => ({ sandbox, daemon } = await sandboxWithDaemon()));
  afterEach(() => daemon.killAll());

  it("returns a handle with the pid at once; wait() resolves when the command ends", async () => {
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    daemon.define("server", async (io) => {
      io.stdout("ready\n");
      await finished;
      return 0;
    });
    const handle = await sandbox.commands.run("server", { background: true });
    assert.ok(handle.pid >= 100);
    assert.equal(handle.exitCode, undefined);
    assert.deepEqual(
      (await sandbox.commands.list()).map((p) => [p.pid, p.cmd, p.args]),
      [[handle.pid, "/bin/bash", ["-l", "-c", "server"]]],
    );
    finish();
    assert.deepEqual(await handle.wait(), { exitCode: 0, stdout: "ready\n", stderr: "" });
    assert.equal(handle.exitCode, 0);
  });

  it("kill() ends it: wait() rejects with a CommandExitError saying it was killed; a second kill finds nothing", async () => {
    daemon.define("sleep 100", async (io) => {
      await io.killed;
      return 0;
    });
    const handle = await sandbox.commands.run("sleep 100", { background: true });
    assert.equal(await handle.kill(), true);
    await assert.rejects(handle.wait(), (error: unknown) => {
      assert.ok(error instanceof CommandExitError);
      assert.equal(error.exitCode, -1);
      assert.equal(error.error, "signal: killed");
      assert.match(error.message, /was stopped \(signal: killed\)/);
      return true;
    });
    assert.equal(await sandbox.commands.kill(handle.pid), false);
  });

  it("sends stdin to a command started with stdin: true, and closes it", async () => {
    daemon.define("cat", async (io) => {
      for await (const chunk of io.input()) io.stdout(chunk);
      return 0;
    });
    const handle = await sandbox.commands.run("cat", { background: true, stdin: true });
    await handle.sendStdin("hello ");
    await handle.sendStdin(new TextEncoder().encode("world"));
    await handle.closeStdin();
    assert.equal((await handle.wait()).stdout, "hello world");
  });

  it("refuses stdin to a command started without it", async () => {
    daemon.define("sleep 100", async (io) => {
      await io.killed;
      return 0;
    });
    const handle = await sandbox.commands.run("sleep 100", { background: true });
    await assert.rejects(handle.sendStdin("x"), (error: unknown) => error instanceof FailedPreconditionError && /stdin/.test(error.message));
    await handle.kill();
  });

  it("connect(pid) follows a running command from another handle, up to its exit code", async () => {
    let finish!: () => void;
    const finished = new Promise<void>((resolve) => (finish = resolve));
    daemon.define("work", async (io) => {
      await finished;
      io.stdout("done\n");
      return 5;
    });
    // No deadline: the in-memory transport does not tell the fake daemon that the first stream went away.
    const started = await sandbox.commands.run("work", { background: true, timeoutMs: 0 });
    started.disconnect();
    const followed: string[] = [];
    const handle = await sandbox.commands.connect(started.pid, { onStdout: (data) => followed.push(data) });
    assert.equal(handle.pid, started.pid);
    finish();
    await assert.rejects(handle.wait(), (error: unknown) => error instanceof CommandExitError && error.exitCode === 5);
    assert.deepEqual(followed, ["done\n"]);
    await assert.rejects(started.wait(), (error: unknown) => error instanceof FailedPreconditionError && /disconnected before it ended/.test(error.message));
  });

  it("connect, kill and sendStdin of an unknown pid: NotFoundError, false, NotFoundError", async () => {
    await assert.rejects(sandbox.commands.connect(4242), (error: unknown) => error instanceof NotFoundError && /4242/.test(error.message));
    assert.equal(await sandbox.commands.kill(4242), false);
    await assert.rejects(sandbox.commands.sendStdin(4242, "x"), (error: unknown) => error instanceof NotFoundError);
    await assert.rejects(sandbox.commands.connect(-1), (error: unknown) => error instanceof ValidationError && error.field === "pid");
  });

  it("a unary call past its requestTimeoutMs rejects with a TimeoutError naming requestTimeoutMs", async () => {
    daemon.answerDelayMs = 200;
    await assert.rejects(sandbox.commands.list({ requestTimeoutMs: 20 }), (error: unknown) => {
      assert.ok(error instanceof TimeoutError, String(error));
      assert.match(error.message, /listing processes in sandbox sb-0000000001 did not finish within 20 ms \(requestTimeoutMs\)/);
      return true;
    });
  });

  it("a stream silent for two keepalives is a lost connection: wait() rejects with an UnavailableError", async (t) => {
    let io!: FakeProcessIO;
    daemon.define("quiet", async (process) => {
      io = process;
      await process.killed;
      return 0;
    });
    // The silence is 60 s of the SDK's timers: mocked, and moved on by hand.
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const handle = await sandbox.commands.run("quiet", { background: true, timeoutMs: 0 });
    const outcome: { failure?: unknown } = {};
    const waited = handle.wait().catch((error: unknown) => (outcome.failure = error));
    await drain();
    t.mock.timers.tick(STREAM_SILENCE_MS - 1_000);
    io.keepalive();
    await drain();
    t.mock.timers.tick(STREAM_SILENCE_MS - 1_000);
    await drain();
    assert.ok(!("failure" in outcome), "a keepalive starts the silence over");
    t.mock.timers.tick(1_000);
    await waited;
    const failure = outcome.failure;
    assert.ok(failure instanceof UnavailableError, String(failure));
    assert.match(failure.message, /silent for 60 s, though it sends a keepalive every 30 s: the connection was lost/);
    await sandbox.commands.kill(handle.pid);
  });

  it("a start past its requestTimeoutMs rejects with a TimeoutError", async () => {
    daemon.answerDelayMs = 200;
    daemon.define("true", async () => 0);
    await assert.rejects(
      sandbox.commands.run("true", { requestTimeoutMs: 20 }),
      (error: unknown) => error instanceof TimeoutError && /did not start within 20 ms/.test(error.message),
    );
  });
});

describe("a process stream cut short", () => {
  /** A sandbox whose daemon's Start sends the start event and then does what `after` does. */
  async function sandboxWhoseStart(after: () => void): Promise<FastSandbox> {
    const transport = createRouterTransport(({ service }) => {
      service(Process, {
        async *start() {
          yield { event: create(ProcessEventSchema, { event: { case: "start", value: { pid: 7 } } }) };
          after();
        },
      });
    });
    const connection = new Connection({
      transport: new FakeControlPlane().transport,
      daemon: () => ({ transport, fetch: () => Promise.reject(new Error("unused")) }),
    });
    return FastSandbox.create({ connection, daemonReadyTimeoutMs: 0 });
  }

  it("without the process's end is an UnavailableError (the connection was cut), not an internal error", async () => {
    const sandbox = await sandboxWhoseStart(() => undefined);
    await assert.rejects(sandbox.commands.run("x"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /stream ended without the process's end \(the connection was cut\)/);
      return true;
    });
  });

  it("cancelled by the other end is an UnavailableError, not an internal error", async () => {
    const sandbox = await sandboxWhoseStart(() => {
      throw new ConnectError("context canceled", Code.Canceled);
    });
    await assert.rejects(sandbox.commands.run("x"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /command "x" in sandbox sb-0000000001: the call was cancelled before it finished: context canceled/);
      return true;
    });
  });
});
