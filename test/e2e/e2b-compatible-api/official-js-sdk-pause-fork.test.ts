/**
 * E2B's official JS SDK pauses, resumes and forks sandboxes of a gVisor template on the real
 * containerd and runsc, with nothing but the three variables `fsb e2b env` prints:
 * - `pause()` saves the sandbox (true, then false: already paused); it shows as paused (getInfo, the
 *   list's state filter) and nothing of it runs; the proxy answers its daemon's port with E2B's 409;
 * - `Sandbox.connect()` resumes it under the same id: a file written before the pause is there, and
 *   a process started before it runs on with its memory (same pid, its counter going on from where
 *   it was), its end now + timeout; it pauses and resumes again (`sandbox.connect()`);
 * - `fork({count: 2})` gives two running sandboxes of their own (ids, files) from the source's state;
 * - pausing a sandbox of a runc template is refused, saying it needs a gVisor template;
 * - a paused sandbox stays paused across a restart of the control plane (the store knows it), and
 *   resumes after it;
 * - killing a paused sandbox removes its checkpoint; nothing is left behind.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Sandbox, SandboxError } from "e2b";
import { useFsbE2bEnv } from "../../support/e2b-env.js";
import { containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

/** Counts in /tmp/counter five times a second: its value lives in the shell's memory. */
const COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done";

describe("E2B's official JS SDK pauses, resumes and forks gVisor sandboxes", () => {
  let embedded: EmbeddedCase;
  let restore: () => void = () => undefined;
  const checkpointFiles = () => {
    const dir = join(embedded.dataDir, "checkpoints", "default", "gvisor");
    return existsSync(dir) ? readdirSync(dir) : [];
  };
  const counter = async (sandbox: Sandbox) => Number((await sandbox.files.read("/tmp/counter")).trim());

  before(async () => {
    embedded = await startEmbedded({
      name: "e2b-js-pause",
      pools: [pool("default", { maxSandboxesPerPod: 4 }), pool("gvisor", { maxSandboxesPerPod: 6, runtimeType: "gvisor" })],
    });
    restore = await useFsbE2bEnv(embedded);
  });

  after(async () => {
    restore();
    await embedded.stop();
  });

  it("pauses a sandbox and resumes it with connect: its files and a running process's memory come back, under the same id", async (t) => {
    const sandbox = await Sandbox.create("gvisor", { timeoutMs: 300_000, metadata: { step: "pause" } });
    await sandbox.files.write("/root/kept.txt", "written before the pause");
    const job = await sandbox.commands.run(COUNTER, { background: true });
    const pid = job.pid;
    await job.disconnect();
    await waitFor(async () => (await counter(sandbox).catch(() => 0)) >= 5, 20_000, "the counter");

    const pausedFrom = Date.now();
    let started = performance.now();
    assert.equal(await sandbox.pause(), true);
    const pauseMs = performance.now() - started;
    const pausedBy = Date.now();
    assert.equal(await sandbox.pause(), false, "already paused");
    const info = await sandbox.getInfo();
    assert.equal(info.state, "paused");
    // A paused sandbox's end is its pause: written (in milliseconds, on this machine's clock) while pause() ran.
    assert.ok(
      pausedFrom <= info.endAt.getTime() && info.endAt.getTime() <= pausedBy,
      `a paused sandbox's end is its pause: ${info.endAt.toISOString()} in ${new Date(pausedFrom).toISOString()}..${new Date(pausedBy).toISOString()}`,
    );
    const paused = await Sandbox.list({ query: { metadata: { step: "pause" }, state: ["paused"] } }).nextItems();
    assert.deepEqual(
      paused.map((item) => item.sandboxId),
      [sandbox.sandboxId],
    );
    assert.deepEqual(await Sandbox.list({ query: { metadata: { step: "pause" }, state: ["running"] } }).nextItems(), []);
    assert.equal(checkpointFiles().length, 1, "its checkpoint is on the node");
    const stored = (await embedded.client.sandboxes.list()).find((s) => s.status?.sandboxID === sandbox.sandboxId);
    assert.equal(stored?.status?.phase, "Paused");
    assert.equal(stored?.status?.assignedPod, undefined, "no agent runs it");
    assert.ok(!containerdLeftovers(embedded.containerdNamespace).tasks.includes(sandbox.sandboxId), "no task of it runs");
    // Its daemon's port, through the sandbox proxy with its token: E2B's answer for a paused sandbox.
    const detail = await fetch(`${process.env.E2B_API_URL ?? ""}/sandboxes/${sandbox.sandboxId}`, { headers: { "X-API-KEY": process.env.E2B_API_KEY ?? "" } });
    const { envdAccessToken } = (await detail.json()) as { envdAccessToken: string };
    const proxied = await fetch(`${process.env.E2B_SANDBOX_URL ?? ""}/health`, {
      headers: { "E2b-Sandbox-Id": sandbox.sandboxId, "E2b-Sandbox-Port": "49983", "X-Access-Token": envdAccessToken },
    });
    assert.equal(proxied.status, 409);
    assert.equal(((await proxied.json()) as { message: string }).message, "The sandbox is paused");
    // A command (a Connect stream): the proxy's words reach the SDK's error, not "[unknown] HTTP 409".
    await assert.rejects(sandbox.commands.run("echo hi"), (error: Error) => {
      assert.match(error.message, /\[failed_precondition\] The sandbox is paused/);
      return true;
    });
    await assert.rejects(
      embedded.client.sandboxes.exec(stored?.metadata.name ?? "", ["cat", "/tmp/counter"]),
      /phase Paused/,
      "nothing to exec in while paused",
    );

    started = performance.now();
    const resumedAfter = Date.now();
    const resumed = await Sandbox.connect(sandbox.sandboxId, { timeoutMs: 120_000 });
    const resumedBy = Date.now();
    t.diagnostic(`pause() ${Math.round(pauseMs)} ms, connect() of the paused sandbox ${Math.round(performance.now() - started)} ms`);
    assert.equal(resumed.sandboxId, sandbox.sandboxId);
    assert.equal(await resumed.isRunning(), true);
    assert.equal(await resumed.files.read("/root/kept.txt"), "written before the pause");
    const first = await counter(resumed);
    assert.ok(first >= 5, `the counter goes on from where it was (${first}), it did not start again`);
    await waitFor(async () => (await counter(resumed)) > first, 10_000, "the counter counting on");
    const processes = await resumed.commands.list();
    assert.ok(
      processes.some((process) => process.pid === pid),
      `the same process (pid ${pid}) runs on: ${JSON.stringify(processes.map((p) => p.pid))}`,
    );
    const after = await resumed.getInfo();
    assert.equal(after.state, "running");
    // Its end is the connect's timeout from the server's clock while the connect ran.
    assert.ok(
      resumedAfter + 120_000 <= after.endAt.getTime() && after.endAt.getTime() <= resumedBy + 120_000,
      `its end is the connect's timeout on: ${after.endAt.toISOString()}, connect ${new Date(resumedAfter).toISOString()}..${new Date(resumedBy).toISOString()}`,
    );
    // As E2B's: a resumed sandbox started anew; while paused it showed its first start.
    assert.ok(
      after.startedAt.getTime() >= resumedAfter,
      `started at its resume: ${after.startedAt.toISOString()}, resumed after ${new Date(resumedAfter).toISOString()}`,
    );
    assert.ok(info.startedAt.getTime() < resumedAfter, "its start while paused was its create");
    assert.equal(checkpointFiles().length, 0, "the checkpoint is gone once it runs");
    // The handle from before the pause works on too: same id, same token.
    assert.equal(await sandbox.files.read("/root/kept.txt"), "written before the pause");

    // Again: a resumed sandbox pauses and resumes like any other (its handle's own connect resumes it).
    await resumed.files.write("/root/second.txt", "written before the second pause");
    assert.equal(await resumed.pause(), true);
    await resumed.connect({ timeoutMs: 60_000 });
    assert.equal(await resumed.files.read("/root/second.txt"), "written before the second pause");
    assert.equal(await resumed.files.read("/root/kept.txt"), "written before the pause");

    assert.equal(await resumed.kill(), true);
  });

  it("forks a running sandbox into copies of its own, from its state, while it runs on", async () => {
    const source = await Sandbox.create("gvisor", { timeoutMs: 300_000 });
    await source.files.write("/root/state.txt", "source state");
    const forks = await source.fork({ count: 2, timeoutMs: 120_000 });
    assert.equal(forks.length, 2);
    const copies = forks.map((fork) => (fork instanceof Sandbox ? fork : assert.fail(`a fork failed: ${String(fork)}`)));
    assert.equal(new Set([source.sandboxId, ...copies.map((copy) => copy.sandboxId)]).size, 3, "three sandbox ids");
    const [a, b] = copies;
    assert.ok(a && b);
    for (const copy of copies) {
      assert.equal(await copy.files.read("/root/state.txt"), "source state");
      assert.equal((await copy.getInfo()).state, "running");
    }
    // Nothing writable is shared.
    await a.files.write("/root/state.txt", "a's own");
    assert.equal(await b.files.read("/root/state.txt"), "source state");
    assert.equal(await source.files.read("/root/state.txt"), "source state");
    assert.equal((await a.commands.run("hostname")).stdout.trim() !== (await b.commands.run("hostname")).stdout.trim(), true, "hostnames of their own");
    assert.equal(checkpointFiles().length, 0, "the fork's checkpoint is deleted");
    for (const sandbox of [source, a, b]) assert.equal(await sandbox.kill(), true);
  });

  it("refuses to pause a sandbox of a runc template, saying it needs a gVisor template", async () => {
    const sandbox = await Sandbox.create({ timeoutMs: 60_000 });
    await assert.rejects(sandbox.pause(), (error: unknown) => {
      assert.ok(error instanceof SandboxError, String(error));
      assert.match(error.message, /cannot be paused: its template "base" is pool default\/default, whose runtimeType is container.*runtimeType gvisor/);
      return true;
    });
    assert.equal((await sandbox.getInfo()).state, "running");
    assert.equal(await sandbox.kill(), true);
  });

  it("keeps a paused sandbox paused across a restart of the control plane, and resumes it after", async () => {
    const sandbox = await Sandbox.create("gvisor", { timeoutMs: 120_000 });
    await sandbox.files.write("/root/kept.txt", "before the restart");
    assert.equal(await sandbox.pause(), true);
    restore();
    await embedded.restart();
    // The API and proxy ports are new after a restart: the SDK is pointed at them again.
    restore = await useFsbE2bEnv(embedded);
    assert.equal((await Sandbox.getInfo(sandbox.sandboxId)).state, "paused");
    const resumed = await Sandbox.connect(sandbox.sandboxId, { timeoutMs: 60_000 });
    assert.equal(await resumed.files.read("/root/kept.txt"), "before the restart");
    assert.equal(await resumed.kill(), true);
    assert.equal(checkpointFiles().length, 0);
  });

  it("kills a paused sandbox with its checkpoint, and leaves nothing behind", async () => {
    const sandbox = await Sandbox.create("gvisor", { timeoutMs: 60_000 });
    assert.equal(await sandbox.pause(), true);
    assert.equal(checkpointFiles().length, 1);
    assert.equal(await Sandbox.kill(sandbox.sandboxId), true);
    assert.equal(checkpointFiles().length, 0);
    assert.deepEqual(await embedded.client.sandboxes.list({ namespace: "*" }), []);
    assert.deepEqual(
      containerdLeftovers(embedded.containerdNamespace).containers.filter((id) => !id.startsWith("fsb-anchor")),
      [],
    );
  });
});
