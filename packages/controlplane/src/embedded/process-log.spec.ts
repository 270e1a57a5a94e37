import assert from "node:assert/strict";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { finished } from "node:stream/promises";
import { setTimeout as realSleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import pino from "pino";
import { FakeClock } from "../controller/clock.js";
import { ProcessLog } from "./process-log.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-process-log-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

interface Line {
  level: number;
  msg: string;
  err?: { code?: string };
  droppedBytes?: number;
}

/** A pino logger whose lines the test reads. */
function capturingLogger(): { logger: pino.Logger; lines: Line[] } {
  const lines: Line[] = [];
  const logger = pino({ level: "debug" }, { write: (text: string) => void lines.push(JSON.parse(text) as Line) });
  return { logger, lines };
}

const until = async (condition: () => boolean, what: string): Promise<void> => {
  for (let turn = 0; !condition() && turn < 400; turn++) await realSleep(5);
  assert.ok(condition(), what);
};

describe("ProcessLog", () => {
  it("appends what it is given and what a child's stderr says", async () => {
    const path = join(directory, "plain.log");
    const { logger, lines } = capturingLogger();
    const log = new ProcessLog({ path, logger });
    const stderr = new PassThrough();
    log.follow(stderr);
    log.write("a line\n");
    stderr.end("from stderr\n");
    await finished(stderr);
    await log.close();
    assert.equal(readFileSync(path, "utf8"), "a line\nfrom stderr\n");
    assert.deepEqual(lines, []);
  });

  it("says once that the file cannot be written (ENOSPC) and drops the output, reading its source to the end", async () => {
    const { logger, lines } = capturingLogger();
    const log = new ProcessLog({ path: "/dev/full", logger });
    const stderr = new PassThrough({ highWaterMark: 1024 });
    log.follow(stderr);
    log.write("first\n");
    await until(() => log.failing, "the write failed");
    // Far more than any buffer holds: a source paused for a file that cannot be written would never end.
    for (let i = 0; i < 200; i++) stderr.write(`${"x".repeat(1023)}\n`);
    stderr.end();
    await finished(stderr);
    log.write("later\n");
    await log.close();
    const warnings = lines.filter((line) => line.level === 40);
    assert.equal(warnings.length, 1, "one warning for the outage");
    assert.equal(warnings[0]?.msg, "cannot write the log; dropping its output until it can be written again");
    assert.equal(warnings[0]?.err?.code, "ENOSPC");
  });

  it("opens the file again reopenAfterMs after the last failure, and says when it can be written again", async () => {
    const path = join(directory, "comes-back.log");
    mkdirSync(path); // a directory: opening it for appending fails with EISDIR
    const clock = new FakeClock();
    const { logger, lines } = capturingLogger();
    const log = new ProcessLog({ path, logger, clock, reopenAfterMs: 1000 });
    log.write("lost\n");
    await until(() => log.failing, "the open failed");
    rmSync(path, { recursive: true });

    clock.advance(999);
    log.write("dropped\n");
    clock.advance(1);
    log.write("kept\n");
    await until(() => !log.failing, "the outage ended");
    await log.close();
    assert.equal(readFileSync(path, "utf8"), "kept\n");
    assert.deepEqual(
      lines.map((line) => [line.level, line.msg, line.droppedBytes]),
      [
        [40, "cannot write the log; dropping its output until it can be written again", undefined],
        [30, "the log can be written again", "dropped\n".length],
      ],
    );
  });

  /** The file's content, or undefined while it does not exist. */
  const contentOf = (path: string): string | undefined => (existsSync(path) ? readFileSync(path, "utf8") : undefined);

  it("rotates the file to <path>.1 once a write takes it past maxBytes, keeping one older part and losing nothing", async () => {
    const path = join(directory, "rotating.log");
    const { logger, lines } = capturingLogger();
    const log = new ProcessLog({ path, logger, maxBytes: 20 });
    // One write at a time, each waited for: writes queued together all land in the file they were queued for.
    const written = async (text: string, where: string, content: string) => {
      log.write(text);
      await until(() => contentOf(where) === content, `${JSON.stringify(text)} landed in ${where}`);
    };
    await written("a".repeat(14) + "\n", path, "a".repeat(14) + "\n");
    await written("b".repeat(9) + "\n", `${path}.1`, "a".repeat(14) + "\n" + "b".repeat(9) + "\n");
    assert.equal(contentOf(path), undefined, "moved aside; the next write opens a new file");
    await written("c\n", path, "c\n");
    await written("d".repeat(19) + "\n", `${path}.1`, "c\n" + "d".repeat(19) + "\n");
    await written("e\n", path, "e\n");
    await log.close();
    assert.equal(contentOf(`${path}.1`), "c\n" + "d".repeat(19) + "\n", "only the part before is kept");
    assert.equal(contentOf(path), "e\n");
    assert.deepEqual(lines, []);
  });

  it("rotates at its first write a file that a previous run left past maxBytes", async () => {
    const path = join(directory, "left-large.log");
    writeFileSync(path, "x".repeat(30));
    const { logger } = capturingLogger();
    const log = new ProcessLog({ path, logger, maxBytes: 20 });
    log.write("first\n");
    await until(() => contentOf(`${path}.1`) === "x".repeat(30) + "first\n", "the old file moved aside with the write");
    log.write("second\n");
    await log.close();
    assert.equal(contentOf(path), "second\n");
  });

  it("never rotates what is not a regular file (a symbolic link to /dev/null)", async () => {
    const path = join(directory, "discarded.log");
    symlinkSync("/dev/null", path);
    const { logger, lines } = capturingLogger();
    const log = new ProcessLog({ path, logger, maxBytes: 4 });
    log.write("more than four bytes\n");
    log.write("and more\n");
    await log.close();
    assert.ok(lstatSync(path).isSymbolicLink(), "the link stays in place");
    assert.equal(existsSync(`${path}.1`), false);
    assert.deepEqual(lines, []);
  });

  it("drops writes after close() instead of failing with 'write after end'", async () => {
    const path = join(directory, "closed.log");
    const { logger, lines } = capturingLogger();
    const log = new ProcessLog({ path, logger });
    log.write("before\n");
    await log.close();
    log.write("after\n");
    await realSleep(20);
    assert.equal(readFileSync(path, "utf8"), "before\n");
    assert.deepEqual(lines, []);
  });
});
