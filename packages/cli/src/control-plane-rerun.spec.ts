/**
 * A foreground `fsb up` without the control plane's flags runs itself again with them: real node
 * processes — the script run again, and for the signals a parent process of its own running
 * rerunAsControlPlane, signalled as a terminal or `kill` would.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { CONTROL_PLANE_ENV, CONTROL_PLANE_NODE_FLAGS } from "@fast-sandbox/controlplane";
import { rerunAsControlPlane } from "./control-plane-rerun.js";

const dir = mkdtempSync(join(tmpdir(), "fsb-rerun-spec-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, source: string): string {
  const path = join(dir, name);
  writeFileSync(path, source);
  return path;
}

/** Prints what it was started with, exits 7. */
const reporter = script(
  "report.mjs",
  'process.stdout.write(JSON.stringify({ execArgv: process.execArgv, argv: process.argv.slice(2), arena: process.env.MALLOC_ARENA_MAX ?? null }) + "\\n"); process.exit(7);',
);
/** Says `ready`, then, at each signal, its name; exits 300 ms after a signal with 100 + the number of signals it saw (101 for one). */
const waiter = script(
  "wait.mjs",
  'let seen = 0; for (const s of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(s, () => { console.log("got " + s); seen += 1; setTimeout(() => process.exit(100 + seen), 300); });' +
    ' console.log("ready"); setInterval(() => {}, 1000);',
);

/** A node process of its own running rerunAsControlPlane with `options` (source text); its exit code and stdout (the child's, which it shares). */
function parent(options: string, spawnOptions: { env?: NodeJS.ProcessEnv; detached?: boolean } = {}) {
  const child = spawn(
    process.execPath,
    [
      "--conditions=development",
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      `import { rerunAsControlPlane } from ${JSON.stringify(join(import.meta.dirname, "control-plane-rerun.ts"))};` +
        `process.exitCode = await rerunAsControlPlane(${options});`,
    ],
    { stdio: ["ignore", "pipe", "inherit"], ...spawnOptions },
  );
  let stdout = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  const exited = (once(child, "exit") as Promise<[number | null]>).then(([code]) => ({ code, stdout }));
  return { child, exited, stdout: () => stdout };
}

describe("rerunAsControlPlane", () => {
  it("runs the script again with the control plane's flags before the process's own, the same arguments and the control plane's environment; resolves with its exit code", async () => {
    const { exited } = parent(`{ execArgv: ["--trace-warnings"], argv: [${JSON.stringify(reporter)}, "up", "--port", "0"] }`, {
      env: { ...process.env, MALLOC_ARENA_MAX: undefined },
    });
    const { code, stdout } = await exited;
    assert.equal(code, 7, "this process exits as the child did");
    const started = JSON.parse(stdout) as { execArgv: string[]; argv: string[]; arena: string | null };
    assert.deepEqual(started.execArgv, [...CONTROL_PLANE_NODE_FLAGS, "--trace-warnings"]);
    assert.deepEqual(started.argv, ["up", "--port", "0"]);
    assert.equal(started.arena, CONTROL_PLANE_ENV.MALLOC_ARENA_MAX);
  });

  it("keeps an operator's MALLOC_ARENA_MAX", async () => {
    const { exited } = parent(`{ execArgv: [], argv: [${JSON.stringify(reporter)}] }`, { env: { ...process.env, MALLOC_ARENA_MAX: "8" } });
    const { code, stdout } = await exited;
    assert.equal(code, 7);
    assert.equal((JSON.parse(stdout) as { arena: string }).arena, "8");
  });

  it("kills the child when the parent dies without passing anything on (SIGKILL), as one process of fsb up would have died", { timeout: 20_000 }, async () => {
    const follower = script(
      "follow.mts",
      `import { followRerunParent } from ${JSON.stringify(join(import.meta.dirname, "control-plane-rerun.ts"))};` +
        'followRerunParent(); console.log("child " + process.pid); setInterval(() => {}, 1000);',
    );
    const run = parent(`{ execArgv: ["--conditions=development", "--import", "tsx"], argv: [${JSON.stringify(follower)}] }`, { detached: true });
    while (!/child \d+\n/.test(run.stdout())) await sleep(20);
    const childPid = Number(/child (\d+)/.exec(run.stdout())?.[1]);
    const alive = () => {
      try {
        process.kill(childPid, 0);
        return true;
      } catch {
        return false;
      }
    };
    assert.ok(alive(), "the child runs while its parent does");
    run.child.kill("SIGKILL");
    await run.exited;
    while (alive()) await sleep(20);
  });

  it("resolves with 128 + n for a child killed by signal n", async () => {
    const killed = script("killed.mjs", 'process.kill(process.pid, "SIGKILL");');
    assert.equal(await rerunAsControlPlane({ execArgv: [], argv: [killed] }), 128 + 9);
  });

  for (const [signal, how] of [
    ["SIGINT", "to the parent's process group, as a terminal's Ctrl-C"],
    ["SIGTERM", "to the parent alone, as kill or a service manager would"],
    ["SIGHUP", "to the parent's process group, as a closed terminal"],
  ] as const) {
    it(`passes ${signal} sent ${how} to the child exactly once, and exits as the child did`, { timeout: 20_000 }, async () => {
      // A process group of its own, as a shell gives a foreground job.
      const run = parent(`{ execArgv: [], argv: [${JSON.stringify(waiter)}] }`, { detached: true });
      while (!run.stdout().includes("ready\n")) await sleep(20);
      const pid = run.child.pid ?? 0;
      process.kill(signal === "SIGTERM" ? pid : -pid, signal);
      const { code, stdout } = await run.exited;
      assert.deepEqual(stdout.trim().split("\n"), ["ready", `got ${signal}`], "the child saw the signal once (a second would have ended it with 102)");
      assert.equal(code, 101, "the parent exits with the child's code");
    });
  }
});
