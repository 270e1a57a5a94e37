/**
 * `fsb down` signals the `fsb up` its data directory's lock names, and never a process that merely
 * has the pid a stale lock or pid file records. Real processes stand in for `fsb up`.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, it } from "node:test";
import { closeConnections } from "../connection.js";
import { FsbError, ValidationError } from "@fast-sandbox/sdk";
import { files, writeSettings, type ProcessIdentity } from "../data-dir.js";
import { down } from "./down.js";
import { identity, specProcesses } from "../spec-processes.fixture.js";
import { fakeSandbox, startFakeControlPlane } from "../fake-control-plane.fixture.js";

const { track, newDataDir } = specProcesses("fsb-down-spec-");

/** A node process running `args` that prints `ready` once it listens for SIGTERM (and reports it). */
async function running(...args: string[]): Promise<ChildProcess & { pid: number }> {
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  track(child);
  const lines = createInterface({ input: child.stdout });
  await once(lines, "line");
  assert.ok(child.pid);
  return child as ChildProcess & { pid: number };
}
const WAITS = 'process.on("SIGTERM", () => process.exit(143)); console.log("ready"); setInterval(() => {}, 1000)';
const alive = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null;

/** What `fsb up` leaves in its data directory while it runs. */
function runFiles(dir: string, holder: ProcessIdentity): void {
  writeFileSync(files.lock(dir), `${JSON.stringify(holder)}\n`);
  writeFileSync(files.pid(dir), `${holder.pid}\n`);
  writeFileSync(files.url(dir), "http://127.0.0.1:1\n");
}
const leftovers = (dir: string): string[] => [files.lock(dir), files.pid(dir), files.url(dir)].filter((path) => existsSync(path));

/** Runs `down` and returns what it printed on stdout (the test runner's own output is not strings: it goes through). */
async function downOutput(dataDir: string): Promise<string> {
  return (await downPrinted({ dataDir })).stdout;
}

async function downPrinted(options: Parameters<typeof down>[0]): Promise<{ stdout: string; stderr: string }> {
  const printed = { stdout: [] as string[], stderr: [] as string[] };
  const writes = { stdout: process.stdout.write.bind(process.stdout), stderr: process.stderr.write.bind(process.stderr) };
  for (const stream of ["stdout", "stderr"] as const) {
    const write = writes[stream];
    process[stream].write = (chunk: string | Uint8Array, ...rest: never[]) =>
      typeof chunk === "string" ? (printed[stream].push(chunk), true) : write(chunk, ...rest);
  }
  try {
    await down(options);
  } finally {
    process.stdout.write = writes.stdout;
    process.stderr.write = writes.stderr;
  }
  return { stdout: printed.stdout.join(""), stderr: printed.stderr.join("") };
}

describe("fsb down", () => {
  it("leaves alone a process that reuses the pid of a stale lock and pid file, and removes them", async () => {
    const dir = newDataDir();
    // The pid file and the lock name this pid, but its process started at another time: `fsb up` is gone.
    const reuser = await running("-e", WAITS);
    runFiles(dir, { pid: reuser.pid, startTime: identity(reuser.pid).startTime - 1 });
    const output = await downOutput(dir);
    assert.equal(
      output,
      `Fast Sandbox is not running for ${dir} (the process of its lock, pid ${reuser.pid}, is gone; removed the stale lock, controlplane.pid, url)\n`,
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(alive(reuser), "the process that has the pid now was not signalled");
    assert.deepEqual(leftovers(dir), []);
  });

  it("leaves alone the process the lock names when it does not run fsb up", async () => {
    const dir = newDataDir();
    const other = await running("-e", WAITS);
    runFiles(dir, identity(other.pid));
    const output = await downOutput(dir);
    assert.match(output, /is not running .*pid \d+, does not run 'fsb up'; removed the stale lock, controlplane\.pid, url\)\n$/);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(alive(other));
    assert.deepEqual(leftovers(dir), []);
  });

  it("says so when nothing runs and nothing was left behind", async () => {
    const dir = newDataDir();
    assert.equal(await downOutput(dir), `Fast Sandbox is not running for ${dir}\n`);
  });

  it("with --delete-sandboxes and nothing running, fails (exit 1) saying to start it first: nothing was deleted, its namespace stays claimed", async () => {
    const dir = newDataDir();
    writeSettings(dir, { containerdNamespace: "team-ns", containerdSocket: "/run/containerd/containerd.sock", cgroupRoot: "team-ns" });
    await assert.rejects(
      downPrinted({ dataDir: dir, deleteSandboxes: true }),
      (error: unknown) =>
        error instanceof FsbError &&
        !(error instanceof ValidationError) &&
        error.message ===
          `Fast Sandbox is not running for ${dir}: --delete-sandboxes deletes the sandboxes of a running one, then frees its containerd namespace; nothing was deleted. ` +
            `Start it with 'fsb up --detach --data-dir ${dir} --containerd-namespace team-ns' first, then run 'fsb down --delete-sandboxes --data-dir ${dir}'`,
    );
    // A directory whose `fsb up` never ran has no sandboxes and claims no namespace: nothing to do.
    const fresh = newDataDir();
    assert.equal((await downPrinted({ dataDir: fresh, deleteSandboxes: true })).stdout, `Fast Sandbox is not running for ${fresh}\n`);
  });

  it("stops the fsb up its lock names with SIGTERM and removes what it left", async () => {
    const dir = newDataDir();
    const script = join(dir, "fsb.js");
    writeFileSync(script, WAITS);
    const fsbUp = await running(script, "--data-dir", dir, "up");
    runFiles(dir, identity(fsbUp.pid));
    const output = await downOutput(dir);
    assert.equal(output, `Fast Sandbox stopped (pid ${fsbUp.pid})\n`);
    if (alive(fsbUp)) await once(fsbUp, "exit");
    assert.equal(fsbUp.exitCode, 143, "it exited on SIGTERM");
    assert.deepEqual(leftovers(dir), []);
  });

  it("with --delete-sandboxes, deletes the sandboxes of the instance it stops, not those of the one FSB_URL names", async () => {
    const own = await startFakeControlPlane({
      token: "own-token-0123456789",
      sandboxes: [fakeSandbox("mine"), fakeSandbox("also-mine", { namespace: "team" })],
    });
    const other = await startFakeControlPlane({ token: "other-token-0123456789", sandboxes: [fakeSandbox("theirs")] });
    const env = { FSB_URL: process.env.FSB_URL, FSB_TOKEN: process.env.FSB_TOKEN };
    try {
      const dir = newDataDir();
      const script = join(dir, "fsb.js");
      writeFileSync(script, WAITS);
      const fsbUp = await running(script, "--data-dir", dir, "up");
      runFiles(dir, identity(fsbUp.pid));
      writeFileSync(files.url(dir), `${own.url}\n`);
      writeFileSync(files.token(dir), "own-token-0123456789\n");
      // As a shell that exported them for another instance (the other commands then use it).
      process.env.FSB_URL = other.url;
      process.env.FSB_TOKEN = "other-token-0123456789";
      const { stdout, stderr } = await downPrinted({ dataDir: dir, deleteSandboxes: true });
      assert.deepEqual(other.calls, [], "the instance FSB_URL names was asked nothing");
      assert.deepEqual([...other.sandboxes.keys()], ["default/theirs"]);
      assert.deepEqual([...own.sandboxes.keys()], []);
      assert.deepEqual(own.calls.filter((call) => call.startsWith("DeleteSandbox")).sort(), ["DeleteSandbox default/mine", "DeleteSandbox team/also-mine"]);
      assert.match(stdout, /^deleted 2 sandboxes\nFast Sandbox stopped \(pid \d+\)\n$/);
      assert.match(
        stderr,
        new RegExp(`^note: FSB_URL ${other.url} is ignored: 'fsb down' deletes the sandboxes of the Fast Sandbox it stops, ${own.url} \\(`, "m"),
      );
    } finally {
      for (const [name, value] of Object.entries(env)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
      closeConnections();
      await Promise.all([own.close(), other.close()]);
    }
  });
});
