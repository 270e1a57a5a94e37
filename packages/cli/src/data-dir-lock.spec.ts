/**
 * The data directory's lock (`<dir>/lock`): how `fsb up` owns a data directory and how `fsb down`
 * tells the process that owns it from whatever reuses its pid. Real processes, real /proc.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { chmodSync, chownSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { FsbError } from "@fast-sandbox/sdk";
import { acquireLock, files, isRunning, looksLikeFsbUp, processStartTime, readLock, type ProcessIdentity } from "./data-dir.js";
import { identity, specProcesses } from "./spec-processes.fixture.js";

const { directory, track, newDataDir } = specProcesses("fsb-data-dir-lock-spec-");

/** A node process running `args` (by default, one that waits), once it runs. */
async function running(args: string[] = ["-e", "setInterval(() => {}, 1000)"]): Promise<ChildProcess & { pid: number }> {
  const child = spawn(process.execPath, args, { stdio: "ignore" });
  track(child);
  await once(child, "spawn");
  assert.ok(child.pid);
  return child as ChildProcess & { pid: number };
}

/** The identity of a process that ran and is gone (exited and reaped). */
async function gone(): Promise<ProcessIdentity> {
  const child = await running(["-e", "setTimeout(() => {}, 100)"]);
  const was = identity(child.pid);
  await once(child, "exit");
  return was;
}

const writeLock = (dir: string, holder: ProcessIdentity): void => writeFileSync(files.lock(dir), `${JSON.stringify(holder)}\n`);

describe("processStartTime", () => {
  it("reads the start time of a running process, later for a process started later, and nothing once it is gone", async () => {
    const own = processStartTime(process.pid);
    assert.ok(own !== undefined && Number.isSafeInteger(own) && own > 0);
    const child = await running();
    assert.ok((processStartTime(child.pid) ?? 0) >= own);
    child.kill("SIGKILL");
    await once(child, "exit");
    assert.equal(processStartTime(child.pid), undefined);
  });

  it("tells a process from another with its pid but another start time", async () => {
    const child = await running();
    const self = identity(child.pid);
    assert.ok(isRunning(self));
    assert.equal(isRunning({ ...self, startTime: self.startTime - 1 }), false);
  });
});

describe("acquireLock", () => {
  it("records this process's pid and start time in <dir>/lock, created with the directory, and release() removes it", () => {
    const dir = join(directory, "new", "nested");
    const taken = acquireLock(dir);
    assert.ok("lock" in taken);
    assert.deepEqual(readLock(dir)?.holder, identity(process.pid));
    assert.deepEqual(taken.lock.holder, identity(process.pid));
    taken.lock.release();
    assert.equal(readLock(dir), undefined);
    assert.deepEqual(readdirSync(dir), [], "no file of the taking is left");
  });

  it("makes the data directory this user's alone, mode 0700: a new one, and one that exists with another mode", () => {
    const created = join(directory, "private", "new");
    const first = acquireLock(created);
    assert.ok("lock" in first);
    first.lock.release();
    assert.equal(statSync(created).mode & 0o777, 0o700);
    // Made 0755 by hand, an older version, or the claims directory's `mkdir -p` (namespace-claim.ts), with what `fsb up` keeps there.
    const existing = newDataDir();
    chmodSync(existing, 0o755);
    writeFileSync(join(existing, "state.db"), "env values", { mode: 0o644 });
    const taken = acquireLock(existing);
    assert.ok("lock" in taken);
    taken.lock.release();
    assert.equal(statSync(existing).mode & 0o777, 0o700);
  });

  it("refuses another user's data directory, leaving its mode", () => {
    assert.equal(process.getuid?.(), 0, "needs root to give a directory to another user (npm test runs as root)");
    const others = newDataDir();
    chmodSync(others, 0o755);
    chownSync(others, 65534, 65534);
    assert.throws(
      () => acquireLock(others),
      (error: unknown) =>
        error instanceof FsbError &&
        error.code === "failed_precondition" &&
        error.message.startsWith(`data directory ${others} belongs to uid 65534, not to this user (uid 0)`),
    );
    assert.equal(statSync(others).mode & 0o777, 0o755);
    assert.deepEqual(readdirSync(others), []);
  });

  it("refuses a shared directory (sticky, like /tmp), which 0700 would take from everyone else", () => {
    const shared = newDataDir();
    chmodSync(shared, 0o1777);
    assert.throws(
      () => acquireLock(shared),
      (error: unknown) =>
        error instanceof FsbError && error.code === "failed_precondition" && error.message.includes(`${shared} is a shared directory (mode 1777, like /tmp)`),
    );
    assert.equal(statSync(shared).mode & 0o7777, 0o1777);
  });

  it("names the holder while the process holding it runs, and leaves its lock alone", async () => {
    const dir = newDataDir();
    const holder = identity((await running()).pid);
    writeLock(dir, holder);
    const before = readFileSync(files.lock(dir), "utf8");
    assert.deepEqual(acquireLock(dir), { heldBy: holder });
    assert.equal(readFileSync(files.lock(dir), "utf8"), before);
  });

  it("takes over the lock of a process that is gone (SIGKILL, a crash, a reboot)", async () => {
    const dir = newDataDir();
    writeLock(dir, await gone());
    const taken = acquireLock(dir);
    assert.ok("lock" in taken);
    assert.deepEqual(readLock(dir)?.holder, identity(process.pid));
    taken.lock.release();
  });

  it("takes over a lock whose pid another process reuses (same pid, another start time)", async () => {
    const dir = newDataDir();
    const reuser = identity((await running()).pid);
    writeLock(dir, { pid: reuser.pid, startTime: reuser.startTime - 1 });
    const taken = acquireLock(dir);
    assert.ok("lock" in taken);
    taken.lock.release();
  });

  it("takes over a lock it cannot read", () => {
    const dir = newDataDir();
    writeFileSync(files.lock(dir), "12");
    const taken = acquireLock(dir);
    assert.ok("lock" in taken);
    taken.lock.release();
  });

  it("release() leaves alone a lock that names another process", async () => {
    const dir = newDataDir();
    const taken = acquireLock(dir);
    assert.ok("lock" in taken);
    const other = identity((await running()).pid);
    writeLock(dir, other);
    taken.lock.release();
    assert.deepEqual(readLock(dir)?.holder, other);
  });

  it("gives a stale lock to exactly one of several processes taking it at once", { timeout: 60_000 }, async () => {
    const dir = newDataDir();
    writeLock(dir, await gone());
    const go = join(dir, "go");
    const script = join(directory, "contender.mts");
    writeFileSync(
      script,
      [
        `import { existsSync } from "node:fs";`,
        `import { acquireLock } from ${JSON.stringify(join(import.meta.dirname, "data-dir.ts"))};`,
        `while (!existsSync(${JSON.stringify(go)})) await new Promise((resolve) => setTimeout(resolve, 1));`,
        `const taken = acquireLock(${JSON.stringify(dir)});`,
        `console.log("lock" in taken ? "acquired" : "held");`,
        // Holds it until every contender has tried.
        `setTimeout(() => ("lock" in taken ? taken.lock.release() : undefined), 3000);`,
      ].join("\n"),
    );
    const contenders = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, ["--conditions=development", "--import", "tsx", script], { stdio: ["ignore", "pipe", "inherit"] });
      track(child);
      let output = "";
      child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
      return once(child, "exit").then(([code]) => ({ code: code as number | null, output: output.trim() }));
    });
    // Let them all start and wait for the file.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    writeFileSync(go, "");
    const results = await Promise.all(contenders);
    assert.deepEqual(
      results.map((result) => result.code),
      [0, 0, 0, 0],
    );
    assert.deepEqual(results.map((result) => result.output).sort(), ["acquired", "held", "held", "held"]);
    assert.equal(readLock(dir), undefined, "the winner released it");
  });
});

describe("looksLikeFsbUp", () => {
  it("recognises node running the fsb script, its bundle's launcher or the CLI's sources with `up`, and nothing else", async () => {
    const scripts = join(directory, "scripts");
    mkdirSync(join(scripts, "bin"), { recursive: true });
    mkdirSync(join(scripts, "src"), { recursive: true });
    const wait = "setInterval(() => {}, 1000)";
    for (const name of ["bin/fsb.js", "bin/fsb", "src/main.ts", "bin/other.js"]) writeFileSync(join(scripts, name), wait);
    const looks = async (...args: string[]): Promise<boolean> => looksLikeFsbUp((await running(args)).pid);

    assert.equal(await looks(join(scripts, "bin/fsb.js"), "up", "--detach"), true);
    assert.equal(await looks(join(scripts, "bin/fsb"), "--data-dir", "/tmp/x", "up"), true);
    assert.equal(await looks("--no-warnings", join(scripts, "src/main.ts"), "up"), true);
    assert.equal(await looks(join(scripts, "bin/fsb.js"), "ls"), false);
    assert.equal(await looks(join(scripts, "bin/other.js"), "up"), false);
    assert.equal(await looks("-e", wait, "up"), false);
    assert.equal(looksLikeFsbUp(process.pid), false);
    assert.equal(looksLikeFsbUp((await gone()).pid), false);
  });
});
