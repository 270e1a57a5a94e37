/**
 * A pool's sandboxResources hold, tested by what a sandbox can do rather than by the files that
 * configure them: a pids limit makes forks fail, a CPU limit keeps a busy loop near its share, a
 * memory limit gets a hungry process OOM-killed — and that sandbox then shows an `OOMKilled`
 * condition through the public API and in `fsb get`. So do the limits of a pool's agents (its
 * agentTemplate's agent container, what the Downward API gives an agent Pod), which bound all of an
 * agent's sandboxes together: a sandbox without limits of its own is held to them. A sandbox of a
 * pool without limits is the control: the same programs go further there, so each check can fail.
 * A disk limit (ephemeralStorage) is held by measuring, as the kubelet's: a sandbox that writes past
 * it, to its root file system or its run directory, is evicted (Lost, reason Evicted).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { REPO_ROOT } from "../../support/containerd.js";
import { recordedContainerOfSandbox, sandboxesInContainerd } from "../../support/containerd-contents.js";
import type { SandboxStats } from "@fast-sandbox/sdk";
import { BASE_IMAGE, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";
import { sandboxCgroup } from "../../support/sandbox-cgroup.js";

const PIDS_LIMIT = 20;
/** The 200m quota plus scheduling slack; every window of the limited sandbox stays below it. */
const LIMITED_MAX_CORES = 0.3;
/** Clearly past the quota: the unlimited sandbox's best window must exceed it. */
const UNLIMITED_MIN_CORES = 0.35;
/** The agent-limited pool's agents: 300m and 48Mi for all their sandboxes together. */
const AGENT_LIMITS = { cpu: "300m", memory: "48Mi" };
/** Its 300m quota plus scheduling slack. */
const AGENT_LIMITED_MAX_CORES = 0.4;
/** The disk-limited pool's sandboxes may hold 16 MiB on the node's disk. */
const DISK_LIMIT_MIB = 16;
/** How often the agents measure disk use (FSB_DISK_CHECK_INTERVAL_MS, passed to the agents `fsb up` starts); 10 s by default. */
const DISK_CHECK_INTERVAL_MS = 500;
process.env.FSB_DISK_CHECK_INTERVAL_MS = String(DISK_CHECK_INTERVAL_MS);

/** CPU time the sandbox's cgroup has used, in seconds (v1 cpuacct, or v2 cpu.stat). */
function cpuSeconds(cgroupRoot: string, containerId: string): number {
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) {
    const stat = readFileSync(join(sandboxCgroup("/sys/fs/cgroup", cgroupRoot, containerId), "cpu.stat"), "utf8");
    return Number(/^usage_usec (\d+)$/m.exec(stat)?.[1]) / 1e6;
  }
  return Number(readFileSync(join(sandboxCgroup("/sys/fs/cgroup/cpuacct", cgroupRoot, containerId), "cpuacct.usage"), "utf8")) / 1e9;
}

describe("sandbox limits are enforced and an OOM kill is visible", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "limits",
      pools: [
        pool("limited", { maxSandboxesPerPod: 4, sandboxResources: { cpu: "200m", memory: "32Mi", pids: PIDS_LIMIT } }),
        pool("unlimited", { maxSandboxesPerPod: 4 }),
        pool("disk-limited", { maxSandboxesPerPod: 6, sandboxResources: { ephemeralStorage: `${DISK_LIMIT_MIB}Mi` } }),
        pool("agent-limited", {
          maxSandboxesPerPod: 4,
          agentTemplate: { spec: { containers: [{ name: "agent", resources: { limits: AGENT_LIMITS } }] } },
        }),
      ],
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  /** Starts background processes until a fork fails (ash then stops); returns how many started. */
  async function forkUntilRefused(name: string): Promise<{ started: number; stderr: string }> {
    const script = "i=0; while [ $i -lt 60 ]; do sleep 600 & i=$((i+1)); echo $i; done";
    const result = await embedded.client.sandboxes.exec(name, ["sh", "-c", script]);
    return { started: result.stdout.split("\n").filter(Boolean).length, stderr: result.stderr };
  }

  it("pids: forks fail once the sandbox holds its limit of processes", async () => {
    const { client } = embedded;
    const limited = await client.sandboxes.create({ pool: "limited", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const unlimited = await client.sandboxes.create({ pool: "unlimited", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const refused = await forkUntilRefused(limited.metadata.name);
    // The helper, the command and the exec'd shell count too.
    assert.ok(refused.started > 0 && refused.started <= PIDS_LIMIT - 3, `started ${refused.started} processes`);
    assert.match(refused.stderr, /can't fork: Resource temporarily unavailable/);
    // Without the limit the same loop starts all of them.
    assert.deepEqual(await forkUntilRefused(unlimited.metadata.name), { started: 60, stderr: "" });
    for (const sandbox of [limited, unlimited]) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
  });

  it("cpu: busy loops limited to 200m (or on an agent limited to 300m) stay within the quota, unlimited ones go past it", async () => {
    const { client, cgroupRoot, containerdNamespace } = embedded;
    // Eight loops, so that the unlimited sandbox gets most of a core even on a busy machine.
    const busy = ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sh -c 'while :; do :; done' & done; wait"];
    const limited = await client.sandboxes.create({ pool: "limited", image: BASE_IMAGE, command: busy });
    const unlimited = await client.sandboxes.create({ pool: "unlimited", image: BASE_IMAGE, command: busy });
    const agentLimited = await client.sandboxes.create({ pool: "agent-limited", image: BASE_IMAGE, command: busy });
    // Their cgroups are named after their containers (the pools keep prepared instances by default).
    const ids = await Promise.all(
      [limited, unlimited, agentLimited].map((sandbox) => recordedContainerOfSandbox(containerdNamespace, sandbox.status?.sandboxID ?? "")),
    );
    // Cores used in 2 s windows, both sandboxes measured in the same windows: at least two, and
    // until the unlimited one has clearly gone past the 200m quota in one, at most ten. The
    // bounds hold on a loaded machine too: the quota caps the limited sandbox whatever the load,
    // and the unlimited one only has to exceed that quota by a margin, not win a core.
    const limitedCores: number[] = [];
    const unlimitedCores: number[] = [];
    const agentLimitedCores: number[] = [];
    for (let window = 0; window < 10 && !(unlimitedCores.some((cores) => cores > UNLIMITED_MIN_CORES) && window >= 2); window++) {
      const start = performance.now();
      const before = ids.map((id) => cpuSeconds(cgroupRoot, id));
      await sleep(2_000);
      const after = ids.map((id) => cpuSeconds(cgroupRoot, id));
      const wallSeconds = (performance.now() - start) / 1000;
      limitedCores.push(((after[0] ?? 0) - (before[0] ?? 0)) / wallSeconds);
      unlimitedCores.push(((after[1] ?? 0) - (before[1] ?? 0)) / wallSeconds);
      agentLimitedCores.push(((after[2] ?? 0) - (before[2] ?? 0)) / wallSeconds);
    }
    const cores = (samples: number[]) => samples.map((c) => c.toFixed(2)).join(", ");
    const shown = `limited ${cores(limitedCores)}; unlimited ${cores(unlimitedCores)}; agent-limited ${cores(agentLimitedCores)}`;
    assert.ok(
      agentLimitedCores.every((used) => used < AGENT_LIMITED_MAX_CORES) && agentLimitedCores.some((used) => used > 0.05),
      `the sandbox of the agent limited to ${AGENT_LIMITS.cpu} used more than ${AGENT_LIMITED_MAX_CORES} of a core, or none: ${shown}`,
    );
    assert.ok(
      limitedCores.every((cores) => cores < LIMITED_MAX_CORES),
      `the 200m sandbox used more than ${LIMITED_MAX_CORES} of a core: ${shown}`,
    );
    assert.ok(
      limitedCores.some((cores) => cores > 0.05),
      `the 200m sandbox's loop did not run: ${shown}`,
    );
    assert.ok(
      unlimitedCores.some((cores) => cores > UNLIMITED_MIN_CORES),
      `the unlimited sandbox never used more than ${UNLIMITED_MIN_CORES} of a core: ${shown}`,
    );
    for (const sandbox of [limited, unlimited, agentLimited]) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
  });

  it("cpu: the sandboxes of an agent share its CPU by slot, not by process: one busy loop holds its own against eight", async () => {
    const { client, cgroupRoot, containerdNamespace } = embedded;
    const loops = (count: number) => ["sh", "-c", `for i in $(seq ${count}); do sh -c 'while :; do :; done' & done; wait`];
    // Both on the one agent of the pool limited to 300m: each wants far more than half of it.
    const many = await client.sandboxes.create({ pool: "agent-limited", image: BASE_IMAGE, command: loops(8) });
    const one = await client.sandboxes.create({ pool: "agent-limited", image: BASE_IMAGE, command: loops(1) });
    assert.equal(many.status?.assignedPod, one.status?.assignedPod, "one agent holds both");
    const ids = await Promise.all([many, one].map((sandbox) => recordedContainerOfSandbox(containerdNamespace, sandbox.status?.sandboxID ?? "")));
    // Shared by process, the single loop would get 1/9 of the agent's CPU. Each sandbox is a CPU group
    // of equal weight: on one CPU it would get half; on this 2-CPU machine about a third, as the
    // kernel weighs a group on each CPU by where its threads run (the eight loops run on both).
    await sleep(1_000);
    const before = ids.map((id) => cpuSeconds(cgroupRoot, id));
    await sleep(6_000);
    const after = ids.map((id) => cpuSeconds(cgroupRoot, id));
    const [manyUsed, oneUsed] = ids.map((_, i) => (after[i] ?? 0) - (before[i] ?? 0));
    const share = (oneUsed ?? 0) / ((manyUsed ?? 0) + (oneUsed ?? 0));
    const shown = `eight loops ${manyUsed?.toFixed(2)} s, one loop ${oneUsed?.toFixed(2)} s of CPU in 6 s`;
    assert.ok((manyUsed ?? 0) > 0.1 && (oneUsed ?? 0) > 0.1, `both ran: ${shown}`);
    assert.ok(share > 0.2 && share < 0.65, `the single loop's share is ${share.toFixed(2)}, near its 1/9 by process: ${shown}`);
    assert.ok((manyUsed ?? 0) + (oneUsed ?? 0) < 6 * AGENT_LIMITED_MAX_CORES, `together within the agent's ${AGENT_LIMITS.cpu}: ${shown}`);
    for (const sandbox of [many, one]) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
  });

  it("stats: the agent reads a sandbox's CPU, memory, processes and writes, within its limits (SDK and `fsb stats`)", async () => {
    const { client } = embedded;
    // 4 MiB written over the image, then busy loops (eight in the unlimited one, to get past 200m on a busy machine).
    const program = (loops: number) => [
      "sh",
      "-c",
      `dd if=/dev/zero of=/written bs=1M count=4 2>/dev/null; for i in $(seq ${loops}); do sh -c 'while :; do :; done' & done; wait`,
    ];
    const limited = await client.sandboxes.create({ pool: "limited", image: BASE_IMAGE, command: program(2) });
    const unlimited = await client.sandboxes.create({ pool: "unlimited", image: BASE_IMAGE, command: program(8) });
    const written = (stats: SandboxStats) => stats.diskUsedBytes >= 4 * 2 ** 20 && stats.pids >= 3;
    let limitedStats: SandboxStats | undefined;
    await waitFor(
      async () => {
        limitedStats = await client.sandboxes.stats(limited.metadata.name);
        return written(limitedStats);
      },
      30_000,
      "the limited sandbox's writes and loops",
    );
    assert.ok(limitedStats);
    assert.equal(limitedStats.cpuLimitMillis, 200);
    assert.equal(limitedStats.memoryLimitBytes, 32 * 2 ** 20);
    assert.ok(limitedStats.memoryUsedBytes > 0 && limitedStats.memoryUsedBytes <= 32 * 2 ** 20, `memory ${limitedStats.memoryUsedBytes}`);
    assert.ok(limitedStats.pids <= PIDS_LIMIT, `pids ${limitedStats.pids}`);
    assert.ok(limitedStats.nodeCpus >= 1 && limitedStats.nodeMemoryBytes > 0);
    // Readings over 100 ms: the 200m quota (20 ms per 100 ms period; a window may span two periods) bounds every one.
    const limitedCpu: number[] = [];
    const unlimitedCpu: number[] = [];
    for (let reading = 0; reading < 10 && !(reading >= 3 && unlimitedCpu.some((millis) => millis > 350)); reading++) {
      limitedCpu.push((await client.sandboxes.stats(limited.metadata.name)).cpuUsedMillis);
      unlimitedCpu.push((await client.sandboxes.stats(unlimited.metadata.name)).cpuUsedMillis);
    }
    const shown = `limited ${limitedCpu.join(", ")}; unlimited ${unlimitedCpu.join(", ")} (millicores)`;
    assert.ok(limitedCpu.every((millis) => millis <= 450) && limitedCpu.some((millis) => millis > 0), shown);
    assert.ok(
      unlimitedCpu.some((millis) => millis > 350),
      shown,
    );
    const unlimitedStats = await client.sandboxes.stats(unlimited.metadata.name);
    assert.equal(unlimitedStats.cpuLimitMillis, 0);
    assert.equal(unlimitedStats.memoryLimitBytes, 0);
    assert.ok(unlimitedStats.cpuUsageNanos > limitedStats.cpuUsageNanos, "eight loops used more CPU time than two held to 200m");
    await assert.rejects(
      client.sandboxes.stats("no-such-sandbox"),
      (error: Error) => error.name === "NotFoundError" || /not found|does not exist/.test(error.message),
    );

    // `fsb stats` prints a row per sandbox. (Not spawnSync: this process serves the API.)
    const cli = await promisify(execFile)(
      process.execPath,
      [
        "--conditions=development",
        "--import",
        "tsx",
        join(REPO_ROOT, "packages/cli/src/main.ts"),
        "stats",
        limited.metadata.name,
        unlimited.metadata.name,
        "--url",
        embedded.controlPlane.url,
      ],
      { cwd: REPO_ROOT, encoding: "utf8", timeout: 120_000, env: { ...process.env, FSB_TOKEN: embedded.token } },
    );
    assert.match(cli.stdout, /^NAME\s+CPU\s+CPU LIMIT\s+MEMORY\s+MEMORY LIMIT\s+PIDS\s+DISK WRITTEN\s+DISK LIMIT$/m);
    assert.match(cli.stdout, new RegExp(`^${limited.metadata.name}\\s+\\d+m\\s+200m\\s+\\S+\\s+32Mi\\s+\\d+\\s+4(\\.\\d)?Mi\\s+none$`, "m"));
    assert.match(cli.stdout, new RegExp(`^${unlimited.metadata.name}\\s+\\S+\\s+none \\(\\d+ cpus\\)\\s+\\S+\\s+none \\(\\S+\\)`, "m"));
    for (const sandbox of [limited, unlimited]) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
  });

  it("memory: a process allocating 100 MiB in a 32Mi sandbox is OOM-killed, and the sandbox shows it", async () => {
    const { client } = embedded;
    // `tail` holds its whole last "line" — 100 MiB of zeros without a newline — in memory. Its
    // oom_score_adj of 1000 makes it the OOM killer's choice on a busy machine too (not the shell).
    // What it prints at the end (those 100 MiB) goes nowhere: in the log, the control's line would
    // come only after 100 MiB of output and its rotations, read again at every look.
    const allocate = "head -c 100m /dev/zero | sh -c 'echo 1000 > /proc/self/oom_score_adj && exec tail >/dev/null'; echo tail-exited-$?; sleep 3600";
    const hog = await client.sandboxes.create({ pool: "limited", image: BASE_IMAGE, command: ["sh", "-c", allocate] });
    const calm = await client.sandboxes.create({ pool: "limited", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const control = await client.sandboxes.create({ pool: "unlimited", image: BASE_IMAGE, command: ["sh", "-c", allocate] });

    const oomKilled = async (name: string) => (await client.sandboxes.get(name)).status?.conditions?.find((c) => c.type === "OOMKilled");
    await waitFor(async () => (await oomKilled(hog.metadata.name)) !== undefined, 30_000, "the OOMKilled condition");
    const condition = await oomKilled(hog.metadata.name);
    assert.equal(condition?.status, "True");
    assert.equal(condition?.reason, "OOMKilled");
    assert.match(condition?.message ?? "", /OOM killer killed a process of the sandbox/);
    // The killed process was `tail` (SIGKILL: 128 + 9); the sandbox itself runs on.
    const logs = async (name: string) => {
      let text = "";
      for await (const chunk of client.sandboxes.logs(name)) text += new TextDecoder().decode(chunk);
      return text;
    };
    let hogLog = "";
    await waitFor(async () => (hogLog = await logs(hog.metadata.name)).includes("tail-exited-137"), 30_000, "the hog's log").catch((error: unknown) => {
      throw new Error(`${String(error)}; the hog's log: ${JSON.stringify(hogLog)}`);
    });
    assert.equal((await client.sandboxes.get(hog.metadata.name)).status?.phase, "Running");
    assert.equal((await client.sandboxes.exec(hog.metadata.name, ["true"])).exitCode, 0);

    // Without a memory limit the same allocation succeeds; neither of the others shows an OOM kill.
    let controlLog = "";
    await waitFor(async () => (controlLog = await logs(control.metadata.name)).includes("tail-exited-0"), 60_000, "the control's allocation").catch(
      (error: unknown) => {
        throw new Error(`${String(error)}; the control's log: ${JSON.stringify(controlLog.slice(-500))}`);
      },
    );
    await sleep(1_500); // three heartbeats, which carry any OOM kill the agents saw
    assert.equal(await oomKilled(calm.metadata.name), undefined);
    assert.equal(await oomKilled(control.metadata.name), undefined);

    // `fsb get` prints the condition under the sandbox's row. (Not spawnSync: this process serves the API.)
    const get = await promisify(execFile)(
      process.execPath,
      [
        "--conditions=development",
        "--import",
        "tsx",
        join(REPO_ROOT, "packages/cli/src/main.ts"),
        "get",
        hog.metadata.name,
        "--url",
        embedded.controlPlane.url,
      ],
      { cwd: REPO_ROOT, encoding: "utf8", timeout: 120_000, env: { ...process.env, FSB_TOKEN: embedded.token } },
    );
    assert.match(get.stdout, /^CONDITIONS$/m);
    assert.match(get.stdout, /^OOMKilled\s+True\s+OOMKilled\s+\d+[smhd]\s+the kernel's OOM killer killed a process of the sandbox/m);

    for (const sandbox of [hog, calm, control]) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
  });

  it("disk: a sandbox that writes past its ephemeralStorage, to its root file system or its run directory, is evicted (Lost, Evicted), as one that holds a removed file open; AutoRecreate starts it afresh", async () => {
    const { client } = embedded;
    const get = (name: string) => client.sandboxes.get(name);
    const ready = async (name: string) => (await get(name)).status?.conditions?.find((c) => c.type === "Ready");
    const sleeper = { image: BASE_IMAGE, command: ["sleep", "3600"] };
    const calm = await client.sandboxes.create({ ...sleeper, pool: "disk-limited" });
    const rootHog = await client.sandboxes.create({ ...sleeper, pool: "disk-limited" });
    const runDirHog = await client.sandboxes.create({ ...sleeper, pool: "disk-limited", failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 2 });
    const control = await client.sandboxes.create({ ...sleeper, pool: "unlimited" });
    // 24 MiB in a file it removed at once and holds open: no walk of its files sees them.
    const hidden = "exec 3>/hidden && rm /hidden && dd if=/dev/urandom bs=1048576 count=24 >&3 2>/dev/null; echo hidden-written; sleep 3600";
    const hiddenHog = await client.sandboxes.create({ image: BASE_IMAGE, command: ["sh", "-c", hidden], pool: "disk-limited" });

    // Within the limit: 4 MiB stays, and is counted against it.
    const write = (name: string, path: string, mib: number) =>
      client.sandboxes.exec(name, ["sh", "-c", `dd if=/dev/urandom of=${path} bs=1048576 count=${mib} 2>/dev/null && sync && echo written`]);
    assert.equal((await write(calm.metadata.name, "/within", 4)).stdout, "written\n");
    const calmStats = await client.sandboxes.stats(calm.metadata.name);
    assert.equal(calmStats.diskLimitBytes, DISK_LIMIT_MIB * 2 ** 20);
    assert.ok(calmStats.diskUsedBytes >= 4 * 2 ** 20 && calmStats.diskUsedBytes < DISK_LIMIT_MIB * 2 ** 20, `disk used ${calmStats.diskUsedBytes}`);
    assert.equal((await client.sandboxes.stats(control.metadata.name)).diskLimitBytes, 0);

    // First a tree deeper than PATH_MAX on the node (20 directories of 200 characters), which a walk by
    // paths (containerd's snapshot usage, Node's fs) fails on: the measure must not fail open.
    const deepTree = (under: string) => [
      "sh",
      "-c",
      `N=$(printf "%0200d" 0); mkdir -p ${under} && cd ${under} && for i in $(seq 20); do mkdir $N && cd $N || exit 1; done && echo deep`,
    ];
    assert.equal((await client.sandboxes.exec(rootHog.metadata.name, deepTree("/deep"))).stdout, "deep\n");
    assert.equal((await client.sandboxes.exec(runDirHog.metadata.name, deepTree("/.fast-sandbox/run/deep"))).stdout, "deep\n");
    // Past it: 24 MiB in the root file system (its snapshot), and in the run directory (the node's
    // disk, outside the snapshot). A check may land while dd writes: the exec then ends with the sandbox.
    await Promise.all([
      write(rootHog.metadata.name, "/past", 24).catch(() => undefined),
      write(runDirHog.metadata.name, "/.fast-sandbox/run/past", 24).catch(() => undefined),
    ]);
    // The same 24 MiB in a sandbox without a limit.
    assert.equal((await write(control.metadata.name, "/past", 24)).stdout, "written\n");

    await waitFor(async () => (await get(rootHog.metadata.name)).status?.phase === "Lost", 30_000, "the root file system's hog Lost");
    const evicted = await ready(rootHog.metadata.name);
    assert.equal(evicted?.reason, "Evicted");
    assert.match(evicted?.message ?? "", /^agent \S+ stopped it: its disk use, \d+\.\d\d MiB .*went past its limit of 16\.00 MiB/);
    await waitFor(async () => (await get(hiddenHog.metadata.name)).status?.phase === "Lost", 30_000, "the hog of a removed file it holds open Lost");
    assert.equal((await ready(hiddenHog.metadata.name))?.reason, "Evicted");
    // Its instance goes with what it wrote (failurePolicy Manual: the record stays, Lost).
    await waitFor(
      () => !sandboxesInContainerd(embedded.containerdNamespace).includes(rootHog.status?.sandboxID ?? "?"),
      15_000,
      "the evicted instance removed",
    );

    await waitFor(async () => ((await get(runDirHog.metadata.name)).status?.recreations ?? 0) >= 1, 30_000, "the run directory's hog recreated");
    await waitFor(async () => (await get(runDirHog.metadata.name)).status?.phase === "Running", 30_000, "the recreated hog Running");
    const recreated = await get(runDirHog.metadata.name);
    assert.notEqual(recreated.status?.sandboxID, runDirHog.status?.sandboxID, "a new instance");
    assert.equal(recreated.status?.conditions?.find((c) => c.type === "Recreated")?.reason, "InstanceLost");
    assert.equal(
      (await client.sandboxes.exec(runDirHog.metadata.name, ["sh", "-c", "test -e /.fast-sandbox/run/past && echo kept || echo gone"])).stdout,
      "gone\n",
    );

    // Several checks later, the sandboxes within their limit (or without one) run on.
    await sleep(4 * DISK_CHECK_INTERVAL_MS);
    for (const sandbox of [calm, control]) {
      assert.equal((await get(sandbox.metadata.name)).status?.phase, "Running", `${sandbox.metadata.name} runs on`);
      assert.equal((await client.sandboxes.exec(sandbox.metadata.name, ["true"])).exitCode, 0);
    }
    for (const sandbox of [calm, rootHog, runDirHog, hiddenHog, control]) await client.sandboxes.delete(sandbox.metadata.name, { gracePeriodMs: 0 });
    // Their run directories are gone from the node, the deep one too.
    const agentsDir = join(embedded.dataDir, "agents");
    const runDirs = readdirSync(agentsDir).flatMap((agent) => (existsSync(join(agentsDir, agent, "run")) ? readdirSync(join(agentsDir, agent, "run")) : []));
    for (const sandbox of [rootHog, runDirHog, recreated])
      assert.ok(!runDirs.includes(sandbox.status?.sandboxID ?? "?"), `${sandbox.status?.sandboxID} left its run directory`);
  });

  it("disk: an AutoRecreate sandbox whose command fills its disk at once is recreated with a back-off (at once, then 10 s, then 20 s after each loss), not in a loop", async () => {
    const { client } = embedded;
    const filler = await client.sandboxes.create({
      image: BASE_IMAGE,
      command: ["sh", "-c", "dd if=/dev/zero of=/fill bs=1048576 count=24 2>/dev/null; sleep 3600"],
      pool: "disk-limited",
      failurePolicy: "AutoRecreate",
      recoveryTimeoutSeconds: 1,
    });
    const name = filler.metadata.name;
    /** The sandbox once it is Lost with `recreations` recreations, backing off (its Ready message saying so). */
    const backingOff = async (recreations: number) => {
      let seen = await client.sandboxes.get(name);
      await waitFor(
        async () => {
          seen = await client.sandboxes.get(name);
          const ready = seen.status?.conditions?.find((c) => c.type === "Ready");
          return seen.status?.phase === "Lost" && (seen.status.recreations ?? 0) === recreations && /AutoRecreate backs off/.test(ready?.message ?? "");
        },
        60_000,
        `the filler Lost after ${recreations} recreation(s), backing off`,
      );
      return seen.status?.conditions?.find((c) => c.type === "Ready");
    };
    // Its first instance is evicted and replaced at once; the second, lost seconds after it was made, waits 10 s.
    const first = await backingOff(1);
    assert.equal(first?.reason, "Evicted");
    assert.match(
      first?.message ?? "",
      /^agent \S+ stopped it: its disk use, .*; AutoRecreate backs off: a new instance at \S+, 10s after the loss \(its new instance was lost within 10 minutes of being made\)$/,
    );
    // Then a third instance, lost as fast: 20 s. Without a back-off an instance would be made every check.
    const second = await backingOff(2);
    assert.match(second?.message ?? "", /, 20s after the loss \(its last 2 new instances were each lost within 10 minutes of being made\)$/);
    await sleep(5_000);
    const still = await client.sandboxes.get(name);
    assert.deepEqual([still.status?.phase, still.status?.recreations], ["Lost", 2], "no new instance 5 s into a back-off of 20 s");
    await client.sandboxes.delete(name, { gracePeriodMs: 0 });
  });

  it("agent limits: a sandbox without limits of its own, on an agent limited to 48Mi, is held to them (its 100 MiB process is OOM-killed)", async () => {
    const { client, cgroupRoot, containerdNamespace } = embedded;
    const allocate = "head -c 100m /dev/zero | sh -c 'echo 1000 > /proc/self/oom_score_adj && exec tail'; echo tail-exited-$?; sleep 3600";
    const hog = await client.sandboxes.create({ pool: "agent-limited", image: BASE_IMAGE, command: ["sh", "-c", allocate] });
    let log = "";
    await waitFor(
      async () => {
        log = "";
        for await (const chunk of client.sandboxes.logs(hog.metadata.name)) log += new TextDecoder().decode(chunk);
        return log.includes("tail-exited-");
      },
      30_000,
      "the hog's allocation to end",
    );
    assert.match(log, /tail-exited-137/, "tail, holding 100 MiB, was SIGKILLed by the OOM killer");
    // The bound is on the cgroup the agent's sandboxes are made in, as the agent wrote it.
    const id = await recordedContainerOfSandbox(containerdNamespace, hog.status?.sandboxID ?? "");
    const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
    const sandboxes = dirname(sandboxCgroup(v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory", cgroupRoot, id));
    assert.equal(readFileSync(join(sandboxes, v2 ? "memory.max" : "memory.limit_in_bytes"), "utf8").trim(), String(48 * 1024 * 1024));
    await client.sandboxes.delete(hog.metadata.name, { gracePeriodMs: 0 });
  });
});
