import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { LogGenerations, LogRotation, ROTATION_CONCURRENCY, removeLog, rotateLog, type LogGeneration } from "./log-rotation.js";

const root = mkdtempSync(join(tmpdir(), "fsb-log-rotation-"));
after(() => rmSync(root, { recursive: true, force: true }));

function logDir(): string {
  return mkdtempSync(join(root, "logs-"));
}

describe("rotateLog", () => {
  it("moves the log aside and truncates it in place, so a writer appending to it goes on at its start", async () => {
    const path = join(logDir(), "s.log");
    // As containerd's shim holds a file:// log: open for appending, for the task's life.
    const writer = openSync(path, "a");
    try {
      writeSync(writer, "first part\n");
      assert.equal(await rotateLog(path), "first part\n".length);
      writeSync(writer, "second part\n");
      assert.equal(readFileSync(`${path}.1`, "utf8"), "first part\n");
      assert.equal(readFileSync(path, "utf8"), "second part\n");
      assert.ok(!existsSync(`${path}.1.tmp`), "the rotation's copy is renamed, not left");
    } finally {
      closeSync(writer);
    }
  });

  it("keeps one previous part: a second rotation replaces the first's", async () => {
    const path = join(logDir(), "s.log");
    writeFileSync(path, "one\n");
    await rotateLog(path);
    writeFileSync(path, "two\n", { flag: "a" });
    await rotateLog(path);
    assert.equal(readFileSync(`${path}.1`, "utf8"), "two\n");
    assert.equal(readFileSync(path, "utf8"), "");
  });

  it("copies a log larger than one read intact", async () => {
    const path = join(logDir(), "s.log");
    const content = Buffer.alloc(300 * 1024);
    for (let i = 0; i < content.length; i++) content[i] = i % 251;
    writeFileSync(path, content);
    assert.equal(await rotateLog(path), content.length);
    assert.deepEqual(readFileSync(`${path}.1`), content);
  });

  it("ends under a writer as fast as the copy, moving at most maxBytes", async () => {
    const path = join(logDir(), "s.log");
    const start = 4 * 1024 * 1024;
    const maxBytes = 2 * 1024 * 1024;
    writeFileSync(path, "x".repeat(start));
    // As a sandbox running `yes`: it appends as fast as the rotation copies. Its file size limit
    // (512-byte blocks: 512 MiB) bounds the disk a rotation chasing it for ever would fill.
    const writer = spawn("sh", ["-c", 'ulimit -f 1048576; exec yes >> "$0"', path], { stdio: "ignore" });
    const exited = once(writer, "exit");
    try {
      while (statSync(path).size === start && writer.exitCode === null) await sleep(5);
      let timer: NodeJS.Timeout | undefined;
      const stuck = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("rotateLog is still copying after 60 s")), 60_000);
      });
      const moved = await Promise.race([rotateLog(path, { maxBytes }), stuck]).finally(() => clearTimeout(timer));
      assert.ok(moved > 0 && moved <= maxBytes, `moved ${moved} bytes with a limit of ${maxBytes}`);
      assert.equal(statSync(`${path}.1`).size, moved);
      assert.ok(!existsSync(`${path}.1.tmp`), "the rotation's copy is renamed, not left");
    } finally {
      writer.kill("SIGKILL");
      await exited;
    }
  });

  it("keeps only the last maxBytes of a log that outgrew it, from a line's start", async () => {
    const path = join(logDir(), "s.log");
    const lines = Array.from({ length: 1000 }, (_, i) => `line ${String(i).padStart(4, "0")}\n`).join("");
    writeFileSync(path, lines);
    const moved = await rotateLog(path, { maxBytes: 1000 });
    const kept = readFileSync(`${path}.1`, "utf8");
    assert.equal(kept.length, moved);
    assert.ok(moved > 0 && moved <= 1000, `kept ${moved} bytes`);
    assert.ok(lines.endsWith(kept), "the kept part is the log's end");
    assert.match(kept, /^line \d{4}\n/);
    assert.equal(readFileSync(path, "utf8"), "");
  });

  it("keeps the last bytes of a log without a line's end near where the kept part starts", async () => {
    const path = join(logDir(), "s.log");
    const content = Buffer.alloc(200 * 1024);
    for (let i = 0; i < content.length; i++) content[i] = 32 + (i % 90);
    writeFileSync(path, content);
    const moved = await rotateLog(path, { maxBytes: 64 * 1024 });
    assert.ok(moved > 0 && moved <= 64 * 1024, `kept ${moved} bytes`);
    assert.deepEqual(readFileSync(`${path}.1`), content.subarray(content.length - moved));
  });

  it("truncates the log, keeping no part, and warns when the rotated part cannot be written (a full disk)", async () => {
    const dir = logDir();
    const path = join(dir, "s.log");
    writeFileSync(path, "x".repeat(5000));
    writeFileSync(`${path}.1`, "older part\n");
    // Writing `<log>.1.tmp` fails (EISDIR here; ENOSPC on a full disk): the log must shrink all the same.
    mkdirSync(`${path}.1.tmp`);
    const warnings: string[] = [];
    const moved = await rotateLog(path, {
      maxBytes: 1000,
      logger: { warn: (_: unknown, message: string) => warnings.push(message), debug: () => undefined } as never,
    });
    assert.equal(moved, 0);
    assert.equal(statSync(path).size, 0);
    assert.equal(readFileSync(`${path}.1`, "utf8"), "older part\n");
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /dropping its output, to free the disk/);
  });

  it("does nothing for a log that is gone, and leaves no copy", async () => {
    const dir = logDir();
    assert.equal(await rotateLog(join(dir, "gone.log")), 0);
    assert.deepEqual(readdirSync(dir), []);
  });
});

describe("rotateLog with the readers' records (LogGenerations)", () => {
  /** The record of `path` as a reader sees it. */
  async function record(generations: LogGenerations, path: string): Promise<LogGeneration> {
    const hold = generations.hold(path);
    try {
      return await hold.locked(async ({ generation, keptFrom, kept }) => ({ generation, keptFrom, kept }));
    } finally {
      hold.release();
    }
  }

  it("notes each rotation: its generation, where in the log it truncated the part it kept starts, and how long that part is", async () => {
    const dir = logDir();
    const path = join(dir, "s.log");
    const generations = new LogGenerations(dir);
    const reader = generations.hold(path);
    try {
      const lines = Array.from({ length: 1000 }, (_, i) => `line ${String(i).padStart(4, "0")}\n`).join("");
      writeFileSync(path, lines);
      const moved = await rotateLog(path, { maxBytes: 1000, generations });
      const state = await record(generations, path);
      assert.deepEqual(state, { generation: 1, keptFrom: lines.length - moved, kept: moved });
      assert.equal(readFileSync(`${path}.1`, "utf8"), lines.slice(state.keptFrom));
      writeFileSync(path, "short\n", { flag: "a" });
      await rotateLog(path, { maxBytes: 1000, generations });
      assert.deepEqual(await record(generations, path), { generation: 2, keptFrom: 0, kept: "short\n".length });
    } finally {
      reader.release();
    }
    assert.equal(generations.size, 0, "a record nobody holds is let go");
  });

  it("notes a rotation that kept no part: the output up to where it truncated is gone", async () => {
    const dir = logDir();
    const path = join(dir, "s.log");
    const generations = new LogGenerations(dir);
    const reader = generations.hold(path);
    try {
      writeFileSync(path, "x".repeat(5000));
      mkdirSync(`${path}.1.tmp`);
      assert.equal(await rotateLog(path, { maxBytes: 1000, generations, logger: { warn: () => undefined, debug: () => undefined } }), 0);
      assert.deepEqual(await record(generations, path), { generation: 1, keptFrom: 5000, kept: 0 });
    } finally {
      reader.release();
    }
  });

  it("renames and truncates only once a reader holding the log's lock lets go (it copies meanwhile)", async () => {
    const dir = logDir();
    const path = join(dir, "s.log");
    const generations = new LogGenerations(dir);
    writeFileSync(path, "old output\n");
    const reader = generations.hold(path);
    let rotation: Promise<number> | undefined;
    try {
      await reader.locked(async () => {
        rotation = rotateLog(path, { generations });
        const deadline = Date.now() + 10_000;
        while (!existsSync(`${path}.1.tmp`) && Date.now() < deadline) await sleep(2);
        // A rotation that never started would pass the checks below as well.
        assert.ok(existsSync(`${path}.1.tmp`), "the rotation copies meanwhile");
        await sleep(50);
        assert.ok(!existsSync(`${path}.1`), "not renamed under the reader's lock");
        assert.equal(readFileSync(path, "utf8"), "old output\n", "not truncated under the reader's lock");
      });
      assert.equal(await rotation, "old output\n".length);
      assert.equal(readFileSync(`${path}.1`, "utf8"), "old output\n");
      assert.equal(readFileSync(path, "utf8"), "");
    } finally {
      reader.release();
    }
  });

  it("manages the logs of its directory only", () => {
    const generations = new LogGenerations("/var/fsb/logs");
    assert.ok(generations.manages("/var/fsb/logs/s.log"));
    assert.ok(generations.manages("/var/fsb/logs/../logs/s.log"));
    assert.ok(!generations.manages("/var/fsb/logs/s.log.1"));
    assert.ok(!generations.manages("/var/fsb/other/s.log"));
    assert.ok(!generations.manages("/var/fsb/logs/sub/s.log"));
  });
});

describe("removeLog", () => {
  it("removes the log, its rotated part and a rotation's copy, and nothing else", async () => {
    const dir = logDir();
    for (const name of ["s.log", "s.log.1", "s.log.1.tmp", "t.log", "t.log.1"]) writeFileSync(join(dir, name), name);
    await removeLog(join(dir, "s.log"));
    assert.deepEqual(readdirSync(dir).sort(), ["t.log", "t.log.1"]);
    await removeLog(join(dir, "never.log"));
  });
});

describe("LogRotation", () => {
  it("rotates the logs over the limit only, and leaves rotated parts and other files alone", async () => {
    const dir = logDir();
    writeFileSync(join(dir, "big.log"), "x".repeat(5000));
    writeFileSync(join(dir, "small.log"), "y".repeat(100));
    writeFileSync(join(dir, "exact.log"), "z".repeat(4096));
    writeFileSync(join(dir, "old.log.1"), "w".repeat(9000));
    writeFileSync(join(dir, "notes.txt"), "v".repeat(9000));
    await new LogRotation({ dir, maxBytes: 4096 }).checkAll();
    assert.deepEqual(readdirSync(dir).sort(), ["big.log", "big.log.1", "exact.log", "notes.txt", "old.log.1", "small.log"]);
    assert.equal(readFileSync(join(dir, "big.log"), "utf8"), "");
    // Only its last maxBytes, less the share kept for what is appended during the copy.
    assert.equal(readFileSync(join(dir, "big.log.1"), "utf8"), "x".repeat(4096 - 4096 / 8));
    assert.equal(readFileSync(join(dir, "exact.log"), "utf8").length, 4096);
    assert.equal(readFileSync(join(dir, "old.log.1"), "utf8").length, 9000);
  });

  it("rotates on its own timer once started, and stops", async () => {
    const dir = logDir();
    const rotation = new LogRotation({ dir, maxBytes: 10, intervalMs: 20 });
    rotation.start();
    try {
      writeFileSync(join(dir, "s.log"), "more than ten bytes\n");
      const deadline = Date.now() + 5000;
      while (!existsSync(join(dir, "s.log.1")) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.equal(readFileSync(join(dir, "s.log.1"), "utf8"), "en bytes\n");
    } finally {
      await rotation.stop();
    }
    writeFileSync(join(dir, "s.log"), "written after the stop\n");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(readFileSync(join(dir, "s.log"), "utf8"), "written after the stop\n");
  });

  it("checks a log seen growing fast every hotIntervalMs, not only every intervalMs", async () => {
    const dir = logDir();
    const path = join(dir, "s.log");
    writeFileSync(path, "");
    const rotation = new LogRotation({ dir, maxBytes: 4096, intervalMs: 60_000, hotIntervalMs: 10 });
    await rotation.checkAll();
    writeFileSync(path, "x".repeat(3000), { flag: "a" }); // far more than a quarter of the limit per interval
    await rotation.checkAll();
    rotation.start();
    try {
      writeFileSync(path, "y".repeat(3000), { flag: "a" });
      const deadline = Date.now() + 2000;
      while (!existsSync(`${path}.1`) && Date.now() < deadline) await sleep(5);
      assert.ok(existsSync(`${path}.1`), "rotated long before the next full check");
    } finally {
      await rotation.stop();
    }
  });

  it("checks a log marked hot (a new sandbox's) every hotIntervalMs from the mark, before any check saw it grow", async () => {
    const dir = logDir();
    const marked = join(dir, "marked.log");
    const unmarked = join(dir, "unmarked.log");
    writeFileSync(marked, "");
    writeFileSync(unmarked, "");
    const rotation = new LogRotation({ dir, maxBytes: 4096, intervalMs: 60_000, hotIntervalMs: 10 });
    rotation.markHot(marked);
    rotation.markHot(join(root, "elsewhere.log")); // not one of its logs: ignored
    rotation.start();
    try {
      writeFileSync(marked, "x".repeat(5000), { flag: "a" });
      writeFileSync(unmarked, "y".repeat(5000), { flag: "a" });
      const deadline = Date.now() + 2000;
      while (!existsSync(`${marked}.1`) && Date.now() < deadline) await sleep(5);
      assert.ok(existsSync(`${marked}.1`), "rotated long before the next full check");
      assert.ok(!existsSync(`${unmarked}.1`), "an unmarked log waits for the full check");
    } finally {
      await rotation.stop();
    }
  });

  it("hands its readers' records to each rotation", async () => {
    const dir = logDir();
    writeFileSync(join(dir, "s.log"), "x".repeat(5000));
    const seen: unknown[] = [];
    const rotation = new LogRotation({
      dir,
      maxBytes: 4096,
      rotate: (path, options) => {
        seen.push(options?.generations);
        return rotateLog(path, options);
      },
    });
    await rotation.checkAll();
    assert.deepEqual(seen.length, 1);
    assert.equal(seen[0], rotation.generations);
  });

  it("does not check a quiet log between full checks", async () => {
    const dir = logDir();
    const path = join(dir, "s.log");
    writeFileSync(path, "x".repeat(100));
    const rotation = new LogRotation({ dir, maxBytes: 4096, intervalMs: 60_000, hotIntervalMs: 10 });
    await rotation.checkAll();
    await rotation.checkAll();
    rotation.start();
    try {
      writeFileSync(path, "y".repeat(5000), { flag: "a" });
      await sleep(200);
      assert.ok(!existsSync(`${path}.1`));
    } finally {
      await rotation.stop();
    }
  });

  it("rotates the other logs while one log's rotation is slow", async () => {
    const dir = logDir();
    for (const name of ["a.log", "b.log", "c.log"]) writeFileSync(join(dir, name), "x".repeat(5000));
    let release!: () => void;
    const slow = new Promise<void>((resolve) => (release = resolve));
    const rotated: string[] = [];
    const rotation = new LogRotation({
      dir,
      maxBytes: 4096,
      rotate: async (path, options) => {
        if (path.endsWith("a.log")) await slow;
        rotated.push(path);
        return rotateLog(path, options);
      },
    });
    const pass = rotation.checkAll();
    const deadline = Date.now() + 2000;
    while (rotated.length < 2 && Date.now() < deadline) await sleep(5);
    assert.deepEqual(rotated.map((path) => path.slice(dir.length + 1)).sort(), ["b.log", "c.log"]);
    release();
    await pass;
    assert.equal(rotated.length, 3);
  });

  it("rotates at most ROTATION_CONCURRENCY logs at once", async () => {
    const dir = logDir();
    for (let i = 0; i < ROTATION_CONCURRENCY * 3; i++) writeFileSync(join(dir, `s${i}.log`), "x".repeat(5000));
    let running = 0;
    let most = 0;
    const rotation = new LogRotation({
      dir,
      maxBytes: 4096,
      rotate: async (path, options) => {
        most = Math.max(most, ++running);
        await sleep(5);
        running -= 1;
        return rotateLog(path, options);
      },
    });
    await rotation.checkAll();
    assert.equal(most, ROTATION_CONCURRENCY);
    assert.equal(readdirSync(dir).filter((name) => name.endsWith(".1")).length, ROTATION_CONCURRENCY * 3);
  });

  it("passes over a missing directory and reports nothing", async () => {
    const warnings: unknown[] = [];
    await new LogRotation({ dir: join(root, "missing"), logger: { warn: (...args: unknown[]) => warnings.push(args), debug: () => undefined } }).checkAll();
    assert.deepEqual(warnings, []);
  });

  it("refuses a limit that is not a positive whole number", () => {
    assert.throws(() => new LogRotation({ dir: root, maxBytes: 0 }), /maxBytes must be a positive whole number/);
    assert.throws(() => new LogRotation({ dir: root, maxBytes: 1.5 }), /maxBytes must be a positive whole number/);
  });
});
