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

  it('with stableRunFrom "healthy", keeps doubling the delay for a process that is marked healthy and crashes soon after, and starts over once it stayed healthy stableRunMs', async () => {
    const supervised = supervise("setInterval(() => {}, 1000)", { stableRunFrom: "healthy" });
    // Answers at once and crashes 999 ms later, three times: a long run before the mark counts for nothing.
    for (const beforeMarkMs of [0, 5000, 0]) {
      clock.advance(beforeMarkMs);
      supervised.markHealthy();
      clock.advance(999);
      supervised.markHealthy(); // a later mark does not move the first one
      supervised.kill();
      await exitOf(lastChild());
      clock.advance(exits.at(-1)?.restartInMs ?? assert.fail("no restart scheduled"));
    }
    assert.deepEqual(
      exits.map((exit) => exit.restartInMs),
      [100, 200, 400],
    );

    // Never marked: not stable, however long it ran.
    clock.advance(5000);
    supervised.kill();
    await exitOf(lastChild());
    assert.equal(exits.at(-1)?.restartInMs, 500);
    clock.advance(500);

    supervised.markHealthy();
    clock.advance(1000);
    supervised.kill();
    await exitOf(lastChild());
    assert.equal(exits.at(-1)?.restartInMs, 100, "healthy for stableRunMs: the back-off starts over");
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

  it("holdRestarts() cancels a pending restart and restarts no process that exits later; stop() still ends the one that runs", async () => {
    const crashing = supervise("process.exit(1)");
    await exitOf(lastChild());
    crashing.holdRestarts();
    assert.equal(clock.pendingTimers, 0, "the pending restart is cancelled");
    clock.advance(60_000);
    assert.equal(children.length, 1);
    await crashing.stop();

    // A process that runs on while restarts are held: when it dies, it stays gone.
    children = [];
    exits = [];
    const running = supervise("process.stdin.resume(); console.log('up')");
    await line(lastChild(), "up");
    running.holdRestarts();
    assert.equal(running.pid, lastChild()?.pid, "the running process runs on");
    running.kill("SIGKILL");
    await exitOf(lastChild());
    assert.deepEqual(exits, [{ code: null, signal: "SIGKILL", reason: "SIGKILL", ranMs: 0, restartInMs: undefined }]);
    clock.advance(60_000);
    assert.equal(children.length, 1, "no restart");
    await running.stop();
  });

  /** A spawn of a program that does not exist: Node reports ENOENT as an 'error' event and never an 'exit'. */
  const spawnMissingProgram = (): ChildProcess => {
    const child = spawn("/nonexistent/fsb-supervised-process-spec", [], { stdio: ["pipe", "pipe", "pipe"] });
    children.push(child);
    return child;
  };
  /** Resolves once the supervisor has reported `count` exits. */
  const exitsReported = async (count: number): Promise<void> => {
    for (let turn = 0; exits.length < count && turn < 1000; turn++) await realSleep(5);
    assert.equal(exits.length, count, "the supervisor reported the exits");
  };

  it("counts a spawn that fails with ENOENT as a run that ended and restarts it with the back-off", async () => {
    const supervised = supervise("", { spawn: spawnMissingProgram });
    await exitsReported(1);
    assert.equal(exits[0]?.restartInMs, 100);
    assert.match(exits[0]?.reason ?? "", /^spawn failed: .*ENOENT/);
    assert.equal(exits[0]?.error?.message.includes("ENOENT"), true);
    assert.equal(supervised.pid, undefined);

    clock.advance(100);
    assert.equal(children.length, 2, "spawned again once restartDelayMs passed");
    await exitsReported(2);
    assert.equal(exits[1]?.restartInMs, 200, "the back-off doubles as for any crash");
  });

  it("counts a throw of spawn() as a failed run, also when the restart timer runs it, and keeps restarting", async () => {
    let calls = 0;
    const spawnSometimes = (): ChildProcess => {
      calls += 1;
      if (calls === 1 || calls === 3) throw new Error(`EACCES: permission denied, mkdir (call ${calls})`);
      const child = spawn(process.execPath, ["-e", "process.exit(1)"], { stdio: ["pipe", "pipe", "inherit"] });
      children.push(child);
      return child;
    };
    supervise("", { spawn: spawnSometimes });
    await exitsReported(1);
    assert.equal(exits[0]?.reason, "spawn failed: EACCES: permission denied, mkdir (call 1)");
    clock.advance(100);
    assert.equal(children.length, 1);
    await exitOf(lastChild());
    await exitsReported(2);
    assert.doesNotThrow(() => clock.advance(200), "the restart timer's spawn threw and was caught");
    await exitsReported(3);
    assert.equal(exits[2]?.reason, "spawn failed: EACCES: permission denied, mkdir (call 3)");
    clock.advance(400);
    assert.equal(calls, 4);
    assert.equal(children.length, 2);
  });

  it("stop() resolves when the spawn failed and no process is alive, and restarts nothing", { timeout: 10_000 }, async () => {
    // The owner listens to 'error' too, so what is tested is that stop() waits for the run to end, not for an 'exit'.
    const supervised = supervise("", { spawn: () => spawnMissingProgram().on("error", () => undefined) });
    await supervised.stop();
    assert.deepEqual(
      exits.map((exit) => [exit.code, exit.restartInMs]),
      [[null, undefined]],
    );
    clock.advance(60_000);
    assert.equal(children.length, 1);
    assert.equal(clock.pendingTimers, 0);
  });

  it("a pipe of the process that fails (EPIPE on a stdin it closed) neither crashes the supervisor nor ends the run", async () => {
    const supervised = supervise('require("node:fs").closeSync(0); console.log("ready"); setInterval(() => {}, 1000)');
    const child = lastChild();
    await line(child, "ready");
    child?.stdin?.write("x".repeat(1 << 20));
    // No listener of the test's own: the supervisor's must be the one that catches the EPIPE.
    for (let turn = 0; !child?.stdin?.errored && turn < 400; turn++) await realSleep(5);
    assert.equal((child?.stdin?.errored as NodeJS.ErrnoException | null)?.code, "EPIPE");
    assert.ok(alive(child));
    assert.equal(exits.length, 0);
    await supervised.stop();
    assert.deepEqual(
      exits.map((exit) => [exit.signal, exit.restartInMs]),
      [["SIGTERM", undefined]],
    );
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
