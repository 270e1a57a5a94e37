import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { createContainerdRuntime } from "./containerd-runtime.js";

const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

describe("ContainerdRuntime.prepare", () => {
  it("first removes the exec FIFOs and control outputs a previous agent process left in its state directory", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "fsb-runtime-state-"));
    roots.push(stateDir);
    execFileSync("mkfifo", [join(stateDir, "sb-a.exec-0a1b.stdout"), join(stateDir, "sb-a.exec-0a1b.stderr")]);
    writeFileSync(join(stateDir, "sb-a.fsb-control-0c0d0e0f.out"), "");
    writeFileSync(join(stateDir, "agent.log"), "kept\n");
    // No containerd behind the socket: prepare fails at its first call, after the sweep.
    const runtime = createContainerdRuntime({
      agentName: "agent-0",
      socketPath: join(stateDir, "no-containerd.sock"),
      stateDir,
      cgroupLayout: { version: 2, root: stateDir, controllers: [] },
      runscPath: "/bin/true",
      logger: pino({ level: "silent" }),
    });
    try {
      await assert.rejects(runtime.prepare());
    } finally {
      runtime.close();
    }
    for (const name of ["sb-a.exec-0a1b.stdout", "sb-a.exec-0a1b.stderr", "sb-a.fsb-control-0c0d0e0f.out"]) assert.ok(!existsSync(join(stateDir, name)), name);
    assert.ok(existsSync(join(stateDir, "agent.log")));
  });
});
