import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readRunFile } from "./run-file.js";

describe("readRunFile", () => {
  let directory: string;
  before(() => (directory = mkdtempSync(join(tmpdir(), "fsb-run-file-"))));
  after(() => rmSync(directory, { recursive: true, force: true }));

  it("reads a regular file", () => {
    writeFileSync(join(directory, "exit-code"), "3\n");
    assert.equal(readRunFile(join(directory, "exit-code")), "3\n");
  });

  it("takes an absent file for none", () => {
    assert.equal(readRunFile(join(directory, "missing")), undefined);
  });

  it("takes a FIFO for none, at once, with no writer on the other end", () => {
    execFileSync("mkfifo", [join(directory, "fifo")]);
    assert.equal(readRunFile(join(directory, "fifo")), undefined);
  });

  it("does not follow a symbolic link (to a file of the host)", () => {
    writeFileSync(join(directory, "host-file"), "secret");
    symlinkSync(join(directory, "host-file"), join(directory, "link"));
    assert.equal(readRunFile(join(directory, "link")), undefined);
  });

  it("never opens a FIFO or a device it finds there: a FIFO's writer is not let through, a device's driver never runs", async () => {
    const fifo = join(directory, "exit-code.fifo");
    execFileSync("mkfifo", [fifo]);
    // A writer waits in open(2) until a reader opens the FIFO: an agent that opened it would let it through.
    const writer = spawn("sh", ["-c", `echo opened > ${fifo}`], { stdio: "ignore" });
    const exited = new Promise<void>((resolve) => writer.once("exit", () => resolve()));
    try {
      // Once the writer waits in the FIFO's open (its wait channel says so), the read is tried.
      const waiting = () => {
        try {
          return readFileSync(`/proc/${writer.pid}/wchan`, "utf8") === "wait_for_partner";
        } catch {
          return false;
        }
      };
      for (let i = 0; i < 100 && !waiting(); i++) await sleep(20);
      assert.ok(waiting(), "the writer waits for a reader");
      assert.equal(readRunFile(fifo), undefined);
      const outcome = await Promise.race([exited.then(() => "let through"), sleep(1000).then(() => "still waiting")]);
      assert.equal(outcome, "still waiting");
    } finally {
      writer.kill("SIGKILL");
    }
    // A device node (what a sandbox's root could make with CAP_MKNOD): looked at, never opened.
    const device = join(directory, "exit-code.dev");
    execFileSync("mknod", [device, "c", "1", "3"]);
    assert.equal(readRunFile(device), undefined);
  });

  it("takes a file bigger than any record for none", () => {
    writeFileSync(join(directory, "big"), Buffer.alloc(64 * 1024 + 1, "a"));
    assert.equal(readRunFile(join(directory, "big")), undefined);
    writeFileSync(join(directory, "just-fits"), Buffer.alloc(64 * 1024, "b"));
    assert.equal(readRunFile(join(directory, "just-fits"))?.length, 64 * 1024);
  });
});
