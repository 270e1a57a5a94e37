/**
 * `bench restore`: gVisor restores from a checkpoint, on demand and as a fork.
 *
 * Method. An in-process embedded control plane with one agent of a gVisor pool (runsc through the
 * runc v2 shim, Isolated network, the in-sandbox daemon running). One template sandbox runs a
 * shell loop that writes a counter ten times a second; it is checkpointed once (the source runs on).
 * Then, one after another:
 * - restore (on demand): the SDK's `checkpoints.restore(checkpoint)` — fast-path API, placement on
 *   the agent that holds the checkpoint, the agent's restore (network namespace and snapshot at
 *   once, container, Tasks.Create with criu_image_path, Tasks.Start = `runsc restore`, the copy's
 *   hostname and daemon: an exec with Debian's runsc, the daemon's own resume on its new hostname
 *   with a current one) — timed from the call to its answer (the copy runs); the copy is deleted
 *   untimed. `FSB_RUNSC_PATH=$(bash scripts/build-runsc.sh)` runs it on a current runsc.
 *   `--count` measured rounds after `--warmup` unrecorded ones (defaults 20 and 2).
 * - the baseline, in the same rounds: `ctr run -d` of the same image with the template's command
 *   on the same containerd (same namespace and snapshotter) and the same runsc (`--runc-binary` the
 *   agents' wrapper for a Shared sandbox: ctr-baseline.ts runscCtrOptions), timed as the whole CLI
 *   invocation (spawn to exit, after Tasks.Start); the container is removed untimed. Each round runs
 *   both, the side going first alternating (restore first in even rounds, ctr in odd ones). What
 *   it is: the time to a fresh gVisor sandbox of the image without Fast Sandbox — a cold start, not
 *   a restore (no checkpoint, no state carried), on runsc's `--network=none` (ctr makes no network
 *   namespace; the restore's copy gets an Isolated one). `restore_vs_ctr_runsc` = restore p50 / its p50.
 * - fork K=4: the SDK's `checkpoints.fork(template, {count: 4})` — a checkpoint of the running
 *   template (the template is saved and restored in place), 4 restores in parallel, the checkpoint
 *   deleted — timed from the call to its answer (4 copies run); `--forks` rounds (default 3), the
 *   copies deleted untimed between them.
 * - checkpoint: the SDK's `checkpoints.create(template)` then its delete, timed alone (the source's
 *   time without a running process is about its checkpoint + in-place restore), `--forks` rounds.
 * The agent's own step timings of every restore are read from its log (`sandbox restored`).
 * - pooled claim: a second gVisor pool keeps 2 copies of its own template's checkpoint restored ahead
 *   (`preparedInstances: 2, preparedFromCheckpoint`); the same SDK restore claims one (no runsc on
 *   the path: the agent hands the running copy over). Timed from the call to its answer; before
 *   each round the agent's stock is full again (its `fsb_agent_prepared_instances` gauge), so no
 *   refill runs during a timed restore; `--count` rounds after `--warmup`.
 * The last line is `RESULT restore_p50_ms=… fork_k4_wall_ms=… pooled_claim_p50_ms=…
 * baseline_ctr_runsc_p50_ms=… restore_vs_ctr_runsc=…` (the first three keys first, as before the
 * baseline was added).
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { destination, pino } from "pino";
import { API_VERSION } from "@fast-sandbox/api";
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from "@fast-sandbox/controlplane";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { cleanNamespace, leftovers, removeCgroupTree, removeCtrContainer, runscCtrOptions, timedCtrRun, type CtrOptions } from "./ctr-baseline.js";
import { machine } from "./create.js";
import { formatTable, ratio, summarize, type Summary } from "./stats.js";

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const POOL = "bench-restore";
/** The pool whose agent keeps copies of its template's checkpoint restored ahead. */
const AHEAD_POOL = "bench-restore-ahead";
const AHEAD_CHECKPOINT = "bench-ahead";
const TEMPLATE = "restore-template";
const COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done";

export interface RestoreBenchOptions {
  count: number;
  warmup: number;
  forks: number;
  image: string;
  namespace: string;
  log: (message: string) => void;
}

/** The agent's steps of one restore, as its log reports them (checkpoints.ts). */
export interface RestoreSteps {
  network: Summary;
  snapshot: Summary;
  container: Summary;
  task: Summary;
  /** Waiting for the copy's egress policy to be in force (after Tasks.Create). */
  policy: Summary;
  /** Tasks.Start: `runsc restore`. */
  start: Summary;
  /** The copy's hostname and daemon: one exec, or (a runsc that sets the hostname itself) the helper's signal. */
  identity: Summary;
  /** How many restores gave the identity which way (`exec`, `signal`, `none`: the agent's log). */
  identityBy: Record<string, number>;
  /** How many claimed a network namespace prepared ahead (the others made theirs). */
  networkPrepared: number;
  total: Summary;
}

export interface RestoreBenchResult {
  benchmark: "restore";
  count: number;
  warmup: number;
  forks: number;
  image: string;
  restore: Summary;
  /** The baseline, interleaved with the on-demand restores: `ctr run -d` of the image on the agents' runsc (a cold start). */
  ctrRunsc: Summary;
  /** restore p50 / ctrRunsc p50. */
  restoreVsCtrRunsc: number;
  forkK4Wall: Summary;
  checkpoint: Summary;
  agentSteps: RestoreSteps | undefined;
  /** The agent's steps of every checkpoint (the forks' included): quiesce, runsc checkpoint, resume in place, total. */
  checkpointSteps: { quiesce: Summary; checkpoint: Summary; resume: Summary; total: Summary } | undefined;
  checkpointSizeBytes: number;
  /** Restores that claimed a copy restored ahead; undefined when the run ended before them. */
  pooledClaim: Summary | undefined;
  machine: ReturnType<typeof machine>;
  cleanup: { leftoverTasks: string[]; leftoverContainers: string[]; cgroupDirsLeft: number };
}

export async function runRestoreBench(options: RestoreBenchOptions): Promise<RestoreBenchResult> {
  const { count, warmup, forks, image, namespace, log } = options;
  if (process.getuid?.() !== 0) throw new Error("the benchmark needs root (containerd's socket, cgroups, network namespaces)");
  log(`importing ${image} into containerd namespace ${namespace} (cached)`);
  execFileSync("bash", [join(REPO_ROOT, "scripts/build-base-image.sh"), image, namespace], { stdio: ["ignore", "ignore", "inherit"] });
  await cleanNamespace({ namespace });

  const dataDir = mkdtempSync(join(tmpdir(), "fsb-bench-restore-"));
  const token = randomBytes(24).toString("base64url");
  let controlPlane: EmbeddedControlPlane | undefined;
  let client: FastSandboxClient | undefined;
  const samples = { restore: [] as number[], ctrRunsc: [] as number[], fork: [] as number[], checkpoint: [] as number[], pooled: [] as number[] };
  let sizeBytes = 0;
  let cleanup: RestoreBenchResult["cleanup"] = { leftoverTasks: [], leftoverContainers: [], cgroupDirsLeft: 0 };
  let agentSteps: RestoreSteps | undefined;
  let checkpointSteps: RestoreBenchResult["checkpointSteps"];
  try {
    // The wrapper lives in the data directory, as create.ts's does: it goes when the run's containers have.
    const ctrOptions: CtrOptions = runscCtrOptions(namespace, dataDir);
    const runId = randomBytes(3).toString("hex");
    controlPlane = await startEmbeddedControlPlane({
      dataDir,
      token,
      host: "127.0.0.1",
      port: 0,
      containerdNamespace: namespace,
      cgroupRoot: namespace,
      logger: pino({ name: "fsb-bench", level: "warn" }, destination(2)),
    });
    client = new FastSandboxClient({ url: controlPlane.url, token });
    await client.pools.apply({
      apiVersion: API_VERSION,
      kind: "SandboxPool",
      metadata: { name: POOL, namespace: "default" },
      spec: { capacity: { poolMin: 1, poolMax: 1, bufferMin: 0 }, maxSandboxesPerPod: 8, runtimeType: "gvisor", image, network: { mode: "Isolated" } },
    });
    const c = client;
    await waitForReadyAgent(c, POOL);
    await c.sandboxes.create({ name: TEMPLATE, pool: POOL, image, command: ["sh", "-c", COUNTER] });
    // Some state to carry: the loop has counted for a second.
    await new Promise((done) => setTimeout(done, 1000));
    const checkpoint = await c.checkpoints.create(TEMPLATE, { name: "bench-template" });
    sizeBytes = checkpoint.sizeBytes;
    log(`template checkpointed (${sizeBytes} bytes); ${warmup} warm-up + ${count} measured restores, each beside a 'ctr run -d' on runsc`);

    const restoreOnce = async (round: number): Promise<void> => {
      const name = `restored-${round}`;
      const started = performance.now();
      await c.checkpoints.restore(checkpoint.name, { name });
      const elapsed = performance.now() - started;
      if (round >= warmup) samples.restore.push(elapsed);
      await c.sandboxes.delete(name, { gracePeriodMs: 0 });
    };
    const ctrOnce = async (round: number): Promise<void> => {
      const id = `ctr-${runId}-${round}`;
      const elapsed = await timedCtrRun(ctrOptions, image, id, ["sh", "-c", COUNTER]);
      if (round >= warmup) samples.ctrRunsc.push(elapsed);
      await removeCtrContainer(ctrOptions, id);
    };
    for (let round = 0; round < warmup + count; round++) {
      // Alternate which side goes first, so neither always meets the machine as the other left it.
      const sides = round % 2 === 0 ? [restoreOnce, ctrOnce] : [ctrOnce, restoreOnce];
      for (const side of sides) await side(round);
    }

    log(`${forks} forks of 4 and ${forks} checkpoints`);
    for (let round = 0; round < forks; round++) {
      const checkpointStarted = performance.now();
      const made = await c.checkpoints.create(TEMPLATE, { name: `bench-checkpoint-${round}` });
      samples.checkpoint.push(performance.now() - checkpointStarted);
      await c.checkpoints.delete(made.name);

      const started = performance.now();
      const fork = await c.checkpoints.fork(TEMPLATE, { count: 4 });
      samples.fork.push(performance.now() - started);
      await Promise.all(fork.sandboxes.map((copy) => c.sandboxes.delete(copy.metadata.name, { gracePeriodMs: 0 })));
    }
    await c.checkpoints.delete(checkpoint.name);
    await c.sandboxes.delete(TEMPLATE, { gracePeriodMs: 0 });

    log(`pooled claims: ${warmup} warm-up + ${count} measured restores from copies restored ahead`);
    await c.pools.apply({
      apiVersion: API_VERSION,
      kind: "SandboxPool",
      metadata: { name: AHEAD_POOL, namespace: "default" },
      spec: {
        capacity: { poolMin: 1, poolMax: 1, bufferMin: 0 },
        maxSandboxesPerPod: 8,
        runtimeType: "gvisor",
        image,
        network: { mode: "Isolated" },
        preparedInstances: 2,
        preparedFromCheckpoint: AHEAD_CHECKPOINT,
      },
    });
    await waitForReadyAgent(c, AHEAD_POOL);
    await c.sandboxes.create({ name: `${TEMPLATE}-ahead`, pool: AHEAD_POOL, image, command: ["sh", "-c", COUNTER] });
    await new Promise((done) => setTimeout(done, 1000));
    await c.checkpoints.create(`${TEMPLATE}-ahead`, { name: AHEAD_CHECKPOINT });
    const cp = controlPlane;
    for (let round = 0; round < warmup + count; round++) {
      await waitForStock(cp, AHEAD_POOL, 2, 120_000);
      const name = `claimed-${round}`;
      const started = performance.now();
      await c.checkpoints.restore(AHEAD_CHECKPOINT, { name });
      const elapsed = performance.now() - started;
      if (round >= warmup) samples.pooled.push(elapsed);
      await c.sandboxes.delete(name, { gracePeriodMs: 0 });
    }
    await c.sandboxes.delete(`${TEMPLATE}-ahead`, { gracePeriodMs: 0 });
    await c.pools.delete(AHEAD_POOL);
    agentSteps = agentRestoreSteps(join(dataDir, "agents", `${POOL}-0`, "agent.log"), warmup, count);
    checkpointSteps = agentCheckpointSteps(join(dataDir, "agents", `${POOL}-0`, "agent.log"));
  } finally {
    client?.close();
    await controlPlane?.close();
    await cleanNamespace({ namespace });
    const left = await leftovers({ namespace });
    cleanup = { leftoverTasks: left.tasks, leftoverContainers: left.containers, cgroupDirsLeft: removeCgroupTree(`/${namespace}`) };
    rmSync(dataDir, { recursive: true, force: true });
  }
  const restore = summarize(samples.restore);
  const ctrRunsc = summarize(samples.ctrRunsc);
  return {
    benchmark: "restore",
    count,
    warmup,
    forks,
    image,
    restore,
    ctrRunsc,
    restoreVsCtrRunsc: ratio(restore.p50, ctrRunsc.p50),
    forkK4Wall: summarize(samples.fork),
    checkpoint: summarize(samples.checkpoint),
    agentSteps,
    checkpointSteps,
    checkpointSizeBytes: sizeBytes,
    pooledClaim: samples.pooled.length > 0 ? summarize(samples.pooled) : undefined,
    machine: machine(),
    cleanup,
  };
}

async function waitForReadyAgent(client: FastSandboxClient, pool: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const agents = await client.pools.agents({ pool });
    if (agents.some((agent) => agent.ready)) return;
    if (attempt > 600) throw new Error(`the agent of pool ${pool} did not become ready`);
    await new Promise((done) => setTimeout(done, 50));
  }
}

/** Until the pool's agent reports `target` instances ready (its fsb_agent_prepared_instances gauge). */
async function waitForStock(controlPlane: EmbeddedControlPlane, pool: string, target: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const agent = controlPlane.fleet.listAgents().find((candidate) => candidate.pool === pool);
    if (agent?.endpoint) {
      const text = await (await fetch(`http://${agent.endpoint}/metrics`)).text();
      if (Number(/^fsb_agent_prepared_instances (\d+)$/m.exec(text)?.[1] ?? 0) >= target) return;
    }
    if (performance.now() > deadline) throw new Error(`the agent of pool ${pool} did not restore ${target} copies ahead within ${timeoutMs} ms`);
    await new Promise((done) => setTimeout(done, 20));
  }
}

/** The steps of the on-demand restores (the `count` the agent logged after the warm-up ones). */
function agentRestoreSteps(logPath: string, warmup: number, count: number): RestoreSteps | undefined {
  let text: string;
  try {
    text = readFileSync(logPath, "utf8");
  } catch {
    return undefined;
  }
  type Logged = { msg?: string; totalMs?: number; timings?: Record<string, number>; identityBy?: string; networkPrepared?: boolean };
  const restores = text
    .split("\n")
    .filter((line) => line.includes('"sandbox restored"'))
    .map((line) => JSON.parse(line) as Logged)
    .filter((entry) => entry.timings);
  // The agent logs the on-demand restores first, then the forks'.
  const onDemand = restores.slice(warmup, warmup + count);
  if (onDemand.length === 0) return undefined;
  const step = (key: string) => summarize(onDemand.map((entry) => entry.timings?.[key] ?? 0));
  return {
    network: step("network"),
    snapshot: step("snapshot"),
    container: step("container"),
    task: step("task"),
    policy: step("policy"),
    start: step("start"),
    identity: step("identity"),
    identityBy: onDemand.reduce<Record<string, number>>((counts, entry) => {
      const by = entry.identityBy ?? "exec";
      counts[by] = (counts[by] ?? 0) + 1;
      return counts;
    }, {}),
    networkPrepared: onDemand.filter((entry) => entry.networkPrepared).length,
    total: summarize(onDemand.map((entry) => entry.totalMs ?? 0)),
  };
}

/** The steps of every checkpoint the agent logged (`sandbox checkpointed`). */
function agentCheckpointSteps(logPath: string): RestoreBenchResult["checkpointSteps"] {
  let text: string;
  try {
    text = readFileSync(logPath, "utf8");
  } catch {
    return undefined;
  }
  const timings = text
    .split("\n")
    .filter((line) => line.includes('"sandbox checkpointed"'))
    .map((line) => (JSON.parse(line) as { timings?: Record<string, number> }).timings)
    .filter((entry): entry is Record<string, number> => entry !== undefined);
  if (timings.length === 0) return undefined;
  const step = (key: string) => summarize(timings.map((entry) => entry[key] ?? 0));
  return { quiesce: step("quiesceMs"), checkpoint: step("checkpointMs"), resume: step("resumeMs"), total: step("totalMs") };
}

/** The report: tables, then the RESULT line. */
export function formatRestoreBench(result: RestoreBenchResult): string[] {
  const m = result.machine;
  const lines = [
    `restore: gVisor (runsc through the runc v2 shim), Isolated network, image ${result.image}, checkpoint ${(result.checkpointSizeBytes / 1024).toFixed(0)} KiB; ` +
      `${result.count} measured (+${result.warmup} warm-up) restores, ${result.forks} forks of 4; ${m.cpus} CPUs, ${m.memoryGiB} GiB, kernel ${m.kernel}, node ${m.node}`,
    formatTable([
      { label: "restore on demand (SDK)", summary: result.restore },
      { label: "ctr run -d on runsc (baseline, cold)", summary: result.ctrRunsc },
      { label: "fork K=4, wall (SDK)", summary: result.forkK4Wall },
      { label: "checkpoint + resume (SDK)", summary: result.checkpoint },
      ...(result.pooledClaim ? [{ label: "restore claiming a copy restored ahead (SDK)", summary: result.pooledClaim }] : []),
    ]),
  ];
  const s = result.agentSteps;
  if (s) {
    lines.push(
      "agent steps of each on-demand restore:",
      formatTable([
        { label: "network namespace (at once with the snapshot)", summary: s.network },
        { label: "snapshot (at once with the network)", summary: s.snapshot },
        { label: "container", summary: s.container },
        { label: "Tasks.Create", summary: s.task },
        { label: "egress policy in force (wait)", summary: s.policy },
        { label: "Tasks.Start (runsc restore)", summary: s.start },
        { label: "hostname + daemon (exec or signal)", summary: s.identity },
        { label: "agent total", summary: s.total },
      ]),
      `identity given by: ${Object.entries(s.identityBy)
        .map(([by, n]) => `${by} ${n}`)
        .join(", ")}; network namespace prepared ahead: ${s.networkPrepared} of ${s.total.count}`,
    );
  }
  const c = result.checkpointSteps;
  if (c) {
    lines.push(
      "agent steps of each checkpoint (the forks' included):",
      formatTable([
        { label: "quiesce the daemon (exec)", summary: c.quiesce },
        { label: "runsc checkpoint", summary: c.checkpoint },
        { label: "restore in place", summary: c.resume },
        { label: "agent total", summary: c.total },
      ]),
    );
  }
  lines.push(
    `CLEANUP leftover_containers=${result.cleanup.leftoverContainers.length} leftover_tasks=${result.cleanup.leftoverTasks.length}`,
    `RESULT restore_p50_ms=${result.restore.p50.toFixed(1)} fork_k4_wall_ms=${result.forkK4Wall.p50.toFixed(1)} pooled_claim_p50_ms=${result.pooledClaim ? result.pooledClaim.p50.toFixed(1) : "n/a"} ` +
      `baseline_ctr_runsc_p50_ms=${result.ctrRunsc.p50.toFixed(1)} restore_vs_ctr_runsc=${result.restoreVsCtrRunsc.toFixed(3)}`,
  );
  return lines;
}
