/**
 * Checkpoint, restore and fork of gVisor sandboxes on the real containerd and runsc, through the
 * public API of an embedded Fast Sandbox (Isolated network, the in-sandbox daemon running):
 * - a copy restored from a checkpoint runs on from the checkpointed state (a file written before,
 *   a counter that goes on counting), while the checkpointed sandbox runs on too;
 * - each copy has its own identity (sandbox id, address, hostname, its daemon serving on its own
 *   address) and sees none of its siblings' writes, nor what the source wrote after the checkpoint;
 * - a fork of 3 gives 3 running copies and leaves no checkpoint behind;
 * - a pool that keeps copies of its checkpoint restored ahead hands them to restores: each copy
 *   runs on from the checkpoint with its own id, address and hostname, sees none of its siblings'
 *   writes, and deleting the pool leaves none of them behind;
 * - `fsb pause` saves a sandbox and removes its instance (phase Paused, no end); `fsb resume` runs
 *   it on where it was (its files, its process counting on) under the same name, id and hostname;
 * - a checkpoint whose save fails after runsc stopped the sandbox (a fault on the host) leaves the
 *   sandbox running on from where it was, and no checkpoint;
 * - what is refused says why (runc sandboxes, unknown checkpoints, a command with a restore);
 * - deleting the sandboxes and the checkpoints, then the pool, leaves no container, task,
 *   snapshot or checkpoint file.
 * Run once per runsc (the `*.test.ts` files beside this one): Debian 12's, whose copies get their
 * hostname and daemon back by an exec, and a current one, which gives a copy the hostname of its
 * spec itself and whose copies' daemons resume on it; the agent's log says which way each went.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, watch, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AlreadyExistsError, FailedPreconditionError, NotFoundError, ValidationError } from "@fast-sandbox/sdk";
import { REPO_ROOT, ctr } from "../../support/containerd.js";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

/** Counts in /tmp/counter ten times a second, after writing /root/state: all of it in the sandbox's memory. */
const COUNTER = "echo before > /root/state; i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done";

export interface RunscVariant {
  /** Which runsc, for the suite's title. */
  label: string;
  /** The runsc binary the agents run (FSB_RUNSC_PATH); absent: the agents' default, Debian 12's. */
  runscPath?: () => string;
  /** How the agent gives a copy restored on demand its identity (`identityBy` in its log). */
  copyIdentityBy: "exec" | "hostname";
  /** How a sandbox restored in place (after its checkpoint) gets its daemon back (`resumedBy`). */
  inPlaceResumedBy: "exec" | "signal";
  /**
   * What a checkpoint of a sandbox with a TCP connection in TIME-WAIT does: Debian 12's runsc refuses
   * it and stops the sandbox as it refuses; a current one saves it.
   */
  tcpTimeWait: "refused, the sandbox stopped" | "saved";
}

/** What the agent of pool `pool` logged with message `msg`, parsed. */
function agentLog(embedded: EmbeddedCase, pool: string, msg: string): Record<string, unknown>[] {
  return readFileSync(join(embedded.dataDir, "agents", `${pool}-0`, "agent.log"), "utf8")
    .split("\n")
    .filter((line) => line.includes(`"msg":"${msg}"`))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

export function checkpointRestoreForkSuite(runsc: RunscVariant): void {
  describe(`gVisor sandboxes are checkpointed, restored and forked with their state, each copy on its own (${runsc.label})`, () => {
    let embedded: EmbeddedCase;
    const checkpointDir = () => join(embedded.dataDir, "checkpoints", "default", "gv");

    before(async () => {
      // The agents the embedded control plane starts inherit this process's environment.
      if (runsc.runscPath) process.env.FSB_RUNSC_PATH = runsc.runscPath();
      else delete process.env.FSB_RUNSC_PATH;
      embedded = await startEmbedded({
        name: "gvisor-ckpt",
        // runsc checkpoints and restores keep containerd and both cores busy: an agent's status may take
        // longer than the tests' usual 0.5 s, and three missed heartbeats would replace the agent.
        heartbeatIntervalMs: 2_000,
        pools: [
          pool("gv", { maxSandboxesPerPod: 8, runtimeType: "gvisor" }),
          pool("gv-shared", { maxSandboxesPerPod: 2, runtimeType: "gvisor", network: { mode: "Shared" } }),
          pool("plain", { maxSandboxesPerPod: 1, preparedInstances: 0 }),
          // Keeps 2 copies of its checkpoint "golden" restored ahead, once the checkpoint exists.
          pool("gv-ahead", { maxSandboxesPerPod: 6, runtimeType: "gvisor", preparedInstances: 2, preparedFromCheckpoint: "golden" }),
        ],
      });
    });

    after(async () => {
      await embedded?.stop();
    });

    const sh = async (name: string, script: string) => {
      const result = await embedded.client.sandboxes.exec(name, ["sh", "-c", script]);
      assert.equal(result.exitCode, 0, `${script} in ${name}: ${result.stderr}`);
      return result.stdout.trim();
    };
    // The loop rewrites the file (truncate, then write): a read in between finds it empty, so read again.
    const counter = async (name: string) =>
      Number(await sh(name, 'for try in 1 2 3 4 5 6 7 8 9 10; do c=$(cat /tmp/counter); [ -n "$c" ] && break; sleep 0.02; done; echo "$c"'));
    const daemonAnswers = async (address: string) => (await fetch(`http://${address}:49983/health`)).status === 204;

    it("restores copies that run on from the checkpointed state, with identities of their own and nothing shared", async () => {
      const { client } = embedded;
      const source = await client.sandboxes.create({ name: "source", pool: "gv", image: BASE_IMAGE, command: ["sh", "-c", COUNTER] });
      await waitFor(async () => (await sh("source", "cat /tmp/counter 2>/dev/null || echo 0").then(Number)) >= 5, 20_000, "the source's counter");

      const checkpoint = await client.checkpoints.create("source", { name: "ck1" });
      assert.equal(checkpoint.name, "ck1");
      assert.equal(checkpoint.sandbox, "source");
      assert.equal(checkpoint.pool, "gv");
      assert.ok(checkpoint.sizeBytes > 0);
      const atCheckpoint = await counter("source");
      // The source runs on under its id and address, from where it was.
      const sourceNow = await client.sandboxes.get("source");
      assert.equal(sourceNow.status?.phase, "Running");
      assert.equal(sourceNow.status?.sandboxID, source.status?.sandboxID);
      assert.equal(sourceNow.status?.sandboxIP, source.status?.sandboxIP);
      assert.equal(await sh("source", "cat /root/state"), "before");
      await waitFor(async () => (await counter("source")) > atCheckpoint, 10_000, "the source counting on");
      // Restored in place in its own network namespace, where runsc had taken the address for itself.
      assert.ok(sourceNow.status?.sandboxIP && (await daemonAnswers(sourceNow.status.sandboxIP)), "the source's daemon serves on its address");
      assert.ok(!sourceNow.status?.conditions?.some((c) => c.type === "CommandExited"), "the checkpoint is not taken for the command's exit");
      // Written after the checkpoint: no copy may see it.
      await sh("source", "echo after > /root/state");

      // A copy counts from when runsc restored it, some time before its restore answered (the other
      // copy's restore, a busy machine): the bound below is taken from before both were asked for.
      const restoresSentAt = Date.now();
      const [a, b] = await Promise.all([client.checkpoints.restore("ck1", { name: "copy-a" }), client.checkpoints.restore("ck1", { name: "copy-b" })]);
      for (const copy of [a, b]) {
        assert.equal(copy.status?.phase, "Running");
        assert.ok(copy.accessToken);
        assert.equal(copy.spec.poolRef, "gv");
        assert.equal(copy.metadata.annotations?.["sandbox.fast.io/restored-from"], "ck1");
        // The checkpointed state: the file, and a counter that starts where the checkpoint was and goes on.
        assert.equal(await sh(copy.metadata.name, "cat /root/state"), "before");
        const first = await counter(copy.metadata.name);
        // It counts on from the checkpoint (not from 0), ten a second at most since it was restored.
        const most = atCheckpoint + 10 + Math.ceil((Date.now() - restoresSentAt) / 100);
        assert.ok(first >= atCheckpoint - 10 && first <= most, `${copy.metadata.name} counts from ${first}, the checkpoint was at ${atCheckpoint}`);
        await waitFor(async () => (await counter(copy.metadata.name)) > first, 10_000, `${copy.metadata.name} counting on`);
        // Its execs run as the image's user as the source's did (the checkpoint says the source's helper can).
        const container = ctr(
          embedded.containerdNamespace,
          "containers",
          "ls",
          "-q",
          `labels."fast-sandbox.io/sandbox-id"==${copy.status?.sandboxID ?? "?"}`,
        ).trim();
        const labels = (JSON.parse(ctr(embedded.containerdNamespace, "containers", "info", container)) as { Labels?: Record<string, string> }).Labels ?? {};
        assert.equal(labels["fast-sandbox.io/helper-exec-as"], "true", `${copy.metadata.name}'s container labels: ${JSON.stringify(labels)}`);
        // Its own name (hostname), id and address, where its own daemon serves.
        assert.equal(await sh(copy.metadata.name, "hostname"), copy.metadata.name);
        assert.ok(copy.status?.sandboxIP && (await daemonAnswers(copy.status.sandboxIP)), `the daemon of ${copy.metadata.name} serves on its address`);
      }
      const ids = new Set([source.status?.sandboxID, a.status?.sandboxID, b.status?.sandboxID]);
      const addresses = new Set([source.status?.sandboxIP, a.status?.sandboxIP, b.status?.sandboxIP]);
      assert.equal(ids.size, 3, "three sandbox ids");
      assert.equal(addresses.size, 3, "three addresses");
      assert.equal(await sh("source", "hostname"), "source");

      // Nothing writable is shared: root file system, /tmp and the run directory are each copy's own.
      await sh("copy-a", "echo from-a > /root/mine; echo from-a > /tmp/mine; echo from-a > /root/state");
      assert.equal(await sh("copy-b", "cat /root/mine /tmp/mine 2>/dev/null; cat /root/state"), "before");
      assert.equal(await sh("source", "cat /root/mine 2>/dev/null; cat /root/state"), "after");
      const listed = await client.checkpoints.list();
      assert.deepEqual(
        listed.map((c) => c.name),
        ["ck1"],
      );
      // The way this runsc allows: both copies alike, and the source restored in place.
      const restored = agentLog(embedded, "gv", "sandbox restored");
      assert.deepEqual(
        restored.map((entry) => entry.identityBy),
        [runsc.copyIdentityBy, runsc.copyIdentityBy],
      );
      assert.deepEqual(
        agentLog(embedded, "gv", "sandbox restored in place").map((entry) => entry.resumedBy),
        [runsc.inPlaceResumedBy],
      );
    });

    it("forks a running sandbox into 3 running copies and keeps no checkpoint of it", async () => {
      const { client } = embedded;
      const fork = await client.checkpoints.fork("source", { count: 3 });
      assert.equal(fork.sandboxes.length, 3);
      assert.equal(fork.checkpoint, undefined);
      const names = fork.sandboxes.map((s) => s.metadata.name);
      assert.equal(new Set(names).size, 3);
      assert.equal(new Set(fork.sandboxes.map((s) => s.status?.sandboxIP)).size, 3);
      for (const copy of fork.sandboxes) {
        assert.equal((await client.sandboxes.get(copy.metadata.name)).status?.phase, "Running");
        // The source's state at the fork.
        assert.equal(await sh(copy.metadata.name, "cat /root/state"), "after");
        assert.equal(await sh(copy.metadata.name, "hostname"), copy.metadata.name);
      }
      await sh(names[0] ?? "", "echo mine > /root/fork-write");
      assert.equal(await sh(names[1] ?? "", "cat /root/fork-write 2>/dev/null || echo none"), "none");
      assert.deepEqual(
        (await client.checkpoints.list()).map((c) => c.name),
        ["ck1"],
      );
      const source = await client.sandboxes.get("source");
      assert.equal(source.status?.phase, "Running");
      assert.ok(source.status?.sandboxIP && (await daemonAnswers(source.status.sandboxIP)), "the source's daemon serves on after the fork");
    });

    it("restores a sandbox of a Shared-network pool too (loopback only, no daemon)", async () => {
      const { client } = embedded;
      await client.sandboxes.create({ name: "shared-source", pool: "gv-shared", image: BASE_IMAGE, command: ["sh", "-c", COUNTER] });
      await waitFor(async () => (await sh("shared-source", "cat /tmp/counter 2>/dev/null || echo 0").then(Number)) >= 3, 20_000, "the counter");
      await client.checkpoints.create("shared-source", { name: "shared-ck" });
      const copy = await client.checkpoints.restore("shared-ck", { name: "shared-copy" });
      assert.equal(copy.spec.poolRef, "gv-shared");
      assert.equal(await sh("shared-copy", "cat /root/state"), "before");
      assert.equal(await sh("shared-copy", "hostname"), "shared-copy");
      assert.ok((await counter("shared-source")) > 0);
      await client.sandboxes.delete("shared-copy", { gracePeriodMs: 0 });
      await client.sandboxes.delete("shared-source", { gracePeriodMs: 0 });
      await client.checkpoints.delete("shared-ck");
    });

    it("hands copies restored ahead from the pool's checkpoint to restores, and deleting the pool removes the rest", async () => {
      const { client, containerdNamespace } = embedded;
      await client.sandboxes.create({ name: "golden-source", pool: "gv-ahead", image: BASE_IMAGE, command: ["sh", "-c", COUNTER] });
      await waitFor(async () => (await sh("golden-source", "cat /tmp/counter 2>/dev/null || echo 0").then(Number)) >= 3, 20_000, "the counter");
      await client.checkpoints.create("golden-source", { name: "golden" });
      await sh("golden-source", "echo after > /root/state");
      // The pool's agent restores 2 copies ahead once it finds the checkpoint.
      const poolContainers = (role?: string) =>
        ctr(containerdNamespace, "containers", "ls", "-q", `labels."fast-sandbox.io/pool"==gv-ahead${role ? `,labels."fast-sandbox.io/role"==${role}` : ""}`)
          .split("\n")
          .filter(Boolean);
      // Ready to be claimed (restored and handed to the stock): the agent's gauge.
      const ready = async () => {
        const agent = embedded.controlPlane.fleet.listAgents().find((candidate) => candidate.pool === "gv-ahead");
        if (!agent?.endpoint) return 0;
        const metrics = await (await fetch(`http://${agent.endpoint}/metrics`)).text();
        return Number(/^fsb_agent_prepared_instances (\d+)$/m.exec(metrics)?.[1] ?? 0);
      };
      // The sandbox's container: containerd learns a claimed copy's labels just after the answer.
      const containerOf = async (sandboxID: string) => {
        let found: string | undefined;
        await waitFor(
          () => {
            [found] = ctr(containerdNamespace, "containers", "ls", "-q", `labels."fast-sandbox.io/sandbox-id"==${sandboxID}`).split("\n").filter(Boolean);
            return found !== undefined;
          },
          10_000,
          `containerd's record of sandbox ${sandboxID}`,
        );
        return found;
      };
      await waitFor(async () => (await ready()) === 2, 60_000, "2 copies of golden restored ahead");
      const stock = poolContainers("prepared-instance");
      assert.equal(stock.length, 2);

      const [x, y] = await Promise.all([client.checkpoints.restore("golden", { name: "ahead-x" }), client.checkpoints.restore("golden", { name: "ahead-y" })]);
      const claimed = new Set<string>();
      for (const copy of [x, y]) {
        assert.equal(copy.status?.phase, "Running");
        assert.equal(copy.metadata.annotations?.["sandbox.fast.io/restored-from"], "golden");
        // Claimed: the container is one of the stock's, now labelled as the sandbox.
        const container = await containerOf(copy.status?.sandboxID ?? "");
        assert.ok(
          container && stock.includes(container),
          `${copy.metadata.name} runs in a copy restored ahead (${container ?? "none"} of ${stock.join(", ")})`,
        );
        claimed.add(container);
        // The checkpoint's state, running on; the hostname is the instance's own (set when it was restored).
        assert.equal(await sh(copy.metadata.name, "cat /root/state"), "before");
        const first = await counter(copy.metadata.name);
        await waitFor(async () => (await counter(copy.metadata.name)) > first, 10_000, `${copy.metadata.name} counting on`);
        assert.match(await sh(copy.metadata.name, "hostname"), /^fsb-prepared-[0-9a-f]+$/);
        assert.ok(copy.status?.sandboxIP && (await daemonAnswers(copy.status.sandboxIP)), `the daemon of ${copy.metadata.name} serves on its address`);
      }
      assert.equal(claimed.size, 2, "two claims, two instances");
      assert.notEqual(x.status?.sandboxIP, y.status?.sandboxIP);
      assert.notEqual(await sh("ahead-x", "hostname"), await sh("ahead-y", "hostname"));
      await sh("ahead-x", "echo from-x > /root/state; echo from-x > /tmp/mine");
      assert.equal(await sh("ahead-y", "cat /tmp/mine 2>/dev/null; cat /root/state"), "before");
      assert.equal(await sh("golden-source", "cat /root/state"), "after");
      // A sandbox running in a copy made ahead is a sandbox like any: checkpointed (and restored in
      // place, running on) and restored from, though its container and run directory were the copy's.
      await client.checkpoints.create("ahead-x", { name: "from-ahead" });
      const counted = await counter("ahead-x");
      await waitFor(async () => (await counter("ahead-x")) > counted, 10_000, "ahead-x counting on after its checkpoint");
      const x2 = await client.checkpoints.restore("from-ahead", { name: "ahead-x2" });
      assert.equal(x2.status?.phase, "Running");
      assert.equal(await sh("ahead-x2", "cat /root/state /tmp/mine"), "from-x\nfrom-x");
      await client.sandboxes.delete("ahead-x2", { gracePeriodMs: 0 });
      await client.checkpoints.delete("from-ahead");
      // The stock is made again in the background.
      await waitFor(async () => (await ready()) === 2, 60_000, "the stock refilled");

      // A restore asking a narrower egress policy than the pool's is restored cold: a copy made ahead
      // runs behind the pool's firewall (allowAll), and a claim applies no policy of its own.
      const refilled = poolContainers("prepared-instance");
      const denied = await client.checkpoints.restore("golden", { name: "ahead-denied", egress: { policy: "denyAll" } });
      assert.equal(denied.status?.phase, "Running");
      const deniedContainer = await containerOf(denied.status?.sandboxID ?? "");
      assert.ok(
        deniedContainer && !refilled.includes(deniedContainer),
        `ahead-denied was restored cold (${deniedContainer ?? "none"}; stock ${refilled.join(", ")})`,
      );
      assert.deepEqual(poolContainers("prepared-instance").sort(), [...refilled].sort(), "the stock untouched");
      assert.equal(await sh("ahead-denied", "cat /root/state"), "before");

      // The checkpoint made again under its name: the copies of the deleted one go, the stock is
      // restored from the new one, and a restore claims one of those.
      await client.checkpoints.delete("golden");
      await client.checkpoints.create("golden-source", { name: "golden" });
      await waitFor(
        async () => (await ready()) === 2 && poolContainers("prepared-instance").every((id) => !refilled.includes(id)),
        60_000,
        "the stock restored again from the new golden",
      );
      const renewed = poolContainers("prepared-instance");
      const fresh = await client.checkpoints.restore("golden", { name: "ahead-new" });
      const freshContainer = await containerOf(fresh.status?.sandboxID ?? "");
      assert.ok(
        freshContainer && renewed.includes(freshContainer),
        `ahead-new runs in a copy of the new golden (${freshContainer ?? "none"} of ${renewed.join(", ")})`,
      );
      assert.equal(await sh("ahead-new", "cat /root/state"), "after", "the new golden's state");
      // As above: the pool is deleted with a full stock, not while a copy is being restored.
      await waitFor(async () => (await ready()) === 2, 60_000, "the stock refilled after ahead-new");

      for (const name of ["ahead-x", "ahead-y", "ahead-denied", "ahead-new", "golden-source"]) await client.sandboxes.delete(name, { gracePeriodMs: 0 });
      await client.pools.delete("gv-ahead");
      await waitFor(() => poolContainers().length === 0, 60_000, "no container of the pool left");
      const left = containerdLeftovers(containerdNamespace);
      assert.deepEqual(
        left.snapshots.filter((key) => key.startsWith("fsb-prepared-") && !left.containers.includes(key)),
        [],
        "no snapshot of an instance left",
      );
      const agentDir = join(embedded.dataDir, "agents", "gv-ahead-0");
      await waitFor(() => !existsSync(join(agentDir, "run")) || readdirSync(join(agentDir, "run")).length === 0, 30_000, "no run directory left");
      const checkpoints = join(embedded.dataDir, "checkpoints", "default", "gv-ahead");
      await waitFor(() => !existsSync(checkpoints) || readdirSync(checkpoints).length === 0, 30_000, "the pool's checkpoint removed");
    });

    it("fsb pause saves a sandbox and frees its instance; fsb resume runs it on where it was, under the same name and id", async () => {
      const { client } = embedded;
      // Asynchronously: the control plane the CLI talks to runs in this process.
      const fsb = (...args: string[]) =>
        new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
          execFile(
            process.execPath,
            ["--conditions=development", "--import", "tsx", join(REPO_ROOT, "packages/cli/src/main.ts"), ...args],
            { encoding: "utf8", cwd: REPO_ROOT, timeout: 120_000, env: { ...process.env, FSB_URL: embedded.controlPlane.url, FSB_TOKEN: embedded.token } },
            (error, stdout, stderr) => resolve({ status: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr }),
          );
        });
      const made = await client.sandboxes.create({ name: "napper", pool: "gv", image: BASE_IMAGE, command: ["sh", "-c", COUNTER] });
      const sandboxId = made.status?.sandboxID ?? "";
      await waitFor(async () => (await sh("napper", "cat /tmp/counter 2>/dev/null || echo 0").then(Number)) >= 5, 20_000, "the counter");
      await sh("napper", "echo kept > /root/kept");
      const atPause = await counter("napper");

      const paused = await fsb("pause", "napper");
      assert.equal(paused.status, 0, paused.stderr);
      assert.match(paused.stdout, /sandbox napper paused/);
      const record = await client.sandboxes.get("napper");
      assert.equal(record.status?.phase, "Paused");
      assert.equal(record.spec.expireTime, undefined, "no end while paused");
      assert.equal(
        ctr(embedded.containerdNamespace, "containers", "ls", "-q", `labels."fast-sandbox.io/sandbox-id"==${sandboxId}`).trim(),
        "",
        "nothing of it runs",
      );
      const again = await fsb("pause", "napper");
      assert.notEqual(again.status, 0);
      assert.match(again.stderr, /paused already/);
      const badEnd = await fsb("resume", "napper", "--expire", "soon");
      assert.notEqual(badEnd.status, 0);
      assert.match(badEnd.stderr, /--expire/);
      assert.equal((await client.sandboxes.get("napper")).status?.phase, "Paused", "a refused resume leaves it paused");

      const resumed = await fsb("resume", "napper", "--expire", "10m");
      assert.equal(resumed.status, 0, resumed.stderr);
      assert.match(resumed.stdout, /sandbox napper running on agent/);
      const back = await client.sandboxes.get("napper");
      assert.equal(back.status?.phase, "Running");
      assert.equal(back.status?.sandboxID, sandboxId, "the same sandbox id");
      const endsInMs = Date.parse(back.spec.expireTime ?? "") - Date.now();
      assert.ok(endsInMs > 8 * 60_000 && endsInMs <= 10 * 60_000, `it ends in about 10 minutes (${endsInMs} ms)`);
      assert.equal(await sh("napper", "cat /root/kept"), "kept");
      assert.equal(await sh("napper", "hostname"), "napper");
      const first = await counter("napper");
      assert.ok(first >= atPause, `the counter goes on from where it was (${first} ≥ ${atPause})`);
      await waitFor(async () => (await counter("napper")) > first, 10_000, "the counter counting on");
      await client.sandboxes.delete("napper");
    });

    it("a checkpoint whose save fails after runsc stopped the sandbox leaves the sandbox running on, and no checkpoint", async () => {
      const { client } = embedded;
      const piper = await client.sandboxes.create({ name: "piper", pool: "gv", image: BASE_IMAGE, command: ["sh", "-c", COUNTER] });
      await waitFor(async () => (await sh("piper", "cat /tmp/counter 2>/dev/null || echo 0").then(Number)) >= 3, 20_000, "the counter");
      // A fault on the host: as soon as the agent makes its partial checkpoint, something takes the
      // checkpoint's place — a directory that is not empty — so the agent's last step, the rename of
      // the partial checkpoint into place once runsc saved and stopped the sandbox, fails.
      const occupied: string[] = [];
      mkdirSync(checkpointDir(), { recursive: true });
      const watcher = watch(checkpointDir(), (_event, entry) => {
        const at = String(entry ?? "").indexOf(".partial-");
        if (at <= 0) return;
        const target = join(checkpointDir(), String(entry).slice(0, at));
        if (occupied.includes(target)) return;
        occupied.push(target);
        mkdirSync(target, { recursive: true });
        writeFileSync(join(target, "occupied"), "");
      });
      try {
        await assert.rejects(client.checkpoints.create("piper", { name: "ck-pipe" }), (error: unknown) => {
          assert.match(String(error), /checkpoint ck-pipe of sandbox \S+ could not be saved after runsc stopped the sandbox \(.*\); the sandbox runs on/);
          return true;
        });
      } finally {
        watcher.close();
        for (const target of occupied) rmSync(target, { recursive: true, force: true });
      }
      assert.equal(occupied.length, 1, "the checkpoint's place was taken");
      assert.ok(piper.status?.sandboxID, "the sandbox's id");
      const runDir = join(embedded.dataDir, "agents", "gv-0", "run", piper.status.sandboxID);
      const after = await client.sandboxes.get("piper");
      assert.equal(after.status?.phase, "Running");
      assert.equal(after.status?.sandboxID, piper.status?.sandboxID);
      assert.equal(await sh("piper", "cat /root/state"), "before");
      const first = await counter("piper");
      await waitFor(async () => (await counter("piper")) > first, 10_000, "the sandbox counting on");
      assert.ok(after.status?.sandboxIP && (await daemonAnswers(after.status.sandboxIP)), "its daemon serves on its address");
      assert.deepEqual(
        (await client.checkpoints.list()).map((c) => c.name).filter((name) => name === "ck-pipe"),
        [],
      );
      assert.deepEqual(
        readdirSync(checkpointDir()).filter((entry) => entry.includes(".partial-")),
        [],
        "no partial checkpoint left",
      );
      // A named pipe and a link in its run directory (the sandbox may make them): no state, left out
      // of the checkpoint, which is saved all the same.
      assert.ok(existsSync(runDir), `the sandbox's run directory ${runDir}`);
      execFileSync("mkfifo", [join(runDir, "made-pipe")]);
      symlinkSync("/etc/hostname", join(runDir, "made-link"));
      const saved = await client.checkpoints.create("piper", { name: "ck-pipe" });
      const savedRun = join(checkpointDir(), saved.id, "run");
      assert.ok(existsSync(join(savedRun, "command-start")), "the run directory's files are saved");
      assert.equal(lstatSync(join(savedRun, "made-pipe"), { throwIfNoEntry: false }), undefined, "no pipe in the checkpoint");
      assert.equal(lstatSync(join(savedRun, "made-link"), { throwIfNoEntry: false }), undefined, "no link in the checkpoint");
      const atSave = await counter("piper");
      await waitFor(async () => (await counter("piper")) > atSave, 10_000, "the sandbox counting on after its checkpoint");
      // The source of its /etc/hosts mount made a link to a file of the host: saved, never resumed
      // onto it (the sandbox would read the host's file).
      rmSync(join(runDir, "etc", "hosts"));
      symlinkSync("/etc/hostname", join(runDir, "etc", "hosts"));
      await assert.rejects(client.checkpoints.create("piper", { name: "ck-link" }), (error: unknown) => {
        assert.match(String(error), /is saved, but the sandbox could not run on: the sandbox replaced the source of its mount \/etc\/hosts with a link/);
        return true;
      });
      await client.checkpoints.delete("ck-link");
      await client.checkpoints.delete("ck-pipe");
      await client.sandboxes.delete("piper", { gracePeriodMs: 0 });
    });

    it("a checkpoint refused for TCP state says so; a sandbox that stopped with the refusal is Failed until a reset starts it afresh", async () => {
      const { client } = embedded;
      const talker = await client.sandboxes.create({
        name: "talker",
        pool: "gv",
        image: BASE_IMAGE,
        command: ["sh", "-c", "echo before > /root/state; exec httpd -f -p 8080 -h /"],
      });
      // A request from the host to the sandbox's address: busybox httpd closes first, which leaves the
      // connection in TIME-WAIT (60 s) inside gVisor's network stack.
      const address = talker.status?.sandboxIP;
      assert.ok(address, "the sandbox's address");
      await waitFor(
        async () =>
          fetch(`http://${address}:8080/`).then(
            async (response) => {
              await response.arrayBuffer();
              return true;
            },
            () => false,
          ),
        10_000,
        "httpd answering in the sandbox",
      );
      const refusal = await client.checkpoints.create("talker", { name: "ck-tcp" }).then(
        () => undefined,
        (error: unknown) => error,
      );
      if (runsc.tcpTimeWait === "saved") {
        assert.equal(refusal, undefined, "this runsc saves such a sandbox");
        assert.equal((await client.sandboxes.get("talker")).status?.phase, "Running");
        assert.equal(await sh("talker", "cat /root/state"), "before");
        await client.checkpoints.delete("ck-tcp");
      } else {
        assert.ok(refusal instanceof FailedPreconditionError, String(refusal));
        assert.match(
          refusal.message,
          /holds TCP sockets .*then retry; this runsc stops a sandbox whose save it refuses, so the sandbox stopped \(its memory was not saved\)$/,
        );
        assert.doesNotMatch(refusal.message, /goroutine/, "no Go stack trace in what the user reads");
        assert.doesNotMatch(refusal.message, /runs on/, "it does not say the sandbox runs on");
        await waitFor(async () => (await client.sandboxes.get("talker")).status?.phase === "Failed", 10_000, "the sandbox Failed");
        const failed = await client.sandboxes.get("talker");
        assert.match(failed.status?.conditions?.find((c) => c.type === "Ready")?.message ?? "", /reset it to start it afresh from its image/);
        // A reset brings it back: a new instance from its image and command.
        await client.sandboxes.update("talker", { ...failed.spec, resetRevision: "after-refusal" });
        await waitFor(
          async () => {
            const status = (await client.sandboxes.get("talker")).status;
            return status?.phase === "Running" && status.acceptedResetRevision === "after-refusal";
          },
          30_000,
          "the reset sandbox running",
        );
        const reset = await client.sandboxes.get("talker");
        assert.notEqual(reset.status?.sandboxID, talker.status?.sandboxID, "a new instance");
        assert.equal(await sh("talker", "cat /root/state"), "before");
        assert.deepEqual(
          (await client.checkpoints.list()).map((c) => c.name).filter((name) => name === "ck-tcp"),
          [],
          "no checkpoint of a refused save",
        );
      }
      await client.sandboxes.delete("talker", { gracePeriodMs: 0 });
    });

    it("refuses what it cannot do, saying why", async () => {
      const { client } = embedded;
      await client.sandboxes.create({ name: "on-runc", pool: "plain", image: BASE_IMAGE, command: ["sleep", "3600"] });
      await assert.rejects(
        client.checkpoints.create("on-runc"),
        (error: unknown) => error instanceof FailedPreconditionError && /checkpoint needs runtimeType gvisor/.test(error.message),
      );
      await client.sandboxes.delete("on-runc", { gracePeriodMs: 0 });
      await assert.rejects(
        client.checkpoints.restore("no-such-checkpoint"),
        (error: unknown) => error instanceof NotFoundError && /checkpoint default\/no-such-checkpoint not found/.test(error.message),
      );
      await assert.rejects(client.checkpoints.create("source", { name: "ck1" }), AlreadyExistsError);
      await assert.rejects(client.checkpoints.create("no-such-sandbox"), NotFoundError);
      await assert.rejects(client.checkpoints.fork("source", { count: 0 }), ValidationError);
      await assert.rejects(client.checkpoints.delete("no-such-checkpoint"), NotFoundError);
    });

    it("a checkpoint deleted while a restore reads it: the restore runs from its files, the delete waits, and nothing of it is left", async () => {
      const { client } = embedded;
      const checkpoint = await client.checkpoints.create("source", { name: "ck-race" });
      // The checkpoint's own resume in place was its first reader: the readers' directory exists.
      const readers = join(checkpointDir(), checkpoint.id, "readers");
      assert.deepEqual(readdirSync(readers), [], "no reader once the checkpoint is made");
      // The delete goes out as soon as the restore's reader marker appears (runsc reads the image from then on).
      let markerSeen!: () => void;
      const reading = new Promise<void>((resolve) => (markerSeen = resolve));
      // (After the delete, the directory is gone: the watcher's last events find nothing.)
      const readerNow = () => {
        try {
          return readdirSync(readers).length > 0;
        } catch {
          return false;
        }
      };
      const watcher = watch(readers, () => {
        if (readerNow()) markerSeen();
      });
      try {
        const restoring = client.checkpoints.restore("ck-race", { name: "copy-race" });
        await Promise.race([reading, restoring]);
        const sawReader = readerNow();
        const deleting = client.checkpoints.delete("ck-race");
        const copy = await restoring;
        await deleting;
        assert.ok(sawReader, "the delete was sent while the restore read the checkpoint");
        assert.equal(copy.status?.phase, "Running");
        // The source's state when ck-race was taken (the first case wrote "after" once ck1 was saved).
        assert.equal(await sh("copy-race", "cat /root/state"), "after");
      } finally {
        watcher.close();
      }
      assert.equal(existsSync(join(checkpointDir(), checkpoint.id)), false, "the checkpoint's files are gone");
      assert.ok(!readdirSync(checkpointDir()).some((name) => name.startsWith(checkpoint.id)), "and no leftover of the delete");
      assert.ok(!(await client.checkpoints.list()).some((c) => c.name === "ck-race"));
      await client.sandboxes.delete("copy-race", { gracePeriodMs: 0 });
    });

    it("leaves no container, task, snapshot or checkpoint file once sandboxes, checkpoints and pool are deleted", async () => {
      const { client, containerdNamespace } = embedded;
      await client.checkpoints.create("source", { name: "ck2" });
      assert.deepEqual(readdirSync(checkpointDir()).sort(), (await client.checkpoints.list()).map((c) => c.id).sort());
      await client.checkpoints.delete("ck1");
      assert.deepEqual(
        (await client.checkpoints.list()).map((c) => c.name),
        ["ck2"],
      );
      for (const sandbox of await client.sandboxes.list()) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
      // The runc pool's agent keeps prepared instances (infrastructure, not sandboxes).
      const left = containerdLeftovers(containerdNamespace);
      const sandboxes = (ids: string[]) => ids.filter((id) => !id.startsWith("fsb-prepared-"));
      assert.deepEqual(
        { containers: sandboxes(left.containers), tasks: sandboxes(left.tasks), snapshots: sandboxes(left.snapshots) },
        { containers: [], tasks: [], snapshots: [] },
      );
      // Nor a run directory or log of a restored sandbox on the agent.
      const agentDir = join(embedded.dataDir, "agents", "gv-0");
      assert.deepEqual(readdirSync(join(agentDir, "run")), []);
      assert.deepEqual(readdirSync(join(agentDir, "logs")), []);
      // Deleting the pool removes the checkpoints it still has.
      await client.pools.delete("gv");
      await waitFor(() => !existsSync(checkpointDir()) || readdirSync(checkpointDir()).length === 0, 30_000, "the pool's checkpoints removed");
    });
  });
}
