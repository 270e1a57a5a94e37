import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
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
