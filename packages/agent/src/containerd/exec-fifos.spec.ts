import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ExecFifos } from "./exec-fifos.js";

const root = mkdtempSync(join(tmpdir(), "fsb-exec-fifos-"));
after(() => rmSync(root, { recursive: true, force: true }));

describe("ExecFifos", () => {
  it("makes both FIFOs, hands their output over, and removes them when disposed", async () => {
    const directory = mkdtempSync(join(root, "ok-"));
    const out: string[] = [];
    const fifos = await ExecFifos.create(
      directory,
      "e1",
      (chunk) => void out.push(Buffer.from(chunk).toString()),
      () => undefined,
    );
    assert.ok(statSync(fifos.stdoutPath).isFIFO());
    assert.ok(statSync(fifos.stderrPath).isFIFO());
    writeFileSync(fifos.stdoutPath, "hello");
    fifos.releaseWriters();
    await fifos.drained(5000);
    assert.equal(out.join(""), "hello");
    await fifos.dispose();
    assert.deepEqual(readdirSync(directory), []);
  });

  it("leaves no FIFO behind when the second cannot be made", async () => {
    const directory = mkdtempSync(join(root, "half-"));
    writeFileSync(join(directory, "e2.stderr"), "in the way"); // mkfifo makes e2.stdout, then fails on e2.stderr
    await assert.rejects(
      ExecFifos.create(
        directory,
        "e2",
        () => undefined,
        () => undefined,
      ),
      /mkfifo/,
    );
    assert.deepEqual(readdirSync(directory), []);
  });
});

/** The shim's side of a FIFO: a blocking write fd handed to `program` as its stdout (ours closed). */
function writer(path: string, program: string, args: string[]): ChildProcess {
  const fd = openSync(path, constants.O_WRONLY); // a reader is there: does not block
  try {
    return spawn(program, args, { stdio: ["ignore", fd, "ignore"] });
  } finally {
    closeSync(fd);
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

describe("ExecFifos.drained", { timeout: 60_000 }, () => {
  it("delivers all the output to a consumer slower than the grace (the paused time does not count)", async () => {
    const directory = mkdtempSync(join(root, "slow-"));
    const total = 256 * 1024;
    let bytes = 0;
    let chunks = 0;
    const fifos = await ExecFifos.create(
      directory,
      "slow",
      (chunk) => {
        bytes += chunk.byteLength;
        chunks += 1;
        return sleep(150); // behind: the stream pauses for longer than the grace each time
      },
      () => undefined,
    );
    const child = writer(fifos.stdoutPath, "head", ["-c", String(total), "/dev/zero"]);
    fifos.releaseWriters(); // the process "exited": what the pipe still holds must all come through
    const outcome = await fifos.drained(100);
    await fifos.dispose();
    child.kill();
    assert.equal(bytes, total, `lost ${total - bytes} bytes`);
    assert.ok(chunks > 1);
    assert.equal(outcome, "ended");
  });

  it("ends after the grace when a background process holds the pipe open, once the slow consumer took what was there", async () => {
    const directory = mkdtempSync(join(root, "held-"));
    const total = 200 * 1024;
    let bytes = 0;
    const fifos = await ExecFifos.create(
      directory,
      "held",
      (chunk) => {
        bytes += chunk.byteLength;
        return sleep(150);
      },
      () => undefined,
    );
    const held = openSync(fifos.stderrPath, constants.O_WRONLY | constants.O_NONBLOCK); // never written, never closed
    const heldOut = openSync(fifos.stdoutPath, constants.O_WRONLY | constants.O_NONBLOCK);
    const child = writer(fifos.stdoutPath, "head", ["-c", String(total), "/dev/zero"]);
    fifos.releaseWriters();
    const outcome = await fifos.drained(100);
    await fifos.dispose();
    child.kill();
    closeSync(held);
    closeSync(heldOut);
    assert.equal(outcome, "idle");
    assert.equal(bytes, total, `lost ${total - bytes} bytes`);
  });

  it("ends after the grace when a silent background process holds the pipe open", async () => {
    const directory = mkdtempSync(join(root, "silent-"));
    const out: string[] = [];
    const fifos = await ExecFifos.create(
      directory,
      "silent",
      (chunk) => void out.push(Buffer.from(chunk).toString()),
      () => undefined,
    );
    const held = openSync(fifos.stdoutPath, constants.O_WRONLY | constants.O_NONBLOCK);
    writeFileSync(fifos.stdoutPath, "before the exit");
    fifos.releaseWriters();
    const started = performance.now();
    const outcome = await fifos.drained(100);
    const elapsed = performance.now() - started;
    await fifos.dispose();
    closeSync(held);
    assert.equal(outcome, "idle");
    assert.equal(out.join(""), "before the exit");
    assert.ok(elapsed >= 90, `the grace was waited out: ${elapsed} ms`);
  });

  it("stops reading a background process that keeps writing: past maxBytes, or past maxActiveMs of reading", async () => {
    const directory = mkdtempSync(join(root, "writing-"));
    const fifos = await ExecFifos.create(
      directory,
      "writing",
      () => undefined,
      () => undefined,
    );
    const fast = writer(fifos.stdoutPath, "yes", []);
    // Never idle for the grace: a line every 20 ms.
    const trickle = writer(fifos.stderrPath, "sh", ["-c", "while :; do echo x; sleep 0.02; done"]);
    try {
      fifos.releaseWriters();
      assert.equal(await fifos.drained(5_000, { maxBytes: 1024 * 1024, maxActiveMs: 60_000 }), "writing");
      fast.kill();
      const started = performance.now();
      assert.equal(await fifos.drained(200, { maxBytes: Number.MAX_SAFE_INTEGER, maxActiveMs: 400 }), "writing");
      const elapsed = performance.now() - started;
      assert.ok(elapsed >= 350, `maxActiveMs was waited out: ${elapsed} ms`);
    } finally {
      fast.kill();
      trickle.kill();
      await fifos.dispose();
    }
  });

  it("stops at once when the signal fires, even while the consumer holds the stream back", async () => {
    const directory = mkdtempSync(join(root, "abort-"));
    const fifos = await ExecFifos.create(
      directory,
      "abort",
      () => new Promise<void>(() => undefined), // a consumer that went away: never takes the chunk
      () => undefined,
    );
    const held = openSync(fifos.stdoutPath, constants.O_WRONLY | constants.O_NONBLOCK);
    writeFileSync(fifos.stdoutPath, "x");
    fifos.releaseWriters();
    await sleep(20);
    const stop = new AbortController();
    const drained = fifos.drained(50, { signal: stop.signal });
    await sleep(200);
    stop.abort();
    assert.equal(await drained, "aborted");
    await fifos.dispose();
    closeSync(held);
  });
});
