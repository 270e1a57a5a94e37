/**
 * A process logging through `stderrLogger` ends when the reader of its stderr goes away mid-line.
 * The child below logs one line far larger than a pipe holds (its parent reads nothing), then
 * exits; the parent closes its end of the pipe (a FIFO). With pino's asynchronous `destination(2)` the line
 * is still in flight at `process.exit`, whose synchronous flush then meets EPIPE and retries it
 * every 100 ms forever (the janitor of an embedded control plane killed with -9 stayed so for an
 * hour); written synchronously, the write fails once and the exit completes.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { closeSync, constants, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

test("a process whose stderr reader goes away mid-line still exits", async () => {
  // A real pipe (a FIFO) rather than a Node stream, which could read on in the background.
  const dir = mkdtempSync(join(tmpdir(), "fsb-stderr-logger-"));
  const fifo = join(dir, "stderr");
  assert.equal(spawnSync("mkfifo", [fifo]).status, 0, "mkfifo");
  let reader: number | undefined = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(fifo, constants.O_WRONLY);
  const module = new URL("./stderr-logger.ts", import.meta.url).href;
  const child = spawn(
    process.execPath,
    [
      "--conditions=development",
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      `const { stderrLogger } = await import(${JSON.stringify(module)});
       const logger = stderrLogger({ name: "probe" });
       process.stdout.write("ready\\n");
       logger.info({ filler: "x".repeat(4 << 20) }, "a line no pipe holds");
       logger.info("a line after the reader left");
       process.exit(0);`,
    ],
    { stdio: ["ignore", "pipe", writer] },
  );
  closeSync(writer);
  try {
    const lines = createInterface({ input: child.stdout! });
    const [line] = (await once(lines, "line")) as [string];
    assert.equal(line, "ready");
    // Long enough for the child to be blocked on the full pipe, whichever way it writes.
    await sleep(500);
    closeSync(reader);
    reader = undefined;
    const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
    const patience = new AbortController();
    const outcome = await Promise.race([exited, sleep(20_000, "still running" as const, { signal: patience.signal })]);
    patience.abort();
    assert.notEqual(outcome, "still running", "the child did not exit within 20 s of its stderr reader leaving");
    assert.deepEqual(outcome, [0, null]);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    if (reader !== undefined) closeSync(reader);
    rmSync(dir, { recursive: true, force: true });
  }
});
