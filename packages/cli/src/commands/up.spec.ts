/**
 * What of `fsb up` runs without containerd: the data directory's lock that keeps a second `fsb up`
 * out, the signals that stop it, and its log surviving a terminal that is gone.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createServer, type AddressInfo } from "node:net";
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as realSleep } from "node:timers/promises";
import { after, afterEach, describe, it } from "node:test";
import { FsbError } from "@fast-sandbox/sdk";
import { files, processStartTime, type ProcessIdentity } from "../data-dir.js";
import { controlPlaneLogger, rotateOwnLog, runUntilStopSignalled, startFailure, up, whenStopSignalled, type UpOptions } from "./up.js";

const directory = mkdtempSync(join(tmpdir(), "fsb-up-spec-"));
after(() => rmSync(directory, { recursive: true, force: true }));

let children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  children = [];
});

function options(dataDir: string, detach: boolean): UpOptions {
  return {
    dataDir,
    detach,
    host: "127.0.0.1",
    port: "0",
    image: "fast-sandbox.io/base:latest",
    containerdNamespace: "fsb-up-spec",
    // Nothing is there: an `up` that got past its lock would fail (or hang) on containerd.
    containerdSocket: join(directory, "no-containerd.sock"),
    cgroupRoot: "",
    proxyHost: "127.0.0.1",
    proxyPort: "0",
    e2bPort: "0",
    janitor: false,
    janitorInterval: "10s",
    janitorProtection: "2m",
  };
}

/** A running process holding the lock of a new data directory, as a starting `fsb up` does (no url yet). */
async function lockedDataDir(): Promise<{ dataDir: string; holder: ProcessIdentity }> {
  const dataDir = mkdtempSync(join(directory, "data-"));
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  children.push(child);
  await once(child, "spawn");
  const pid = child.pid ?? assert.fail("spawned");
  const holder = { pid, startTime: processStartTime(pid) ?? assert.fail("runs") };
  writeFileSync(files.lock(dataDir), `${JSON.stringify(holder)}\n`);
  return { dataDir, holder };
}

describe("fsb up", () => {
  for (const detach of [false, true]) {
    it(
      `refuses to start${detach ? " with --detach" : ""} while another running process holds the data directory's lock, touching nothing`,
      { timeout: 30_000 },
      async () => {
        const { dataDir, holder } = await lockedDataDir();
        await assert.rejects(up(options(dataDir, detach)), (error: unknown) => {
          assert.ok(error instanceof FsbError);
          assert.equal(error.code, "failed_precondition");
          assert.equal(error.message, `Fast Sandbox already runs for ${dataDir} (pid ${holder.pid}, starting); stop it with 'fsb down' first`);
          return true;
        });
        assert.deepEqual(readdirSync(dataDir), ["lock"], "no token, settings or log: the directory is the other instance's");
      },
    );
  }
});

describe("fsb up --detach that does not start", () => {
  it("says why, from what its child wrote to the log: a port in use", { timeout: 90_000 }, async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    try {
      const port = (busy.address() as AddressInfo).port;
      const dataDir = mkdtempSync(join(directory, "data-"));
      await assert.rejects(up({ ...options(dataDir, true), port: String(port) }), (error: unknown) => {
        assert.ok(error instanceof FsbError, String(error));
        assert.equal(error.code, "unavailable");
        assert.match(
          error.message,
          new RegExp(`^Fast Sandbox did not start \\(exit code 1\\): port ${port} on 127\\.0\\.0\\.1, for the API, is in use by another program`),
        );
        assert.ok(error.message.endsWith(`; see ${files.log(dataDir)}`), error.message);
        return true;
      });
    } finally {
      busy.close();
    }
  });
});

describe("startFailure", () => {
  it("takes the child's last `error: …` line, else its last error or fatal log record's message, else nothing", () => {
    assert.equal(startFailure("starting\nerror: first\nerror: port 7070 is in use\n"), "port 7070 is in use");
    const record = (level: number, msg: string, err?: string) => JSON.stringify({ level, msg, ...(err ? { err: { message: err } } : {}) });
    assert.equal(
      startFailure([record(30, "starting"), record(60, "control plane failed to start", "connect ENOENT /run/containerd.sock"), record(30, "bye")].join("\n")),
      "control plane failed to start: connect ENOENT /run/containerd.sock",
    );
    assert.equal(startFailure([record(50, "cannot listen"), "{not json"].join("\n")), "cannot listen");
    assert.equal(startFailure([record(30, "starting"), record(40, "a warning")].join("\n")), undefined);
    assert.equal(startFailure(""), undefined);
  });
});

describe("whenStopSignalled", () => {
  it("stops at SIGHUP as at SIGTERM, ignores SIGTERM and SIGHUP while stopping, and leaves no listener behind", { timeout: 10_000 }, async () => {
    const counts = () => ["SIGINT", "SIGTERM", "SIGHUP"].map((signal) => process.listenerCount(signal));
    const before = counts();
    const received: NodeJS.Signals[] = [];
    let stopped = false;
    const stopping = whenStopSignalled(async (signal) => {
      received.push(signal);
      // Without a listener either would end this process.
      process.kill(process.pid, "SIGHUP");
      process.kill(process.pid, "SIGTERM");
      await new Promise((resolve) => setTimeout(resolve, 100));
      stopped = true;
    });
    process.kill(process.pid, "SIGHUP");
    await stopping;
    assert.deepEqual(received, ["SIGHUP"]);
    assert.ok(stopped);
    assert.deepEqual(counts(), before);
  });
});

describe("runUntilStopSignalled", () => {
  const counts = () => ["SIGINT", "SIGTERM", "SIGHUP"].map((signal) => process.listenerCount(signal));
  /** A service whose start the test finishes, and what happened to it. */
  function controlledService() {
    const events: string[] = [];
    let finishStart!: (outcome: { close(): Promise<void> } | Error) => void;
    const start = () =>
      new Promise<{ close(): Promise<void> }>((resolve, reject) => {
        events.push("start");
        finishStart = (outcome) => (outcome instanceof Error ? reject(outcome) : resolve(outcome));
      });
    const service = {
      close: async () => {
        events.push("close");
        await Promise.resolve();
      },
    };
    return { events, start, service, finish: (outcome: { close(): Promise<void> } | Error) => finishStart(outcome) };
  }

  it(
    "listens for the stop signals during the start: a SIGTERM then closes the service once it has started, and it never serves",
    { timeout: 10_000 },
    async () => {
      const before = counts();
      const { events, start, service, finish } = controlledService();
      const stopping: [NodeJS.Signals, boolean][] = [];
      const running = runUntilStopSignalled({
        start,
        started: () => events.push("started"),
        stopping: (signal, { starting }) => void stopping.push([signal, starting]),
      });
      // Else the SIGTERM below would end the test run, as it ended `fsb up` during its start.
      assert.ok(
        counts().every((count, i) => count > (before[i] ?? 0)),
        "SIGINT, SIGTERM and SIGHUP are listened for while starting",
      );
      process.kill(process.pid, "SIGTERM");
      for (let turn = 0; stopping.length === 0 && turn < 500; turn++) await realSleep(5);
      assert.deepEqual(stopping, [["SIGTERM", true]]);
      assert.deepEqual(events, ["start"], "nothing to close before the start ends");

      finish(service);
      await running;
      assert.deepEqual(events, ["start", "close"]);
      assert.deepEqual(counts(), before);
    },
  );

  it("serves what started until a stop signal, then closes it", { timeout: 10_000 }, async () => {
    const before = counts();
    const { events, start, service, finish } = controlledService();
    const running = runUntilStopSignalled({ start, started: () => events.push("started") });
    finish(service);
    for (let turn = 0; !events.includes("started") && turn < 500; turn++) await realSleep(5);
    assert.deepEqual(events, ["start", "started"]);
    process.kill(process.pid, "SIGINT");
    // A signal's listener keeps no event loop alive: wait for its delivery with a timer that does.
    for (let turn = 0; !events.includes("close") && turn < 500; turn++) await realSleep(5);
    await running;
    assert.deepEqual(events, ["start", "started", "close"]);
    assert.deepEqual(counts(), before);
  });

  it("rejects with the start's error and stops listening; closes a started service whose start-up step throws", async () => {
    const before = counts();
    const failing = controlledService();
    const failed = runUntilStopSignalled({ start: failing.start, started: () => assert.fail("did not start") });
    failing.finish(new Error("containerd is not there"));
    await assert.rejects(failed, /containerd is not there/);
    assert.deepEqual(counts(), before);

    const { events, start, service, finish } = controlledService();
    const announcing = runUntilStopSignalled({
      start,
      started: () => {
        throw new Error("ENOSPC: cannot write the url file");
      },
    });
    finish(service);
    await assert.rejects(announcing, /ENOSPC/);
    assert.deepEqual(events, ["start", "close"]);
    assert.deepEqual(counts(), before);
  });
});

describe("controlPlaneLogger", () => {
  it("drops the lines it cannot write (as on a terminal that hung up) instead of throwing", () => {
    const fd = openSync("/dev/full", "w");
    try {
      const logger = controlPlaneLogger(fd);
      assert.doesNotThrow(() => {
        logger.info("stopping agents");
        logger.warn("agent did not stop in time");
      });
    } finally {
      closeSync(fd);
    }
  });
});

describe("rotateOwnLog", () => {
  it("never runs two rotations of the log at once: a tick during a rotation does not copy the truncated log over the kept part", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fsb-up-own-log-"));
    const path = join(dir, "controlplane.log");
    const writer = openSync(path, "a");
    // A tick every millisecond: many fall within one rotation (a few file operations).
    const timer = rotateOwnLog(path, { maxBytes: 64, intervalMs: 1 });
    try {
      for (let round = 0; round < 20; round++) {
        writeFileSync(writer, "x".repeat(100));
        for (let waited = 0; !readdirSync(dir).includes("controlplane.log.1") && waited < 5_000; waited += 5) await realSleep(5);
        // The ticks that were due meanwhile have found the truncated log, under its limit.
        await realSleep(20);
        assert.match(readFileSync(`${path}.1`, "utf8"), /^x+$/, `round ${round}: the kept part was overwritten`);
        rmSync(`${path}.1`);
      }
    } finally {
      clearInterval(timer);
      closeSync(writer);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rotates a detached instance's log past its limit while its writer appends, keeping the previous part", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fsb-up-own-log-"));
    const path = join(dir, "controlplane.log");
    // As `fsb up --detach` hands it to its child: opened for appending.
    const writer = openSync(path, "a");
    const timer = rotateOwnLog(path, { maxBytes: 64, intervalMs: 10 });
    try {
      writeFileSync(writer, "x".repeat(100));
      for (let waited = 0; !readdirSync(dir).includes("controlplane.log.1") && waited < 5_000; waited += 10) await realSleep(10);
      // The previous part keeps the log's last bytes, at most maxBytes of them (log-rotation.ts).
      const kept = readFileSync(`${path}.1`, "utf8");
      assert.match(kept, /^x+$/);
      assert.ok(kept.length <= 64, `the kept part is ${kept.length} bytes, over the limit of 64`);
      writeFileSync(writer, "after\n");
      assert.equal(readFileSync(path, "utf8"), "after\n", "the writer goes on at the start of the truncated log");
    } finally {
      clearInterval(timer);
      closeSync(writer);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
