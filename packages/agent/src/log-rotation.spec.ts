import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { LogRotation, ROTATION_CATCH_UP_BYTES, removeLog, rotateLog } from "./log-rotation.js";

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

  it("ends under a writer as fast as the copy, moving at most the size it began with plus the catch-up's bound", async () => {
    const path = join(logDir(), "s.log");
    const start = 4 * 1024 * 1024;
    writeFileSync(path, "x".repeat(start));
    // As a sandbox running `yes`: it appends as fast as the rotation copies. Its file size limit
    // (512-byte blocks: 512 MiB) bounds the disk a rotation chasing it for ever would fill.
    const writer = spawn("sh", ["-c", 'ulimit -f 1048576; exec yes >> "$0"', path], { stdio: "ignore" });
    const exited = once(writer, "exit");
    try {
      while (statSync(path).size === start && writer.exitCode === null) await sleep(5);
      const sizeSeen = statSync(path).size;
      let timer: NodeJS.Timeout | undefined;
      const stuck = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("rotateLog is still copying after 60 s")), 60_000);
      });
      const moved = await Promise.race([rotateLog(path, sizeSeen), stuck]).finally(() => clearTimeout(timer));
      assert.ok(moved >= sizeSeen && moved <= sizeSeen + ROTATION_CATCH_UP_BYTES, `moved ${moved} bytes of a log of ${sizeSeen}`);
      assert.equal(statSync(`${path}.1`).size, moved);
      assert.ok(!existsSync(`${path}.1.tmp`), "the rotation's copy is renamed, not left");
    } finally {
      writer.kill("SIGKILL");
      await exited;
    }
  });

  it("does nothing for a log that is gone, and leaves no copy", async () => {
    const dir = logDir();
    assert.equal(await rotateLog(join(dir, "gone.log")), 0);
    assert.deepEqual(readdirSync(dir), []);
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
    assert.equal(readFileSync(join(dir, "big.log.1"), "utf8"), "x".repeat(5000));
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
      assert.equal(readFileSync(join(dir, "s.log.1"), "utf8"), "more than ten bytes\n");
    } finally {
      await rotation.stop();
    }
    writeFileSync(join(dir, "s.log"), "written after the stop\n");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(readFileSync(join(dir, "s.log"), "utf8"), "written after the stop\n");
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
