import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, describe, it } from "node:test";
import { acquireAgentInstanceLock, agentLockPath } from "./agent-instance-lock.js";
import { isRunning, processStartTime, type ProcessIdentity } from "./process-identity.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-agent-lock-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

let children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  children = [];
});

/** A running process (`sleep`) and its identity: a predecessor that does not exit by itself. */
async function runningProcess(): Promise<{ child: ChildProcess; identity: ProcessIdentity }> {
  const child = spawn("sleep", ["600"], { stdio: "ignore" });
  children.push(child);
  await once(child, "spawn");
  const pid = child.pid ?? assert.fail("spawned");
  return { child, identity: { pid, startTime: processStartTime(pid) ?? assert.fail("runs") } };
}

/** A new state directory whose lock names `holder`. */
function lockedStateDir(holder: ProcessIdentity): string {
  const stateDir = mkdtempSync(join(directory, "agent-"));
  writeFileSync(agentLockPath(stateDir), `${JSON.stringify(holder)}\n`);
  return stateDir;
}

const lockHolder = (stateDir: string): ProcessIdentity => JSON.parse(readFileSync(agentLockPath(stateDir), "utf8")) as ProcessIdentity;
const self = (): ProcessIdentity => ({ pid: process.pid, startTime: processStartTime(process.pid) ?? assert.fail("/proc is readable") });
const neverWaits = (): Promise<void> => assert.fail("nothing to wait for");

describe("acquireAgentInstanceLock", () => {
  it("takes a free lock naming this process by pid and start time; release() removes it and leaves nothing else", async () => {
    const stateDir = join(directory, "fresh", "agent-0");
    const lock = await acquireAgentInstanceLock(stateDir, { sleep: neverWaits });
    assert.deepEqual(lock.holder, self());
    assert.deepEqual(lockHolder(stateDir), self());
    assert.deepEqual(readdirSync(stateDir), ["agent.lock"]);
    lock.release();
    assert.deepEqual(readdirSync(stateDir), []);
  });

  it("release() leaves a lock that another process has taken since", async () => {
    const stateDir = mkdtempSync(join(directory, "agent-"));
    const lock = await acquireAgentInstanceLock(stateDir, { sleep: neverWaits });
    const { identity } = await runningProcess();
    writeFileSync(agentLockPath(stateDir), `${JSON.stringify(identity)}\n`);
    lock.release();
    assert.deepEqual(lockHolder(stateDir), identity);
  });

  it("takes over at once the lock of a process that is gone, and of a pid that now runs another process, signalling nobody", async () => {
    const { child, identity } = await runningProcess();
    child.kill("SIGTERM");
    await once(child, "exit");
    const gone = lockedStateDir(identity);
    assert.deepEqual((await acquireAgentInstanceLock(gone, { sleep: neverWaits })).holder, self());
    assert.deepEqual(lockHolder(gone), self());

    const other = await runningProcess();
    const reusedPid = lockedStateDir({ pid: other.identity.pid, startTime: other.identity.startTime - 1 });
    await acquireAgentInstanceLock(reusedPid, { sleep: neverWaits });
    assert.deepEqual(lockHolder(reusedPid), self());
    assert.ok(isRunning(other.identity), "the process that reuses the pid is left alone");
  });

  it("waits for a running predecessor and takes the lock once it has exited, without signalling it", async () => {
    const { child, identity } = await runningProcess();
    const stateDir = lockedStateDir(identity);
    let waits = 0;
    const lock = await acquireAgentInstanceLock(stateDir, {
      now: () => 0,
      sleep: async () => {
        waits += 1;
        assert.deepEqual(lockHolder(stateDir), identity, "the predecessor's lock is left in place while it runs");
        // The predecessor finishes its drain and exits, on its own (this test's signal stands for that).
        if (waits === 3) {
          child.kill("SIGTERM");
          await once(child, "exit");
        }
      },
    });
    assert.equal(waits, 3);
    assert.equal(child.signalCode, "SIGTERM", "ended by its own stop, not by SIGKILL");
    assert.deepEqual(lock.holder, self());
    assert.deepEqual(lockHolder(stateDir), self());
  });

  it("ends with SIGKILL a predecessor that still runs predecessorTimeoutMs later, then takes the lock", async () => {
    const { child, identity } = await runningProcess();
    const stateDir = lockedStateDir(identity);
    let nowMs = 0;
    let exitedAtMs: number | undefined;
    child.once("exit", () => (exitedAtMs = nowMs));
    const lock = await acquireAgentInstanceLock(stateDir, {
      predecessorTimeoutMs: 20_000,
      pollIntervalMs: 100,
      // No bound on the kill itself: how soon the kernel ends a process is not what this test is about.
      killTimeoutMs: Number.MAX_SAFE_INTEGER,
      now: () => nowMs,
      sleep: async (ms) => {
        nowMs += ms;
        await new Promise((resolve) => setImmediate(resolve));
      },
    });
    if (child.exitCode === null && child.signalCode === null) await once(child, "exit");
    assert.equal(child.signalCode, "SIGKILL");
    assert.ok(exitedAtMs === undefined || exitedAtMs >= 20_000, `not killed before predecessorTimeoutMs (at ${exitedAtMs} ms)`);
    assert.ok(nowMs >= 20_000, "waited predecessorTimeoutMs on the clock");
    assert.deepEqual(lock.holder, self());
    assert.deepEqual(lockHolder(stateDir), self());
  });
});
