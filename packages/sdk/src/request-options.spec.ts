import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, it } from "node:test";
import { StreamStart } from "./request-options.js";

describe("StreamStart", () => {
  it("is aborted by the caller's signal until stopped, and lets go of it then", () => {
    const caller = new AbortController();
    const start = new StreamStart(caller.signal, 0);
    caller.abort(new Error("shutting down"));
    assert.ok(start.signal.aborted);
    assert.equal((start.signal.reason as Error).message, "shutting down");

    const later = new AbortController();
    const stopped = new StreamStart(later.signal, 0);
    stopped.stop();
    const aborted = new StreamStart(AbortSignal.abort("gone"), 0);
    assert.ok(aborted.signal.aborted, "a caller's signal aborted already aborts it at once");
    assert.equal(aborted.signal.reason, "gone");
    assert.ok(stopped.signal.aborted);
    later.abort();
  });

  it("keeps nothing per call of a long-lived caller signal once stopped (AbortSignal.any did, on Node 20)", () => {
    // In a process of its own, with --expose-gc: the heap after 100 000 calls sharing one signal.
    const dir = mkdtempSync(join(tmpdir(), "fsb-stream-start-"));
    try {
      const script = join(dir, "calls.mts");
      writeFileSync(
        script,
        `import { StreamStart } from ${JSON.stringify(pathToFileURL(join(import.meta.dirname, "request-options.ts")).href)};
const caller = new AbortController();
const calls = async () => {
  for (let i = 0; i < 100_000; i++) {
    const start = new StreamStart(caller.signal, 0);
    start.started();
    start.stop();
    if (i % 10_000 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
};
const settle = async () => {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    globalThis.gc();
  }
};
await calls();
await settle();
const before = process.memoryUsage().heapUsed;
await calls();
await settle();
process.stdout.write(String(process.memoryUsage().heapUsed - before));
`,
      );
      const result = spawnSync(process.execPath, ["--expose-gc", "--conditions=development", "--import", "tsx", script], { encoding: "utf8" });
      assert.equal(result.status, 0, result.stderr);
      const retained = Number(result.stdout);
      // AbortSignal.any kept ~80 bytes a call: 8 MB here.
      assert.ok(retained < 2_000_000, `${retained} bytes retained after 100 000 calls`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
