import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { UnavailableError } from "@fast-sandbox/api/core";
import { LogGenerations, rotateLog, type LogGeneration, type LogHold } from "./log-rotation.js";
import type { LogPosition } from "./log-follower.js";
import { TAIL_ATTEMPTS, readLogTail, readTail } from "./log-tail.js";
import { rotatedLogPath } from "./state-layout.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-log-tail-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
/** A log holding `log`, with a rotated part holding `rotated` when given. */
function logFile(log?: string | Buffer, rotated?: string | Buffer): string {
  const path = join(dir, `sandbox-${files++}.log`);
  if (log !== undefined) writeFileSync(path, log);
  if (rotated !== undefined) writeFileSync(rotatedLogPath(path), rotated);
  return path;
}

/** The tail readTail hands out, and the position it returns. */
async function tailOf(path: string, lines: number, options: Parameters<typeof readTail>[2] = {}): Promise<{ text: Buffer; end: LogPosition | undefined }> {
  const chunks: Uint8Array[] = [];
  const reader = readTail(path, lines, options);
  for (;;) {
    const next = await reader.next();
    if (next.done) return { text: Buffer.concat(chunks), end: next.value };
    chunks.push(next.value);
  }
}

async function collect(reader: AsyncIterable<Uint8Array>): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of reader) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

/** The last `lines` lines of `text`, as a reference: lines end with "\n", a last one without it is a line. */
function reference(text: Buffer, lines: number): Buffer {
  const starts = [0];
  for (let at = 0; at < text.length - 1; at++) if (text[at] === 0x0a) starts.push(at + 1);
  if (lines === 0) return Buffer.alloc(0);
  return text.subarray(starts[Math.max(0, starts.length - lines)] ?? 0);
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe("readTail: the last lines of a log and its rotated part", () => {
  it("counts a last line without a newline as a line, and the newline ending the last line as no line of its own", async () => {
    const open = logFile("one\ntwo\nthree");
    assert.equal((await tailOf(open, 1)).text.toString(), "three");
    assert.equal((await tailOf(open, 2)).text.toString(), "two\nthree");
    const closed = logFile("one\ntwo\nthree\n");
    assert.equal((await tailOf(closed, 1)).text.toString(), "three\n");
    assert.equal((await tailOf(closed, 2)).text.toString(), "two\nthree\n");
    // Empty lines are lines.
    assert.equal((await tailOf(logFile("a\n\n\n"), 2)).text.toString(), "\n\n");
  });

  it("returns all there is when asked for more lines than the log holds, and ends where the log ends", async () => {
    const path = logFile("only\ntwo lines\n", "and the rotated\npart\n");
    const { text, end } = await tailOf(path, 1000);
    assert.equal(text.toString(), "and the rotated\npart\nonly\ntwo lines\n");
    assert.deepEqual(end, { generation: 0, position: "only\ntwo lines\n".length });
  });

  it("returns nothing for 0 lines, and the end of the log to go on from", async () => {
    const path = logFile("a\nb\n", "c\n");
    const { text, end } = await tailOf(path, 0);
    assert.equal(text.length, 0);
    assert.deepEqual(end, { generation: 0, position: 4 });
  });

  it("finds lines longer than a read, reading backwards one chunk at a time", async () => {
    const long = (letter: string) => `${letter.repeat(50)}\n`;
    const path = logFile(long("a") + long("b") + long("c") + long("d"));
    for (const chunkBytes of [1, 3, 4, 7, 64]) {
      assert.equal((await tailOf(path, 2, { chunkBytes })).text.toString(), long("c") + long("d"), `chunks of ${chunkBytes}`);
      assert.equal((await tailOf(path, 9, { chunkBytes })).text.toString(), long("a") + long("b") + long("c") + long("d"), `chunks of ${chunkBytes}`);
    }
  });

  it("reads only the log when there is no rotated part, and nothing when there is no log", async () => {
    assert.equal((await tailOf(logFile("x\ny\n"), 5)).text.toString(), "x\ny\n");
    const missing = await tailOf(join(dir, "never-written.log"), 5);
    assert.equal(missing.text.length, 0);
    assert.equal(missing.end, undefined);
    // A rotated part without its log (the sandbox's log removed): no log, as readLog sees it.
    assert.equal((await tailOf(logFile(undefined, "orphan\n"), 5)).end, undefined);
  });

  it("takes lines from both parts, the rotated one first, and from it alone when the log was just truncated", async () => {
    const path = logFile("l4\nl5\n", "l1\nl2\nl3\n");
    assert.equal((await tailOf(path, 2)).text.toString(), "l4\nl5\n");
    assert.equal((await tailOf(path, 3)).text.toString(), "l3\nl4\nl5\n");
    assert.equal((await tailOf(path, 5)).text.toString(), "l1\nl2\nl3\nl4\nl5\n");
    // A line cut by the rotation goes on in the log: one line.
    assert.equal((await tailOf(logFile("ne\nlast\n", "first\nsplit li"), 2)).text.toString(), "split line\nlast\n");
    const emptied = logFile("", "r1\nr2\n");
    const { text, end } = await tailOf(emptied, 1);
    assert.equal(text.toString(), "r2\n");
    assert.deepEqual(end, { generation: 0, position: 0 });
  });

  it("hands out the log's own bytes: a UTF-8 character split across the two parts, or across reads, stays whole", async () => {
    const text = Buffer.from("première\nzwei ü €\n\ntrois 😀 fin\nlast ✓");
    // Every split of the text between `<log>.1` and `<log>`, many read sizes, every count of lines.
    for (let split = 0; split <= text.length; split++) {
      const path = logFile(text.subarray(split), text.subarray(0, split));
      for (const chunkBytes of [1, 2, 3, 5, 64 * 1024]) {
        for (let lines = 0; lines <= 6; lines++) {
          const { text: got, end } = await tailOf(path, lines, { chunkBytes });
          assert.deepEqual(got, reference(text, lines), `split at ${split}, chunks of ${chunkBytes}, ${lines} lines`);
          assert.deepEqual(end, { generation: 0, position: text.length - split });
        }
      }
    }
    const path = logFile("€uro\n😀 smile\nend ü", "x€\nüber 😀");
    assert.equal((await tailOf(path, 3, { chunkBytes: 1 })).text.toString("utf8"), "über 😀€uro\n😀 smile\nend ü");
  });

  it("reads from the end: the last line of a large log takes one read, not the whole log", async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, "x\n");
    const path = logFile(Buffer.concat([big, Buffer.from("the end\n")]), big);
    const probe = await open(path, "r");
    const prototype = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<{ bytesRead: number }> };
    await probe.close();
    const read = prototype.read;
    let bytes = 0;
    prototype.read = async function (this: unknown, ...args: unknown[]) {
      const result = await read.apply(this, args);
      bytes += result.bytesRead;
      return result;
    };
    try {
      assert.equal((await tailOf(path, 1)).text.toString(), "the end\n");
    } finally {
      prototype.read = read;
    }
    assert.ok(bytes <= 2 * 64 * 1024, `read ${bytes} bytes of ${2 * big.length + 8}`);
  });

  it("refuses a count that is not a whole number ≥ 0", async () => {
    for (const lines of [-1, 0.5, Number.NaN]) await assert.rejects(tailOf(logFile("a\n"), lines), RangeError);
  });
});

describe("readTail across rotations (LogGenerations)", () => {
  const generations = new LogGenerations(dir);
  /** A hold whose `locked` runs `before(call)` first, outside the lock (a rotation takes the lock itself). */
  function holdWith(path: string, before: (call: number) => Promise<void>): LogHold {
    const hold = generations.hold(path);
    let calls = 0;
    return {
      locked: async (fn) => {
        await before(++calls);
        return hold.locked(fn);
      },
      release: () => hold.release(),
    };
  }

  it("starts the search again when the log rotates under it: the tail is of the log as rotated", async () => {
    const path = logFile("a\nb\nc\nd\n");
    const hold = holdWith(path, async (call) => {
      // After the snapshot (call 1), during the search backwards.
      if (call === 3) {
        appendFileSync(path, "e\n");
        await rotateLog(path, { generations, maxBytes: 4 });
        appendFileSync(path, "f\n");
      }
    });
    try {
      const { text, end } = await tailOf(path, 2, { chunkBytes: 2, hold });
      // The rotation kept "e\n" in `<log>.1` (its last 4 bytes, from a line's start), then "f\n" came.
      assert.equal(text.toString(), "e\nf\n");
      assert.deepEqual(end, { generation: 1, position: 2 });
    } finally {
      hold.release();
    }
  });

  it(`gives up with UnavailableError after ${TAIL_ATTEMPTS} searches each cut short by a rotation`, async () => {
    const path = logFile("a\nb\nc\n");
    // A rotation right after every snapshot (odd calls): each search's first read finds the log rotated.
    const hold = holdWith(path, async (call) => {
      if (call % 2 === 0) {
        await rotateLog(path, { generations, maxBytes: 4 });
        appendFileSync(path, "more\n");
      }
    });
    try {
      await assert.rejects(tailOf(path, 1, { hold }), (error: unknown) => error instanceof UnavailableError && /rotated 5 times/.test(error.message));
    } finally {
      hold.release();
    }
  });

  /**
   * Rotates the log (keeping all of it) before the sixth locked step (the snapshot, 3 reads back, one
   * forward), and writes new output: the log regrows past where the tail had got to.
   */
  const rotateAtSixth = (path: string) => async (call: number) => {
    if (call !== 6) return;
    await rotateLog(path, { generations, maxBytes: 1000 });
    appendFileSync(path, "new output\n");
  };

  it("stops handing out the log where a rotation began, and says where it stopped", async () => {
    const path = logFile("0123456789\n");
    const hold = holdWith(path, rotateAtSixth(path));
    try {
      const { text, end } = await tailOf(path, 1, { chunkBytes: 4, hold });
      assert.equal(text.toString(), "0123");
      assert.deepEqual(end, { generation: 0, position: 4 }, "readLog goes on from there, in the rotated part");
    } finally {
      hold.release();
    }
  });

  it("readLogTail then reads the rest of that line from the rotated part: nothing lost or doubled", async () => {
    const path = logFile("0123456789\n");
    const shared = generations.hold(path);
    const hold = holdWith(path, rotateAtSixth(path));
    const records = { manages: () => true, hold: () => hold } as unknown as LogGenerations;
    try {
      assert.equal(await collect(readLogTail(path, 1, { follow: false, generations: records, chunkBytes: 4 })), "0123456789\nnew output\n");
      const state = await shared.locked(async (record: LogGeneration) => ({ ...record }));
      assert.equal(state.generation, 1, "it did rotate meanwhile");
    } finally {
      shared.release();
    }
  });
});

describe("readLogTail: the tail, then readLog from the next byte", () => {
  const generations = new LogGenerations(dir);

  it("without follow: the tail, and what was appended since it was read", async () => {
    const path = logFile("a\nb\nc\n", "r\n");
    assert.equal(await collect(readLogTail(path, 2, { follow: false })), "b\nc\n");
    assert.equal(await collect(readLogTail(path, 0, { follow: false })), "");
    assert.equal(await collect(readLogTail(path, 10, { follow: false, generations })), "r\na\nb\nc\n");
    const reader = readLogTail(path, 1, { follow: false, generations });
    assert.equal(Buffer.from((await reader.next()).value as Uint8Array).toString(), "c\n");
    appendFileSync(path, "d\n");
    assert.equal(await collect({ [Symbol.asyncIterator]: () => reader }), "d\n");
  });

  it("following: what the sandbox writes after the tail, once, across a rotation", async () => {
    const path = logFile("old 1\nold 2\nlast\n", "older\n");
    const finished = deferred();
    const reader = readLogTail(path, 1, { follow: true, finished: finished.promise, pollIntervalMs: 5, generations, chunkBytes: 3 });
    let output = "";
    // The tail comes out before anything else is written.
    while (output !== "last\n") output += Buffer.from((await reader.next()).value as Uint8Array).toString();
    appendFileSync(path, "after 1\n");
    await rotateLog(path, { generations, maxBytes: 1000 });
    appendFileSync(path, "after 2\n");
    setTimeout(() => finished.resolve(), 50);
    output += await collect({ [Symbol.asyncIterator]: () => reader });
    assert.equal(output, "last\nafter 1\nafter 2\n");
    assert.equal(generations.size, 0, "the log's record let go of");
  });

  it("following from 0 lines: only what comes", async () => {
    const path = logFile("before\n");
    const finished = deferred();
    const reader = readLogTail(path, 0, { follow: true, finished: finished.promise, pollIntervalMs: 5, generations });
    const output = collect({ [Symbol.asyncIterator]: () => reader });
    await new Promise((resolve) => setTimeout(resolve, 20));
    appendFileSync(path, "new\n");
    setTimeout(() => finished.resolve(), 30);
    assert.equal(await output, "new\n");
  });

  it("ends at once when aborted", async () => {
    const path = logFile("a\nb\n");
    const controller = new AbortController();
    controller.abort();
    assert.equal(await collect(readLogTail(path, 1, { follow: true, finished: new Promise(() => {}), signal: controller.signal, generations })), "");
  });
});
