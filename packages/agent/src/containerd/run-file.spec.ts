import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
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

  it("takes a file bigger than any record for none", () => {
    writeFileSync(join(directory, "big"), Buffer.alloc(64 * 1024 + 1, "a"));
    assert.equal(readRunFile(join(directory, "big")), undefined);
    writeFileSync(join(directory, "just-fits"), Buffer.alloc(64 * 1024, "b"));
    assert.equal(readRunFile(join(directory, "just-fits"))?.length, 64 * 1024);
  });
});
