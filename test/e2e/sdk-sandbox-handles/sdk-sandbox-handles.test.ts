/**
 * The TypeScript SDK's sandbox handles on real sandboxes: `FastSandbox.create()` through the
 * fast-path API of an embedded Fast Sandbox on the real containerd, then commands, files and
 * terminals through each sandbox's in-sandbox daemon via the real sandbox proxy (whose URL the SDK
 * asks the control plane for), and the sandbox's life (setTimeout, kill, logs) through the control
 * plane. Only the public API is used, so the case holds for either deployment mode.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import {
  CommandExitError,
  Connection,
  FastSandbox,
  NotFoundError,
  TimeoutError,
  UnauthenticatedError,
  ValidationError,
  type FilesystemEvent,
} from "@fast-sandbox/sdk";
import { containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

describe("the SDK's sandbox handles on real sandboxes", () => {
  let embedded: EmbeddedCase;
  let connection: Connection;
  let sandbox: FastSandbox;

  before(async () => {
    embedded = await startEmbedded({ name: "sdk-handles", pools: [pool("default", { maxSandboxesPerPod: 4 })] });
    connection = new Connection({ url: embedded.controlPlane.url, token: embedded.token });
    sandbox = await FastSandbox.create({ connection, command: ["sh", "-c", "echo booted; exec sleep 3600"] });
    // create() resolves once the daemon (which starts beside the sandbox's command) answers through the proxy.
    assert.equal(await sandbox.isRunning(), true);
  });

  after(async () => {
    if (!embedded) return;
    try {
      connection?.close();
      for (const s of await embedded.client.sandboxes.list()) await embedded.client.sandboxes.delete(s.metadata.name, { gracePeriodMs: 0 });
      assert.deepEqual(containerdLeftovers(embedded.containerdNamespace), { containers: [], tasks: [], snapshots: [] });
    } finally {
      await embedded.stop();
    }
  });

  it("asks the control plane where the sandbox proxy is", async () => {
    assert.match(await connection.proxyUrl(), /^http:\/\/localhost:\d+$/);
    assert.equal(new URL(await connection.proxyUrl()).port, new URL(embedded.controlPlane.proxyUrl).port);
  });

  it("runs a command whose output streams while it runs, and resolves with its result", async () => {
    // The command waits (up to 10 s) for a file the test writes only once "one" has reached it: it
    // says "three" only if its first output arrived while it ran — by cause, not by timing.
    const chunks: string[] = [];
    let released: Promise<unknown> | undefined;
    const result = await sandbox.commands.run(
      "echo one; i=0; while [ ! -e /tmp/stream-go ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo two >&2; if [ -e /tmp/stream-go ]; then echo three; else echo unreleased; fi",
      {
        onStdout: (data) => {
          chunks.push(data);
          if (data.includes("one")) released ??= sandbox.commands.run("touch /tmp/stream-go");
        },
      },
    );
    await released;
    assert.deepEqual(result, { exitCode: 0, stdout: "one\nthree\n", stderr: "two\n" });
    assert.equal(chunks[0], "one\n");
  });

  it("rejects a failing command with a CommandExitError carrying its exit code and output", async () => {
    await assert.rejects(sandbox.commands.run("echo partial; echo broken >&2; exit 3"), (error: unknown) => {
      assert.ok(error instanceof CommandExitError, String(error));
      assert.equal(error.exitCode, 3);
      assert.equal(error.stdout, "partial\n");
      assert.equal(error.stderr, "broken\n");
      return true;
    });
  });

  it("passes envs and cwd, and runs an array as a program without a shell", async () => {
    const result = await sandbox.commands.run(["sh", "-c", 'echo "$GREETING from $(pwd)"'], { envs: { GREETING: "hi" }, cwd: "/tmp" });
    assert.equal(result.stdout, "hi from /tmp\n");
  });

  it("runs a command in the background: wait() gets its result, kill() ends it", async () => {
    const quick = await sandbox.commands.run("sleep 0.3; echo done", { background: true });
    assert.ok(quick.pid > 0);
    assert.deepEqual(await quick.wait(), { exitCode: 0, stdout: "done\n", stderr: "" });

    const long = await sandbox.commands.run("sleep 300", { background: true, tag: "long" });
    assert.ok((await sandbox.commands.list()).some((p) => p.pid === long.pid && p.tag === "long"));
    assert.equal(await long.kill(), true);
    await assert.rejects(long.wait(), (error: unknown) => error instanceof CommandExitError && error.exitCode === -1 && /killed/.test(error.error ?? ""));
    await waitFor(async () => !(await sandbox.commands.list()).some((p) => p.pid === long.pid), 30_000, "the killed command to leave the list");
    assert.equal(await sandbox.commands.kill(long.pid), false);
  });

  it("sends stdin to a command and closes it", async () => {
    const cat = await sandbox.commands.run("cat; echo closed", { background: true, stdin: true });
    await cat.sendStdin("hello ");
    await cat.sendStdin(new TextEncoder().encode("world\n"));
    await cat.closeStdin();
    assert.equal((await cat.wait()).stdout, "hello world\nclosed\n");
  });

  it("follows a running command from a second handle (connect by pid)", async () => {
    // The daemon streams to a handle only what comes after it connected: the command says "late"
    // once the test writes a file after connect() (waiting up to 10 s) — by cause, not by timing.
    const first = await sandbox.commands.run(
      "i=0; while [ ! -e /tmp/connect-go ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; if [ -e /tmp/connect-go ]; then echo late; else echo unreleased; fi",
      { background: true },
    );
    const second = await sandbox.commands.connect(first.pid);
    await sandbox.commands.run("touch /tmp/connect-go");
    assert.equal((await second.wait()).stdout, "late\n");
    assert.equal((await first.wait()).stdout, "late\n");
  });

  it("leaves no command running whose run the caller aborted at any moment of its start", async () => {
    // Aborts spread over the start (before the request leaves, while the daemon starts it, as its
    // start event travels back): each run rejects, and no `sleep 4242` outlives it.
    for (const afterMs of [0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30]) {
      const controller = new AbortController();
      const running = sandbox.commands.run("sleep 4242", { signal: controller.signal });
      setTimeout(() => controller.abort(new Error(`given up after ${afterMs} ms`)), afterMs);
      await assert.rejects(running, new RegExp(`given up after ${afterMs} ms`));
    }
    // Killed before each run rejected; gone from the daemon's list once reaped.
    await waitFor(
      async () => !(await sandbox.commands.list()).some((process) => process.args.includes("sleep 4242")),
      10_000,
      "no aborted run's command left running",
    );
  });

  it("kills a command past its timeoutMs and rejects with a TimeoutError", async () => {
    // The TimeoutError naming timeoutMs (not the command's end after 30 s) shows the limit applied.
    await assert.rejects(
      sandbox.commands.run("sleep 30", { timeoutMs: 700, tag: "timed" }),
      (error: unknown) => error instanceof TimeoutError && /timeoutMs/.test(error.message),
    );
    await waitFor(async () => !(await sandbox.commands.list()).some((p) => p.tag === "timed"), 30_000, "the daemon to kill the timed-out command");
  });

  it("writes text, bytes and a stream, and reads them back as text, bytes and a stream", async () => {
    assert.deepEqual(await sandbox.files.write("/tmp/sdk/hello.txt", "héllo\n"), { name: "hello.txt", type: "file", path: "/tmp/sdk/hello.txt" });
    assert.equal(await sandbox.files.read("/tmp/sdk/hello.txt"), "héllo\n");
    const bytes = randomBytes(3 * 1024 * 1024 + 7);
    await sandbox.files.write("/tmp/sdk/random.bin", new Uint8Array(bytes));
    assert.ok(Buffer.from(await sandbox.files.read("/tmp/sdk/random.bin", { format: "bytes" })).equals(bytes));
    // A pseudo file says its size is 0 and cannot be seeked: its content, as cat reads it.
    assert.equal(await sandbox.files.read("/proc/version"), (await sandbox.commands.run("cat /proc/version")).stdout);
    assert.ok((await sandbox.files.read("/proc/cpuinfo")).includes("processor"));
    // A stream of 4 MiB in 64 KiB chunks, sent as it is produced.
    const chunk = Buffer.alloc(64 * 1024, "x");
    await sandbox.files.write(
      "/tmp/sdk/stream.txt",
      Readable.from(
        (function* () {
          for (let i = 0; i < 64; i++) yield chunk;
        })(),
      ),
    );
    assert.equal((await sandbox.commands.run("wc -c < /tmp/sdk/stream.txt")).stdout.trim(), String(64 * 64 * 1024));
    let received = 0;
    for await (const part of await sandbox.files.read("/tmp/sdk/stream.txt", { format: "stream" })) received += part.length;
    assert.equal(received, 64 * 64 * 1024);
    // What the SDK wrote is what a command in the sandbox sees.
    assert.equal((await sandbox.commands.run("cat /tmp/sdk/hello.txt")).stdout, "héllo\n");
  });

  it("lists, stats, makes, renames and removes", async () => {
    assert.equal(await sandbox.files.makeDir("/tmp/tree/sub"), true);
    assert.equal(await sandbox.files.makeDir("/tmp/tree/sub"), false);
    const writtenFrom = Date.now();
    await sandbox.files.write("/tmp/tree/a.txt", "aaa");
    const writtenBy = Date.now();
    const entries = await sandbox.files.list("/tmp/tree");
    assert.deepEqual(entries.map((e) => [e.name, e.type, e.path]).sort(), [
      ["a.txt", "file", "/tmp/tree/a.txt"],
      ["sub", "dir", "/tmp/tree/sub"],
    ]);
    const info = await sandbox.files.getInfo("/tmp/tree/a.txt");
    assert.equal(info.sizeBytes, 3);
    // Set by the write. A file's time may lag by its filesystem's granularity (whole seconds on some,
    // the kernel's coarse clock on others): 1 s below; the SDK rounds it to the nearest ms: 1 ms above.
    const modifiedMs = info.modifiedTime?.getTime() ?? NaN;
    assert.ok(
      writtenFrom - 1000 <= modifiedMs && modifiedMs <= writtenBy + 1,
      `modified ${info.modifiedTime?.toISOString()}, written ${new Date(writtenFrom).toISOString()}..${new Date(writtenBy).toISOString()}`,
    );
    assert.equal((await sandbox.files.rename("/tmp/tree/a.txt", "/tmp/tree/sub/b.txt")).path, "/tmp/tree/sub/b.txt");
    assert.equal(await sandbox.files.exists("/tmp/tree/a.txt"), false);
    assert.equal(await sandbox.files.read("/tmp/tree/sub/b.txt"), "aaa");
    await sandbox.files.remove("/tmp/tree");
    assert.equal(await sandbox.files.exists("/tmp/tree"), false);
  });

  it("watches a directory: creations and writes arrive as events until stop()", async () => {
    await sandbox.files.makeDir("/tmp/watched");
    const events: FilesystemEvent[] = [];
    const watch = await sandbox.files.watchDir("/tmp/watched", (event) => void events.push(event));
    await sandbox.files.write("/tmp/watched/new.txt", "1");
    await sandbox.commands.run("echo more >> /tmp/watched/new.txt");
    await waitFor(
      () => events.some((e) => e.type === "create" && e.name === "new.txt") && events.some((e) => e.type === "write"),
      10_000,
      "create and write events",
    );
    await watch.stop();
    const seen = events.length;
    await sandbox.files.write("/tmp/watched/after.txt", "x");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(events.length, seen, "no events after stop()");
  });

  it("fails with typed errors: unknown pid, missing file, a directory read as a file, an empty path, an unknown user", async () => {
    await assert.rejects(sandbox.commands.connect(999_999), (error: unknown) => error instanceof NotFoundError && /999999/.test(error.message));
    await assert.rejects(sandbox.commands.sendStdin(999_999, "x"), NotFoundError);
    await assert.rejects(sandbox.files.read("/no/such/file"), (error: unknown) => error instanceof NotFoundError && /\/no\/such\/file/.test(error.message));
    await assert.rejects(sandbox.files.getInfo("/no/such/file"), NotFoundError);
    await assert.rejects(sandbox.files.read("/tmp"), (error: unknown) => error instanceof ValidationError && /directory/.test(error.message));
    await assert.rejects(sandbox.files.write("", "x"), (error: unknown) => error instanceof ValidationError && error.field === "path");
    await assert.rejects(
      sandbox.commands.run("true", { user: "no-such-user-here" }),
      (error: unknown) => error instanceof UnauthenticatedError && /no-such-user-here/.test(error.message),
    );
  });

  it("opens a terminal of the given size that echoes, resizes and ends with the shell's exit code", async () => {
    let output = "";
    const terminal = await sandbox.pty.create({ cols: 80, rows: 24, onData: (data) => (output += new TextDecoder().decode(data)) });
    const typed = async (text: string, expected: RegExp) => {
      await sandbox.pty.sendInput(terminal.pid, text);
      await waitFor(() => expected.test(output), 10_000, `${JSON.stringify(expected.source)} in the terminal's output`);
    };
    await typed("echo hel''lo\r", /echo hel''lo\r?\n(.*\n)*hello\r?\n/);
    await typed("stty size\r", /24 80/);
    await sandbox.pty.resize(terminal.pid, { cols: 120, rows: 40 });
    await typed("stty size\r", /40 120/);
    await sandbox.pty.sendInput(terminal.pid, "exit 4\r");
    await assert.rejects(terminal.wait(), (error: unknown) => error instanceof CommandExitError && error.exitCode === 4);
  });

  it("returns the logs of the sandbox's own command", async () => {
    assert.equal(await sandbox.logs(), "booted\n");
  });

  it("logs({ tail }) returns only the last lines, and with follow then what comes, until the command exits", async () => {
    const chatty = await FastSandbox.create({
      connection,
      command: [
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do echo line $i; done; printf 'zwölf €\\nno newline'; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo ' after'",
      ],
    });
    try {
      const all = "line 1\nline 2\nline 3\nline 4\nline 5\nzwölf €\nno newline";
      await waitFor(async () => (await chatty.logs()) === all, 10_000, "its first lines");
      assert.equal(await chatty.logs({ tail: 2 }), "zwölf €\nno newline", "a last line without a newline is a line");
      assert.equal(await chatty.logs({ tail: 3 }), "line 5\nzwölf €\nno newline");
      assert.equal(await chatty.logs({ tail: 0 }), "");
      assert.equal(await chatty.logs({ tail: 1000 }), all);
      await assert.rejects(chatty.logs({ tail: -1 }), (error: unknown) => error instanceof ValidationError && error.field === "tail");
      const chunks: Uint8Array[] = [];
      const received = () => Buffer.concat(chunks).toString();
      const following = chatty.logs({ follow: true, tail: 1, onData: (data) => chunks.push(data) });
      await waitFor(() => received() === "no newline", 10_000, "the last line, first");
      await chatty.commands.run("touch /tmp/go");
      assert.equal(await following, "", "handed to onData");
      assert.equal(received(), "no newline after\n", "then what came after it, once, until the command exited");
    } finally {
      await chatty.kill({ gracePeriodMs: 0 });
    }
  });

  it("connects to a sandbox by id with its token; a rotated token locks the old handle out", async () => {
    const byId = await FastSandbox.connect(sandbox.sandboxId, { connection, accessToken: sandbox.accessToken });
    assert.equal(byId.name, sandbox.name);
    assert.equal((await byId.commands.run("echo via-id")).stdout, "via-id\n");
    const rotated = await FastSandbox.connect(sandbox.name, { connection });
    await rotated.rotateAccessToken();
    assert.equal((await rotated.commands.run("echo rotated")).stdout, "rotated\n");
    await assert.rejects(byId.commands.run("echo old"), UnauthenticatedError);
    await assert.rejects(byId.files.read("/tmp/sdk/hello.txt"), UnauthenticatedError);
    sandbox = rotated;
  });

  it("setTimeout() ends the sandbox when the time is up", async () => {
    const short = await FastSandbox.create({ connection, command: ["sleep", "3600"] });
    assert.equal(await short.isRunning(), true);
    const calledAt = Date.now();
    await short.setTimeout(1_500);
    const answeredAt = Date.now();
    // 1.5 s from some moment of the call (however long its round trips took).
    const expireTime = Date.parse(short.info.spec.expireTime ?? "");
    assert.ok(expireTime >= calledAt + 1_500 && expireTime <= answeredAt + 1_500, `${expireTime - calledAt} ms after the call began`);
    await waitFor(
      () =>
        short.getInfo().then(
          () => false,
          (error: unknown) => error instanceof NotFoundError,
        ),
      20_000,
      "the expired sandbox to be deleted",
    );
    assert.equal(await short.isRunning(), false);
  });

  it("kill() deletes the sandbox; its daemon's calls then fail with NotFoundError, streams, unary calls and plain HTTP alike", async () => {
    const doomed = await FastSandbox.create({ connection, command: ["sleep", "3600"] });
    assert.equal(await doomed.isRunning(), true);
    assert.equal(await doomed.kill(), true);
    assert.equal(await doomed.kill(), false);
    assert.equal(await doomed.isRunning(), false);
    const gone = (error: unknown) => error instanceof NotFoundError && /sandbox .* is gone: deleted or expired/.test(error.message);
    await assert.rejects(doomed.commands.run("true"), gone);
    await assert.rejects(doomed.commands.list(), gone);
    await assert.rejects(doomed.files.read("/etc/hostname"), gone);
    await assert.rejects(FastSandbox.connect(doomed.name, { connection }), NotFoundError);
  });
});
