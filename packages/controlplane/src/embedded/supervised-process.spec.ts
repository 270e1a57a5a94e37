import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { setTimeout as realSleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, it } from "node:test";
import { FakeClock } from "../controller/clock.js";
import { SupervisedProcess, type SupervisedExit, type SupervisedProcessOptions } from "./supervised-process.js";

/** Real node child processes running `script`; time between runs is the FakeClock's. */
describe("SupervisedProcess", () => {
  let clock: FakeClock;
  let children: ChildProcess[];
  let exits: SupervisedExit[];
  let supervisor: SupervisedProcess | undefined;

  beforeEach(() => {
    clock = new FakeClock();
    children = [];
    exits = [];
    supervisor = undefined;
  });

  afterEach(async () => {
    const stopping = supervisor?.stop();
    clock.advance(60_000);
    await stopping;
  });

  function supervise(script: string, options: Partial<SupervisedProcessOptions> = {}): SupervisedProcess {
    supervisor = new SupervisedProcess({
      spawn: () => {
        const child = spawn(process.execPath, ["-e", script], { stdio: ["pipe", "pipe", "inherit"] });
        children.push(child);
        return child;
      },
      onExit: (exit) => exits.push(exit),
      restartDelayMs: 100,
      maxRestartDelayMs: 500,
      stableRunMs: 1000,
      stopGraceMs: 2000,
      clock,
      ...options,
    });
    supervisor.start();
    return supervisor;
  }

  /** Resolves once the run has exited and the supervisor has seen it (its listener was added first). */
  const exitOf = async (child: ChildProcess | undefined): Promise<void> => {
    assert.ok(child, "the process was spawned");
    if (child.exitCode === null && child.signalCode === null) await once(child, "exit");
  };
  const lastChild = () => children.at(-1);
  const alive = (child: ChildProcess | undefined) => child !== undefined && child.exitCode === null && child.signalCode === null;

  /** Resolves at the first line of the child's stdout that equals `text`. */
  const line = (child: ChildProcess | undefined, text: string): Promise<void> =>
    new Promise((resolve, reject) => {
      assert.ok(child?.stdout, "the process was spawned with a stdout pipe");
      const lines = createInterface({ input: child.stdout });
      lines.on("line", (read) => {
        if (read !== text) return;
        lines.close();
        resolve();
      });
      child.once("exit", () => reject(new Error(`exited before it printed ${text}`)));
    });

  it("restarts a process that crashed once restartDelayMs has passed on the clock, not before", async () => {
    const supervised = supervise("process.exit(3)");
    const first = lastChild();
    await exitOf(first);
    assert.deepEqual(exits, [{ code: 3, signal: null, reason: "code 3", ranMs: 0, restartInMs: 100 }]);
    assert.equal(supervised.pid, undefined);

    clock.advance(99);
    assert.equal(children.length, 1);
    clock.advance(1);
    assert.equal(children.length, 2);
    assert.notEqual(lastChild()?.pid, first?.pid);
  });

  it("doubles the delay with each restart in a row up to maxRestartDelayMs, and starts over after resetBackoff()", async () => {
    const supervised = supervise("process.exit(1)");
    for (let run = 0; run < 6; run++) {
      await exitOf(lastChild());
      clock.advance(exits.at(-1)?.restartInMs ?? assert.fail("no restart scheduled"));
    }
    assert.deepEqual(
      exits.map((exit) => exit.restartInMs),
      [100, 200, 400, 500, 500, 500],
    );
    assert.equal(children.length, 7);
    assert.equal(supervised.restarts, 6);

    await exitOf(lastChild());
    supervised.resetBackoff();
    clock.advance(500);
    await exitOf(lastChild());
    assert.equal(exits.at(-1)?.restartInMs, 100);
  });

  it("starts over from restartDelayMs after a run of stableRunMs, and restarts a process killed from outside", async () => {
    const supervised = supervise("setInterval(() => {}, 1000)");
    supervised.kill();
    await exitOf(lastChild());
    clock.advance(100);
    supervised.kill("SIGTERM");
    await exitOf(lastChild());
    assert.deepEqual(
      exits.map((exit) => [exit.reason, exit.restartInMs]),
      [
        ["SIGKILL", 100],
        ["SIGTERM", 200],
      ],
    );

    clock.advance(200);
    assert.ok(alive(lastChild()));
    assert.equal(supervised.pid, lastChild()?.pid);
    clock.advance(1000);
    supervised.kill();
    await exitOf(lastChild());
    assert.equal(exits.at(-1)?.ranMs, 1000);
    assert.equal(exits.at(-1)?.restartInMs, 100, "a stable run resets the back-off");
  });

  it("stop() ends a process with SIGTERM and never restarts it", async () => {
    const supervised = supervise("setInterval(() => {}, 1000)");
    await supervised.stop();
    assert.deepEqual(
      exits.map((exit) => [exit.signal, exit.restartInMs]),
      [["SIGTERM", undefined]],
    );
    clock.advance(60_000);
    assert.equal(children.length, 1);
    assert.equal(clock.pendingTimers, 0, "the SIGKILL escalation was cancelled");
  });

  it("stop() sends SIGKILL to a process that ignores SIGTERM once stopGraceMs has passed on the clock", async () => {
    const supervised = supervise('process.on("SIGTERM", () => console.log("ignoring SIGTERM")); console.log("ready"); setInterval(() => {}, 1000)');
    const child = lastChild();
    await line(child, "ready");
    const ignored = line(child, "ignoring SIGTERM");
    const stopped = supervised.stop();
    await ignored;
    clock.advance(1999);
    await realSleep(100);
    assert.ok(alive(child), "still running within the grace period");

    clock.advance(1);
    await stopped;
    assert.equal(child?.signalCode, "SIGKILL");
    assert.deepEqual(
      exits.map((exit) => [exit.signal, exit.restartInMs]),
      [["SIGKILL", undefined]],
    );
  });

  it("stop() while a restart is pending cancels the restart", async () => {
    const supervised = supervise("process.exit(1)");
    await exitOf(lastChild());
    assert.equal(clock.pendingTimers, 1);
    await supervised.stop();
    clock.advance(60_000);
    assert.equal(children.length, 1);
    assert.equal(clock.pendingTimers, 0);
  });

  it("start() of a running process spawns no second one; start() after stop() supervises again", async () => {
    const supervised = supervise("setInterval(() => {}, 1000)");
    supervised.start();
    assert.equal(children.length, 1);
    await supervised.stop();
    supervised.start();
    assert.equal(children.length, 2);
    supervised.kill();
    await exitOf(lastChild());
    assert.equal(exits.at(-1)?.restartInMs, 100);
    clock.advance(100);
    assert.equal(children.length, 3);
  });
});
