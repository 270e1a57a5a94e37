import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { SKIPPED_MARKER, TRUNCATED_MARKER, readLog, type FollowOptions } from "./log-follower.js";
import { LogGenerations, rotateLog } from "./log-rotation.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-log-follower-"));
after(() => rmSync(dir, { recursive: true, force: true }));
/** The records the agent's rotation (LogRotation) and its readers share. */
const generations = new LogGenerations(dir);
/** A rotation as the agent's: noted in `generations`. */
const rotate = (path: string, maxBytes?: number) => rotateLog(path, { generations, ...(maxBytes ? { maxBytes } : {}) });

let files = 0;
function logFile(content?: string | Buffer): string {
  const path = join(dir, `sandbox-${files++}.log`);
  if (content !== undefined) writeFileSync(path, content);
  return path;
}

async function collect(path: string, options: FollowOptions): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of readLog(path, options)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * An abort signal that reports each time the reader goes to sleep between polls (it registers an
 * abort listener for every sleep): the test acts exactly when the reader has found nothing new,
 * without relying on timing.
 */
function pollObserver(onIdle: (poll: number) => void): { signal: AbortSignal; controller: AbortController } {
  const controller = new AbortController();
  const signal = controller.signal;
  const addEventListener = signal.addEventListener.bind(signal) as (...args: unknown[]) => void;
  let polls = 0;
  signal.addEventListener = (...args: unknown[]) => {
    if (args[0] === "abort") onIdle(++polls);
    addEventListener(...args);
  };
  return { signal, controller };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe("readLog", () => {
  it("without follow, returns the current content and ends", async () => {
    const path = logFile("hello\nworld\n");
    assert.equal((await collect(path, { follow: false })).toString(), "hello\nworld\n");
  });

  it("returns content larger than one read buffer intact", async () => {
    const content = Buffer.alloc(200 * 1024);
    for (let i = 0; i < content.length; i++) content[i] = i % 251;
    const path = logFile(content);
    const chunks: Uint8Array[] = [];
    for await (const chunk of readLog(path, { follow: false })) chunks.push(chunk);
    assert.ok(chunks.length > 1, "expected several chunks");
    assert.deepEqual(Buffer.concat(chunks), content);
  });

  it("yields chunks that stay intact after later reads reuse the buffer", async () => {
    const path = logFile("a".repeat(64 * 1024) + "b".repeat(10));
    const chunks: Uint8Array[] = [];
    for await (const chunk of readLog(path, { follow: false })) chunks.push(chunk);
    assert.equal(chunks.length, 2);
    assert.equal(Buffer.from(chunks[0] ?? []).toString(), "a".repeat(64 * 1024));
    assert.equal(Buffer.from(chunks[1] ?? []).toString(), "b".repeat(10));
  });

  it("yields nothing for an empty file", async () => {
    assert.equal((await collect(logFile(""), { follow: false })).length, 0);
  });

  it("yields nothing for a missing file, following or not", async () => {
    const path = join(dir, "never-written.log");
    assert.equal((await collect(path, { follow: false })).length, 0);
    assert.equal((await collect(path, { follow: true, finished: new Promise(() => undefined), pollIntervalMs: 10 })).length, 0);
  });

  it("when following, yields data appended while it waits, until finished resolves", async () => {
    const path = logFile("one\n");
    const finished = deferred();
    const { signal } = pollObserver((poll) => {
      if (poll === 1) appendFileSync(path, "two\n");
      if (poll === 2) appendFileSync(path, "three\n");
      if (poll === 3) finished.resolve();
    });
    const output = await collect(path, { follow: true, finished: finished.promise, signal, pollIntervalMs: 10 });
    assert.equal(output.toString(), "one\ntwo\nthree\n");
  });

  it("drains data that lands after finished resolved and after a poll found nothing", async () => {
    const path = logFile("start\n");
    const finished = deferred();
    let appendedLate = false;
    const { signal } = pollObserver((poll) => {
      if (poll === 1) finished.resolve();
      // Poll 2 is the first empty read after the writer finished: the shim's last copy lands now.
      if (poll === 2) {
        appendFileSync(path, "last words\n");
        appendedLate = true;
      }
    });
    const output = await collect(path, { follow: true, finished: finished.promise, signal, pollIntervalMs: 10 });
    assert.ok(appendedLate);
    assert.equal(output.toString(), "start\nlast words\n");
  });

  it("when finished rejects (the wait failed, the command may run on), yields what the log holds, then ends with that error", async () => {
    const path = logFile("x");
    const failure = new Error("wait failed: containerd away");
    const finished = Promise.reject(failure);
    finished.catch(() => undefined);
    const chunks: Uint8Array[] = [];
    await assert.rejects(async () => {
      for await (const chunk of readLog(path, { follow: true, finished, pollIntervalMs: 10 })) chunks.push(chunk);
    }, failure);
    assert.equal(Buffer.concat(chunks).toString(), "x");
  });

  it("ends quietly when finished rejects because the reader's signal aborted it", async () => {
    const path = logFile("x");
    let abortWait!: (error: Error) => void;
    const finished = new Promise((_, reject) => (abortWait = reject));
    finished.catch(() => undefined);
    const { signal, controller } = pollObserver((poll) => {
      if (poll === 1) {
        controller.abort();
        abortWait(new Error("The operation was aborted"));
      }
    });
    const output = await collect(path, { follow: true, finished, signal, pollIntervalMs: 10 });
    assert.equal(output.toString(), "x");
  });

  it("ends when the signal aborts while following a file that never finishes", async () => {
    const path = logFile("running\n");
    const { signal, controller } = pollObserver((poll) => {
      if (poll === 1) appendFileSync(path, "more\n");
      if (poll === 2) controller.abort();
    });
    const output = await collect(path, { follow: true, finished: new Promise(() => undefined), signal, pollIntervalMs: 10 });
    assert.equal(output.toString(), "running\nmore\n");
  });

  it("yields nothing once the signal has already aborted", async () => {
    const path = logFile("content\n");
    const output = await collect(path, { follow: true, signal: AbortSignal.abort(), pollIntervalMs: 10 });
    assert.equal(output.length, 0);
  });

  it("stops reading when the consumer stops early", async () => {
    const path = logFile("a".repeat(64 * 1024) + "b");
    const iterator = readLog(path, { follow: true, finished: new Promise(() => undefined), pollIntervalMs: 10 });
    const first = await iterator.next();
    assert.equal(first.done, false);
    assert.deepEqual(await iterator.return(undefined), { done: true, value: undefined });
    assert.deepEqual(await iterator.next(), { done: true, value: undefined });
  });
});

describe("readLog of a rotated log", () => {
  it("without follow, returns the rotated part first, then the log", async () => {
    const path = logFile("newer\n");
    writeFileSync(`${path}.1`, "older\n");
    assert.equal((await collect(path, { follow: false })).toString(), "older\nnewer\n");
  });

  it("when following, reads through a rotation while idle: nothing lost, nothing twice", async () => {
    const path = logFile("one\n");
    const finished = deferred();
    const rotations: Promise<number>[] = [];
    const { signal } = pollObserver((poll) => {
      if (poll === 1) {
        appendFileSync(path, "two\n");
        rotations.push(rotate(path));
      }
      if (poll === 3) appendFileSync(path, "three\n");
      if (poll === 5) finished.resolve();
    });
    const output = await collect(path, { follow: true, finished: finished.promise, signal, pollIntervalMs: 10, generations });
    await Promise.all(rotations);
    assert.equal(output.toString(), "one\ntwo\nthree\n");
  });

  it("when following, reads the rest of the old part from the rotated file after a rotation it had not read up to", async () => {
    const path = logFile("read before\n");
    const finished = deferred();
    const { signal } = pollObserver((poll) => {
      // Appended and rotated away before the reader looked again: only the rotated part holds it.
      if (poll === 1) {
        appendFileSync(path, "unread when rotated\n");
        void rotate(path).then(() => appendFileSync(path, "after the rotation\n"));
      }
      if (poll === 4) finished.resolve();
    });
    const output = await collect(path, { follow: true, finished: finished.promise, signal, pollIntervalMs: 10, generations });
    assert.equal(output.toString(), "read before\nunread when rotated\nafter the rotation\n");
  });

  it("goes on at the start of a log truncated without a rotation, after a line that says output may be missing", async () => {
    for (const options of [{}, { generations }]) {
      const path = logFile("first\n");
      const finished = deferred();
      const { signal } = pollObserver((poll) => {
        if (poll === 1) writeFileSync(path, "new\n");
        if (poll === 3) finished.resolve();
      });
      const output = await collect(path, { follow: true, finished: finished.promise, signal, pollIntervalMs: 10, ...options });
      assert.equal(output.toString(), `first\n${TRUNCATED_MARKER}\nnew\n`);
    }
  });

  const lines = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `line ${String(from + i).padStart(4, "0")}\n`).join("");

  it("a follower slow to take its chunks across two rotations says it skipped output, and goes on at the oldest byte kept", async () => {
    const path = logFile(lines(1, 100));
    const finished = deferred();
    const reader = readLog(path, { follow: true, finished: finished.promise, pollIntervalMs: 10, generations });
    let text = Buffer.from((await reader.next()).value as Uint8Array).toString();
    // The consumer takes nothing for a while: the log rotates twice meanwhile.
    appendFileSync(path, lines(101, 200));
    await rotate(path);
    appendFileSync(path, lines(201, 300));
    await rotate(path);
    appendFileSync(path, lines(301, 350));
    finished.resolve();
    for (let next = await reader.next(); !next.done; next = await reader.next()) text += Buffer.from(next.value).toString();
    assert.equal(text, `${lines(1, 100)}${SKIPPED_MARKER}\n${lines(201, 350)}`);
  });

  it("a follower one rotation behind goes on in the rotated part at its offset, even when the log grew past it again", async () => {
    const path = logFile(lines(1, 100));
    const finished = deferred();
    const reader = readLog(path, { follow: true, finished: finished.promise, pollIntervalMs: 10, generations });
    let text = Buffer.from((await reader.next()).value as Uint8Array).toString();
    appendFileSync(path, lines(101, 200));
    await rotate(path);
    // Longer than the part the rotation kept before the reader looks again.
    appendFileSync(path, lines(201, 450));
    finished.resolve();
    for (let next = await reader.next(); !next.done; next = await reader.next()) text += Buffer.from(next.value).toString();
    assert.equal(text, lines(1, 450));
  });

  it("a follower behind the start of the part a rotation kept says it skipped output, on a line of its own, and goes on where that part starts", async () => {
    // Read up to the middle of a line, then a rotation keeps only the log's last ~1000 bytes.
    const path = logFile(lines(1, 10) + "line 00");
    const finished = deferred();
    const reader = readLog(path, { follow: true, finished: finished.promise, pollIntervalMs: 10, generations });
    let text = Buffer.from((await reader.next()).value as Uint8Array).toString();
    appendFileSync(path, "11\n" + lines(12, 500));
    await rotate(path, 1000);
    const kept = readFileSync(`${path}.1`, "utf8");
    appendFileSync(path, lines(501, 502));
    finished.resolve();
    for (let next = await reader.next(); !next.done; next = await reader.next()) text += Buffer.from(next.value).toString();
    assert.equal(text, `${lines(1, 10)}line 00\n${SKIPPED_MARKER}\n${kept}${lines(501, 502)}`);
  });

  it("reads and follows a log rotated again and again under a fast writer: never a line twice, never out of order", async () => {
    const path = logFile("");
    // As a sandbox's shim: appends whole numbered lines (O_APPEND) as fast as it can.
    const writer = spawn(
      process.execPath,
      [
        "-e",
        `const fs = require("node:fs"); const fd = fs.openSync(process.argv[1], "a"); let i = 0;
         for (;;) { let chunk = ""; for (let j = 0; j < 50; j++) chunk += "line " + String(++i).padStart(9, "0") + "\\n"; fs.writeSync(fd, chunk); }`,
        path,
      ],
      { stdio: "ignore" },
    );
    const exited = once(writer, "exit");
    let stop = false;
    const rotating = (async () => {
      while (!stop) {
        await rotate(path, 64 * 1024);
        await sleep(2);
      }
    })();
    /** Every whole line's number in order (a marker or a line cut by a rotation's loss is no number); fails on a repeat or a step back. */
    const check = (text: string, what: string) => {
      let previous = 0;
      for (const line of text.split("\n")) {
        const match = /^line (\d{9})$/.exec(line);
        if (!match) continue;
        const number = Number(match[1]);
        assert.ok(number > previous, `${what}: line ${number} after line ${previous}`);
        previous = number;
      }
      return previous;
    };
    try {
      const finished = deferred();
      const following = collect(path, { follow: true, finished: finished.promise, pollIntervalMs: 1, generations });
      const started = Date.now();
      let reads = 0;
      while (Date.now() - started < 1500) {
        check((await collect(path, { follow: false, generations })).toString(), `read ${++reads}`);
      }
      finished.resolve();
      assert.ok(check((await following).toString(), "the follower") > 0);
    } finally {
      stop = true;
      writer.kill("SIGKILL");
      await Promise.all([rotating, exited]);
    }
  });
});
