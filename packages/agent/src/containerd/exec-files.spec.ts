import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { ExecFiles, controlOutputName, isControlOutputName } from "./exec-files.js";

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

/**
 * A state directory as an agent process killed mid-exec leaves it: the FIFOs of execs in sandboxes
 * sb-a and sb-b, control outputs of containers sb-a and fsb-prepared-1, and files that are not an
 * exec's.
 */
function stateDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "fsb-exec-files-"));
  roots.push(dir);
  execFileSync("mkfifo", [
    join(dir, "sb-a.exec-0a1b.stdout"),
    join(dir, "sb-a.exec-0a1b.stderr"),
    join(dir, "sb-b.exec-99.stdout"),
    join(dir, "sb-b.exec-99.stderr"),
  ]);
  writeFileSync(join(dir, controlOutputName("sb-a", "fsb-control-0c0d0e0f")), "resumed\n");
  writeFileSync(join(dir, controlOutputName("fsb-prepared-1", "fsb-control-12345678")), "");
  // Not an exec's: other state, and a regular file or a directory under a FIFO's name.
  writeFileSync(join(dir, "runsc-network-none"), "#!/bin/sh\n");
  writeFileSync(join(dir, "sb-a.exec-0c.stdout"), "");
  mkdirSync(join(dir, "sb-b.fsb-control-0a0b0c0d.out"));
  mkdirSync(join(dir, "logs"));
  writeFileSync(join(dir, "logs", "sb-a.log"), "hello\n");
  return dir;
}

describe("ExecFiles.removeLeftovers", () => {
  it("at an agent's start: removes every exec FIFO and control output a previous process left, and nothing else", async () => {
    const dir = stateDir();
    const removed = await new ExecFiles(dir).removeLeftovers();
    assert.deepEqual(removed.sort(), [
      "fsb-prepared-1.fsb-control-12345678.out",
      "sb-a.exec-0a1b.stderr",
      "sb-a.exec-0a1b.stdout",
      "sb-a.fsb-control-0c0d0e0f.out",
      "sb-b.exec-99.stderr",
      "sb-b.exec-99.stdout",
    ]);
    assert.deepEqual(readdirSync(dir).sort(), ["logs", "runsc-network-none", "sb-a.exec-0c.stdout", "sb-b.fsb-control-0a0b0c0d.out"]);
    assert.ok(existsSync(join(dir, "logs", "sb-a.log")));
  });

  it("at a sandbox's deletion: removes only that sandbox's exec FIFOs and its container's control outputs", async () => {
    const dir = stateDir();
    const removed = await new ExecFiles(dir).removeLeftovers({ sandboxId: "sb-b", containerId: "fsb-prepared-1" });
    assert.deepEqual(removed.sort(), ["fsb-prepared-1.fsb-control-12345678.out", "sb-b.exec-99.stderr", "sb-b.exec-99.stdout"]);
    for (const kept of ["sb-a.exec-0a1b.stdout", "sb-a.exec-0a1b.stderr", "sb-a.fsb-control-0c0d0e0f.out"]) assert.ok(existsSync(join(dir, kept)), kept);
  });

  it("never removes the files of an exec in flight in this process, until it lets them go", async () => {
    const dir = stateDir();
    const files = new ExecFiles(dir);
    const releaseFifos = files.hold("sb-a.exec-0a1b");
    const releaseOutput = files.hold("sb-a.fsb-control-0c0d0e0f");
    const removed = await files.removeLeftovers({ sandboxId: "sb-a", containerId: "sb-a" });
    assert.deepEqual(removed, []);
    releaseFifos();
    releaseOutput();
    assert.deepEqual((await files.removeLeftovers({ sandboxId: "sb-a", containerId: "sb-a" })).sort(), [
      "sb-a.exec-0a1b.stderr",
      "sb-a.exec-0a1b.stdout",
      "sb-a.fsb-control-0c0d0e0f.out",
    ]);
  });

  it("finds nothing in a state directory that does not exist", async () => {
    assert.deepEqual(await new ExecFiles(join(tmpdir(), "fsb-exec-files-missing", "agent-0")).removeLeftovers(), []);
  });
});

describe("isControlOutputName", () => {
  it("tells a control exec's output file, of one container when asked", () => {
    assert.ok(isControlOutputName("sb-a.fsb-control-0c0d0e0f.out"));
    assert.ok(isControlOutputName("sb-a.fsb-control-0c0d0e0f.out", "sb-a"));
    assert.ok(!isControlOutputName("sb-a.fsb-control-0c0d0e0f.out", "sb"));
    assert.ok(!isControlOutputName("sb-a.exec-0c0d.stdout"));
    assert.ok(!isControlOutputName("sb-a.fsb-control-0c0d0e0f.out.tmp"));
  });
});
