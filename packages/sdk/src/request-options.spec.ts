import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { Connection } from "./connection.js";
import { FastSandboxClient } from "./fast-sandbox-client.js";
import { StreamStart } from "./request-options.js";
import { FakeControlPlane, FakeDaemon } from "./sandbox.fixture.js";
import { FastSandbox } from "./sandbox.js";

describe("StreamStart", () => {
  it("is aborted by the caller's signal until stopped, and lets go of it then", () => {
    const caller = new AbortController();
    const start = new StreamStart(caller.signal, 0);
    caller.abort(new Error("shutting down"));
    assert.ok(start.signal.aborted);
    assert.equal((start.signal.reason as Error).message, "shutting down");

    const later = new AbortController();
    const stopped = new StreamStart(later.signal, 0);
    stopped.stop();
    const aborted = new StreamStart(AbortSignal.abort("gone"), 0);
    assert.ok(aborted.signal.aborted, "a caller's signal aborted already aborts it at once");
    assert.equal(aborted.signal.reason, "gone");
    assert.ok(stopped.signal.aborted);
    later.abort();
  });

  it("keeps nothing per call of a long-lived caller signal once stopped (AbortSignal.any did, on Node 20)", () => {
    // In a process of its own, with --expose-gc: the heap after 100 000 calls sharing one signal.
    const dir = mkdtempSync(join(tmpdir(), "fsb-stream-start-"));
    try {
      const script = join(dir, "calls.mts");
      writeFileSync(
        script,
        `import { StreamStart } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, "request-options.ts")).href)};
const caller = new AbortController();
const calls = async () => {
  for (let i = 0; i < 100_000; i++) {
    const start = new StreamStart(caller.signal, 0);
    start.started();
    start.stop();
    if (i % 10_000 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
};
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    globalThis.gc();
  }
};
await calls();
await settle();
const before = process.memoryUsage().heapUsed;
await calls();
await settle();
process.stdout.write(String(process.memoryUsage().heapUsed - before));
`,
      );
      const result = spawnSync(process.execPath, ["--expose-gc", "--conditions=development", "--import", "tsx", script], { encoding: "utf8" });
      assert.equal(result.status, 0, result.stderr);
      const retained = Number(result.stdout);
      // AbortSignal.any kept ~80 bytes a call: 8 MB here.
      assert.ok(retained < 2_000_000, `${retained} bytes retained after 100 000 calls`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("durations a timer cannot wait, and fractions", () => {
  it("a requestTimeoutMs or timeoutMs of 2^31 ms or more is no limit (Node's timers fired it after 1 ms), and a fraction is rounded up", async () => {
    const plane = new FakeControlPlane();
    const daemon = new FakeDaemon();
    const sandbox = await FastSandbox.create({ connection: new Connection({ transport: plane.transport, daemon: daemon.factory }) });
    try {
      await sandbox.files.write("/tmp/x", "1");
      const events: string[] = [];
      const watch = await sandbox.files.watchDir("/tmp", (event) => void events.push(event.name), { timeoutMs: 2 ** 31 });
      daemon.answerDelayMs = 20;
      assert.equal(await sandbox.files.read("/tmp/x", { requestTimeoutMs: 2 ** 31 }), "1");
      assert.deepEqual(await sandbox.commands.list({ requestTimeoutMs: 3e9 }), []);
      assert.equal(daemon.requests.at(-1)?.headers.get("connect-timeout-ms"), null, "no deadline sent");
      await sandbox.commands.list({ requestTimeoutMs: 1500.5 });
      assert.equal(daemon.requests.at(-1)?.headers.get("connect-timeout-ms"), "1501");
      daemon.answerDelayMs = 0;
      await sandbox.files.write("/tmp/later.txt", "2");
      for (let i = 0; i < 50 && events.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.deepEqual(events, ["later.txt"], "the watch still runs");
      await watch.stop();
    } finally {
      daemon.killAll();
    }
  });

  it("checks a connection's and a client's requestTimeoutMs, and makes it usable the same way", async () => {
    const plane = new FakeControlPlane();
    for (const requestTimeoutMs of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(
        () => new Connection({ transport: plane.transport, requestTimeoutMs }),
        (error: unknown) => error instanceof ValidationError && error.field === "requestTimeoutMs",
      );
      assert.throws(
        () => new FastSandboxClient({ transport: plane.transport, requestTimeoutMs }),
        (error: unknown) => error instanceof ValidationError && error.field === "requestTimeoutMs",
      );
    }
    assert.equal(new Connection({ transport: plane.transport, requestTimeoutMs: 2 ** 31 }).requestTimeoutMs, 0);
    assert.equal(new Connection({ transport: plane.transport, requestTimeoutMs: 1500.5 }).requestTimeoutMs, 1501);
    plane.add("web", "k3x9q0m2zt7c1w8r5bn4");
    const client = new FastSandboxClient({ transport: plane.transport, requestTimeoutMs: 2 ** 31 });
    assert.equal((await client.sandboxes.get("web")).metadata.name, "web");
    await assert.rejects(client.sandboxes.get("web", { requestTimeoutMs: -5 }), (error: unknown) => error instanceof ValidationError);
  });
});
