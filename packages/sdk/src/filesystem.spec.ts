import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import { runInNewContext } from "node:vm";
import { afterEach, beforeEach, describe, it } from "node:test";
import { FsbError, NotFoundError, TimeoutError, UnauthenticatedError, UnavailableError, ValidationError } from "@fast-sandbox/api";
import { Connection } from "./connection.js";
import type { DaemonChannelFactory } from "./daemon-channel.js";
import { STREAM_SILENCE_MS } from "./request-options.js";
import { FakeControlPlane, FakeDaemon } from "./sandbox.fixture.js";
import { FastSandbox } from "./sandbox.js";
import type { FilesystemEvent } from "./watch-handle.js";

/** Resolves after the in-memory transport's pending work ran, without timers (for specs that mock them). */
const drain = async () => {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe("sandbox.files", () => {
  let sandbox: FastSandbox;
  let daemon: FakeDaemon;
  beforeEach(async () => {
    const plane = new FakeControlPlane();
    daemon = new FakeDaemon();
    sandbox = await FastSandbox.create({ connection: new Connection({ transport: plane.transport, daemon: daemon.factory }) });
  });
  afterEach(() => daemon.killAll());

  it("writes text, then reads it back as text, bytes and a stream", async () => {
    const written = await sandbox.files.write("/tmp/dir/hello.txt", "héllo\n");
    assert.deepEqual(written, { name: "hello.txt", type: "file", path: "/tmp/dir/hello.txt" });
    assert.equal(daemon.file("/tmp/dir/hello.txt"), "héllo\n");
    assert.equal(await sandbox.files.read("/tmp/dir/hello.txt"), "héllo\n");
    assert.deepEqual(await sandbox.files.read("/tmp/dir/hello.txt", { format: "bytes" }), new TextEncoder().encode("héllo\n"));
    const stream = await sandbox.files.read("/tmp/dir/hello.txt", { format: "stream" });
    assert.equal(await new Response(stream).text(), "héllo\n");
    const upload = daemon.requests.find((r) => r.what === "POST /files");
    assert.equal(upload?.headers.get("content-type"), "application/octet-stream");
  });

  it("writes bytes and streams (a web ReadableStream, a Node Readable) as they are read", async () => {
    await sandbox.files.write("/tmp/bytes", new Uint8Array([0, 1, 2, 255]));
    assert.deepEqual(await sandbox.files.read("/tmp/bytes", { format: "bytes" }), new Uint8Array([0, 1, 2, 255]));
    const web = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("part 1, "));
        controller.enqueue(new TextEncoder().encode("part 2"));
        controller.close();
      },
    });
    await sandbox.files.write("/tmp/web", web);
    assert.equal(daemon.file("/tmp/web"), "part 1, part 2");
    await sandbox.files.write("/tmp/node", Readable.from(["a", "b", "c"]));
    assert.equal(daemon.file("/tmp/node"), "abc");
  });

  it("writes any view of bytes as the bytes it spans: other typed arrays, a DataView, a part of a buffer, a Uint8Array of another realm", async () => {
    await sandbox.files.write("/tmp/int16", new Int16Array([0x4241]));
    assert.equal(daemon.file("/tmp/int16"), "AB");
    await sandbox.files.write("/tmp/view", new DataView(new TextEncoder().encode("..dv..").buffer, 2, 2));
    assert.equal(daemon.file("/tmp/view"), "dv");
    await sandbox.files.write("/tmp/part", new Uint8Array(Buffer.from("AAAAhelloBBBB")).subarray(4, 9));
    assert.equal(daemon.file("/tmp/part"), "hello");
    await sandbox.files.write("/tmp/realm", runInNewContext("new Uint8Array([104, 105])") as Uint8Array);
    assert.equal(daemon.file("/tmp/realm"), "hi");
  });

  it("a stream whose source fails fails the write with its own error, not as an unreachable proxy", async () => {
    await assert.rejects(
      sandbox.files.write("/tmp/x", createReadStream("/nonexistent/fsb-spec-file")),
      (error: unknown) => !(error instanceof FsbError) && (error as NodeJS.ErrnoException).code === "ENOENT",
    );
    const broke = new RangeError("the source broke");
    const failing = Readable.from(
      (async function* () {
        yield Buffer.from("a");
        throw broke;
      })(),
    );
    await assert.rejects(sandbox.files.write("/tmp/x", failing), (error: unknown) => error === broke);
    await assert.rejects(
      sandbox.files.write("/tmp/x", Readable.from([{ not: "bytes" }]) as never),
      (error: unknown) => error instanceof ValidationError && error.field === "data" && /not bytes/.test(error.message),
    );
  });

  it("a download read as a stream lets go of the caller's signal once it ends or is cancelled, and a broken one is an UnavailableError", async () => {
    await sandbox.files.write("/tmp/big", new Uint8Array(64 * 1024));
    daemon.downloadPartBytes = 4 * 1024;
    const caller = new AbortController();
    const listeners = () => getEventListeners(caller.signal, "abort").length;
    const whole = await sandbox.files.read("/tmp/big", { format: "stream", signal: caller.signal });
    assert.equal((await new Response(whole).arrayBuffer()).byteLength, 64 * 1024);
    assert.equal(listeners(), 0, "read to its end");
    const left = await sandbox.files.read("/tmp/big", { format: "stream", signal: caller.signal });
    const reader = left.getReader();
    await reader.read();
    await reader.cancel();
    assert.equal(listeners(), 0, "cancelled");

    // A connection cut mid-download, as undici tells it.
    const cut: DaemonChannelFactory = (target) => {
      const channel = daemon.factory(target);
      return {
        transport: channel.transport,
        fetch: async (path, init) => {
          const response = await channel.fetch(path, init);
          if (!path.startsWith("/files") || init?.method === "POST") return response;
          let sent = false;
          const body = new ReadableStream<Uint8Array>({
            pull(controller) {
              if (sent) controller.error(new TypeError("terminated", { cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }) }));
              else controller.enqueue(new Uint8Array([1]));
              sent = true;
            },
          });
          return new Response(body, { status: response.status, headers: response.headers });
        },
      };
    };
    const broken = await FastSandbox.create({ connection: new Connection({ transport: new FakeControlPlane().transport, daemon: cut }) });
    await broken.files.write("/tmp/x", "1");
    const stream = await broken.files.read("/tmp/x", { format: "stream", signal: caller.signal });
    await assert.rejects(new Response(stream).arrayBuffer(), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.match(error.message, /^reading \/tmp\/x in sandbox sb-0000000001: read ECONNRESET/);
      return true;
    });
    assert.equal(listeners(), 0, "failed");
  });

  it("gives a written file the mode asked for, in octal in the query; refuses one that is not permission bits before sending anything", async () => {
    await sandbox.files.write("/tmp/run.sh", "#!/bin/sh\n", { mode: 0o755 });
    assert.equal((await sandbox.files.getInfo("/tmp/run.sh")).mode, 0o755);
    assert.equal((await sandbox.files.getInfo("/tmp/run.sh")).permissions, "-rwxr-xr-x");
    await sandbox.files.write("/tmp/run.sh", "echo\n");
    assert.equal((await sandbox.files.getInfo("/tmp/run.sh")).mode, 0o755, "a write without a mode keeps the file's");
    const sent = daemon.requests.filter((r) => r.what === "POST /files").length;
    for (const mode of [0o1000, -1, 1.5, Number.NaN, "755" as unknown as number]) {
      await assert.rejects(sandbox.files.write("/tmp/other", "x", { mode }), (error: unknown) => {
        assert.ok(error instanceof ValidationError, String(error));
        assert.equal(error.field, "mode");
        assert.match(error.message, /not a file mode; give permission bits from 0 to 0o777/);
        return true;
      });
    }
    assert.equal(daemon.requests.filter((r) => r.what === "POST /files").length, sent);
    assert.equal(daemon.file("/tmp/other"), undefined);
    await sandbox.files.write("/tmp/locked", "x", { mode: 0 });
    assert.equal((await sandbox.files.getInfo("/tmp/locked")).permissions, "----------");
  });

  it("names the user in the query of /files (E2B's username parameter)", async () => {
    await sandbox.files.write("notes.txt", "x", { user: "user" });
    assert.equal(daemon.file("/root/notes.txt"), "x");
    assert.equal(await sandbox.files.read("notes.txt", { user: "root" }), "x");
    await assert.rejects(
      sandbox.files.read("notes.txt", { user: "nobody" }),
      (error: unknown) => error instanceof UnauthenticatedError && /nobody/.test(error.message),
    );
  });

  it("reading a missing file is a NotFoundError, a directory a ValidationError, both saying what and where", async () => {
    await assert.rejects(sandbox.files.read("/nope"), (error: unknown) => {
      assert.ok(error instanceof NotFoundError);
      assert.match(error.message, /^reading \/nope in sandbox sb-0000000001: open \/nope: no such file or directory/);
      return true;
    });
    await assert.rejects(sandbox.files.read("/tmp"), (error: unknown) => error instanceof ValidationError && /is a directory/.test(error.message));
    await assert.rejects(sandbox.files.read(""), (error: unknown) => error instanceof ValidationError && error.field === "path");
  });

  it("lists, stats, makes, renames and removes entries", async () => {
    await sandbox.files.write("/tmp/a/one.txt", "1");
    assert.equal(await sandbox.files.makeDir("/tmp/a/sub"), true);
    assert.equal(await sandbox.files.makeDir("/tmp/a/sub"), false, "an existing directory is not made again");
    assert.deepEqual(
      (await sandbox.files.list("/tmp/a")).map((e) => [e.name, e.type, e.path]),
      [
        ["one.txt", "file", "/tmp/a/one.txt"],
        ["sub", "dir", "/tmp/a/sub"],
      ],
    );
    const info = await sandbox.files.getInfo("/tmp/a/one.txt");
    assert.equal(info.sizeBytes, 1);
    assert.equal(info.permissions, "-rw-r--r--");
    assert.equal(info.mode, 0o644, "the permission bits alone, as the daemon gives them");
    assert.ok(info.modifiedTime instanceof Date);
    assert.equal(await sandbox.files.exists("/tmp/a/one.txt"), true);
    assert.equal(await sandbox.files.exists("/tmp/a/two.txt"), false);
    const moved = await sandbox.files.rename("/tmp/a/one.txt", "/tmp/a/sub/two.txt");
    assert.equal(moved.path, "/tmp/a/sub/two.txt");
    assert.equal(await sandbox.files.exists("/tmp/a/one.txt"), false);
    await sandbox.files.remove("/tmp/a");
    assert.equal(await sandbox.files.exists("/tmp/a/sub/two.txt"), false);
    // What is not there is removed already (as E2B's daemon answers).
    await sandbox.files.remove("/tmp/a");
    await assert.rejects(sandbox.files.list("/tmp", { depth: 0 }), (error: unknown) => error instanceof ValidationError && error.field === "depth");
  });

  it("watchDir delivers what happens in the directory until stop(), then tells onExit", async () => {
    const events: FilesystemEvent[] = [];
    let exited: { error: Error | undefined } | undefined;
    const watch = await sandbox.files.watchDir("/tmp", (event) => void events.push(event), { onExit: (error) => void (exited = { error }) });
    await sandbox.files.write("/tmp/new.txt", "1");
    await sandbox.files.write("/tmp/new.txt", "2");
    await sandbox.files.remove("/tmp/new.txt");
    for (let i = 0; i < 50 && events.length < 3; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.deepEqual(
      events.map((e) => [e.type, e.name]),
      [
        ["create", "new.txt"],
        ["write", "new.txt"],
        ["remove", "new.txt"],
      ],
    );
    await watch.stop();
    assert.deepEqual(exited, { error: undefined });
    await sandbox.files.write("/tmp/after.txt", "x");
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(events.length, 3, "nothing arrives after stop()");
  });

  it("stop() called from inside onEvent resolves (it waited for the delivery that called it), and onExit is told", async () => {
    const events: string[] = [];
    let exited: { error: Error | undefined } | undefined;
    let stopped: Promise<void> | undefined;
    let stopResolved = false;
    const watch = await sandbox.files.watchDir(
      "/tmp",
      async (event) => {
        events.push(event.name);
        stopped = watch.stop().then(() => void (stopResolved = true));
        await stopped;
      },
      { onExit: (error) => void (exited = { error }) },
    );
    await sandbox.files.write("/tmp/one.txt", "1");
    for (let i = 0; i < 50 && !exited; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    assert.ok(stopResolved, "stop() from onEvent resolved");
    assert.deepEqual(exited, { error: undefined });
    await watch.stop();
    await sandbox.files.write("/tmp/two.txt", "2");
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(events, ["one.txt"], "nothing arrives after stop()");
  });

  it("a watch silent for two keepalives ends: onExit gets an UnavailableError", async (t) => {
    // The silence is 60 s of the SDK's timers: mocked, and moved on by hand.
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const exits: (Error | undefined)[] = [];
    await sandbox.files.watchDir("/tmp", () => undefined, { onExit: (error) => void exits.push(error) });
    await drain();
    t.mock.timers.tick(STREAM_SILENCE_MS - 1);
    await drain();
    assert.equal(exits.length, 0);
    t.mock.timers.tick(1);
    await drain();
    const [error] = exits;
    assert.ok(error instanceof UnavailableError, String(error));
    assert.match(error.message, /watching \/tmp in sandbox sb-0000000001: .*silent for 60 s/);
  });

  it("watchDir of a missing directory fails at once with a NotFoundError", async () => {
    await assert.rejects(
      sandbox.files.watchDir("/missing", () => undefined),
      (error: unknown) => error instanceof NotFoundError && /watching \/missing in sandbox/.test(error.message),
    );
  });

  it("a sandbox the proxy cannot reach is an UnavailableError for contents and RPCs alike", async () => {
    daemon.gone = true;
    for (const call of [() => sandbox.files.read("/tmp/x"), () => sandbox.files.write("/tmp/x", "1"), () => sandbox.files.list("/tmp")]) {
      await assert.rejects(call(), (error: unknown) => error instanceof UnavailableError && /not reachable through the sandbox proxy/.test(error.message));
    }
  });

  it("a download past its requestTimeoutMs is a TimeoutError", async () => {
    await sandbox.files.write("/tmp/x", "1");
    daemon.answerDelayMs = 200;
    await assert.rejects(
      sandbox.files.read("/tmp/x", { requestTimeoutMs: 20 }),
      (error: unknown) => error instanceof TimeoutError && /requestTimeoutMs/.test(error.message),
    );
  });

  it("a download that goes on past requestTimeoutMs is read whole while its data comes; one whose data stops is a TimeoutError", async () => {
    const data = new Uint8Array(64 * 1024).map((_, i) => i % 251);
    await sandbox.files.write("/tmp/big", data);
    daemon.downloadPartBytes = 4 * 1024;
    daemon.downloadPartDelayMs = 60; // 16 parts: ~900 ms in all, each well within 300 ms
    assert.deepEqual(await sandbox.files.read("/tmp/big", { format: "bytes", requestTimeoutMs: 300 }), data);

    daemon.downloadPartDelayMs = 1500;
    await assert.rejects(
      sandbox.files.read("/tmp/big", { format: "bytes", requestTimeoutMs: 300 }),
      (error: unknown) => error instanceof TimeoutError && /no data came for 300 ms \(requestTimeoutMs\)/.test(error.message),
    );
  });

  it("refuses data it cannot send", async () => {
    await assert.rejects(sandbox.files.write("/tmp/x", 42 as never), (error: unknown) => error instanceof ValidationError && error.field === "data");
  });
});
