import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
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
