/**
 * `bench create`: sandbox create latency through the SDK and the real HTTP API (loopback) of an
 * in-process embedded control plane, against `ctr run -d` of the same image on the same containerd,
 * measured in the same run.
 *
 * What one fast-sandbox sample is: `FastSandboxClient.sandboxes.create()` from call to resolved
 * promise. CreateSandbox answers only after the agent's containerd Tasks.Start succeeded, so the
 * sample ends with the user's process running. What one baseline sample is: the whole
 * `ctr -n NS run -d IMAGE ID sleep 3600` command (spawn to exit), which also returns after
 * Tasks.Start. Clean-up of either side is never inside a timed region.
 *
 * Fair sharing of machine noise: the run is a series of rounds; a round is a burst of
 * `concurrency` creates of one side (all started together, the round ends when all resolved), then
 * the same burst of the other side. The side that goes first alternates every round
 * (A B, B A, A B, ...). Warm-up rounds run the same way and are not recorded. Every container of
 * both sides stays up until the end, so both sides see the same growing number of running
 * containers.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, totalmem, tmpdir, release } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { destination, pino } from "pino";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { startEmbeddedControlPlane, type EmbeddedControlPlane } from "@fast-sandbox/controlplane";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { cleanNamespace, leftovers, removeCgroupTree, removeCtrContainer, timedCtrRun, type CtrOptions } from "./ctr-baseline.js";
import { ratio, summarize, type Summary } from "./stats.js";

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const HELPER = join(REPO_ROOT, "packages/agent/helper/build/fsb-helper");
const POOL = "bench";

export interface CreateBenchOptions {
  count: number;
  warmup: number;
  concurrency: number;
  image: string;
  /** Dedicated containerd namespace; its containers are removed before and after the run. */
  namespace: string;
  /** Root cgroup of the agents (and of ctr's containers, which go to /<namespace>/<id>). */
  cgroupRoot: string;
  command: string[];
  /**
   * Adds a third side to the rounds, not part of RESULT: the agent's CreateSandbox called directly
   * over the control plane's own agent connection (no SDK, no HTTP API, no store, no registry), and
   * times SDK `get` round trips; the differences locate the control plane's share of a create.
   */
  breakdown: boolean;
  /**
   * Agents in the pool (default 1). Each agent's runc sandboxes share one shim, and the runc v2
   * shim serializes Tasks.Create and Tasks.Start; more agents mean more shims working in parallel.
   */
  agents: number;
  /** Progress and diagnostics (stderr). */
  log: (message: string) => void;
}

export interface CreateBenchResult {
  benchmark: "create";
  count: number;
  warmup: number;
  concurrency: number;
  agents: number;
  image: string;
  containerdNamespace: string;
  command: string[];
  order: string;
  fastSandbox: { create: Summary; delete: Summary | null; deleteErrors: string[]; samplesMs: number[] };
  ctrBaseline: { create: Summary; samplesMs: number[] };
  /** Wall time of the measured rounds of each side (sum of its bursts), and creates per second. */
  wallMs: { fastSandbox: number; ctr: number };
  breakdown?: {
    agentDirectCreate: Summary;
    sdkGetRoundTrip: Summary;
    /** CPU ms per measured fast-sandbox create: this process (SDK + control plane) and the agent processes. */
    cpuMsPerCreate: { sdkAndControlPlane: number; agents: number };
  };
  throughputPerSecond: { fastSandbox: number; ctr: number };
  ratioP50: number;
  machine: { cpus: number; memoryGiB: number; kernel: string; node: string };
  cleanup: { leftoverTasks: string[]; leftoverContainers: string[]; cgroupDirsLeft: number };
}

/** CPU time (user + system, ms) a process has used so far, from /proc/PID/stat; 0 if unknown. */
function processCpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[11], fields[12]: utime, stime (fields 14 and 15 of proc(5)), in clock ticks (100 Hz).
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

/** Runs `task` for every item, at most `limit` at once. */
async function forEachLimited<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await task(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

async function waitForReadyAgents(client: FastSandboxClient, image: string, wanted: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const agents = await client.pools.agents({ pool: POOL });
    if (agents.filter((agent) => agent.ready && agent.images.includes(image)).length >= wanted) return;
    if (Date.now() > deadline) throw new Error(`no ready agent of pool ${POOL} with ${image} after ${timeoutMs} ms: ${JSON.stringify(agents)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function runCreateBench(options: CreateBenchOptions): Promise<CreateBenchResult> {
  const { count, warmup, concurrency, image, namespace, command, log } = options;
  if (process.getuid?.() !== 0) throw new Error("the benchmark needs root (containerd's socket, cgroups)");
  if (!existsSync(HELPER)) throw new Error(`${HELPER} is missing: run 'bash scripts/build-helper.sh' (or 'npm run build')`);
  const ctrOptions: CtrOptions = { namespace };

  log(`importing ${image} into containerd namespace ${namespace} (cached)`);
  execFileSync("bash", [join(REPO_ROOT, "scripts/build-base-image.sh"), image, namespace], { stdio: ["ignore", "ignore", "inherit"] });
  const stale = await cleanNamespace(ctrOptions);
  if (stale.containers > 0 || stale.snapshots > 0) log(`removed leftovers of an earlier run: ${JSON.stringify(stale)}`);

  const runId = randomBytes(3).toString("hex");
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-bench-"));
  const token = randomBytes(24).toString("base64url");
  const created: string[] = [];
  const ctrIds: string[] = [];
  let controlPlane: EmbeddedControlPlane | undefined;
  let client: FastSandboxClient | undefined;
  const fsbSamples: number[] = [];
  const ctrSamples: number[] = [];
  const deleteSamples: number[] = [];
  const deleteErrors: string[] = [];
  const wall = { fastSandbox: 0, ctr: 0 };
  const agentSamples: number[] = [];
  const agentIds: string[] = [];
  const getSamples: number[] = [];
  const cpu = { self: 0, agents: 0 };
  let cleanupResult: CreateBenchResult["cleanup"] = { leftoverTasks: [], leftoverContainers: [], cgroupDirsLeft: 0 };

  try {
    controlPlane = await startEmbeddedControlPlane({
      dataDir,
      token,
      host: "127.0.0.1",
      port: 0,
      containerdNamespace: namespace,
      cgroupRoot: options.cgroupRoot,
      logger: pino({ name: "fsb-bench", level: "warn" }, destination(2)),
    });
    log(`control plane at ${controlPlane.url} (data ${dataDir})`);
    client = new FastSandboxClient({ url: controlPlane.url, token });
    const total = count + warmup;
    const pool: SandboxPool = {
      apiVersion: API_VERSION,
      kind: "SandboxPool",
      metadata: { name: POOL, namespace: "default" },
      spec: {
        // A fixed number of agents (1 by default) holds every sandbox of the run: no agent start-up
        // inside the measured region. Placement prefers the agent with the most free slots.
        capacity: { poolMin: options.agents, poolMax: options.agents, bufferMin: 0 },
        maxSandboxesPerPod: Math.min(1024, Math.ceil(total / options.agents) + concurrency),
        runtimeType: "container",
        image,
      },
    };
    await client.pools.apply(pool);
    const readyStarted = performance.now();
    await waitForReadyAgents(client, image, options.agents, 60_000);
    log(`${options.agents} agent(s) ready after ${(performance.now() - readyStarted).toFixed(0)} ms`);

    const fsbClient = client;
    let index = 0;
    const fsbBurst = async (n: number, record: boolean): Promise<void> => {
      const names = Array.from({ length: n }, () => `b${runId}-${index++}`);
      const agentPids = controlPlane?.pools.listAgentProcesses().map((a) => a.pid) ?? [];
      const selfCpu = process.cpuUsage();
      const agentCpu = agentPids.reduce<number>((sum, pid) => sum + processCpuMs(pid), 0);
      const started = performance.now();
      await Promise.all(
        names.map(async (name) => {
          const t0 = performance.now();
          const sandbox = await fsbClient.sandboxes.create({ name, pool: POOL, image, command });
          const elapsed = performance.now() - t0;
          created.push(name);
          if (sandbox.status?.phase !== "Running") throw new Error(`sandbox ${name} is ${sandbox.status?.phase ?? "without status"}, not Running`);
          if (record) fsbSamples.push(elapsed);
        }),
      );
      if (record) {
        wall.fastSandbox += performance.now() - started;
        const used = process.cpuUsage(selfCpu);
        cpu.self += (used.user + used.system) / 1000;
        cpu.agents += agentPids.reduce<number>((sum, pid) => sum + processCpuMs(pid), 0) - agentCpu;
      }
    };
    const ctrBurst = async (n: number, record: boolean): Promise<void> => {
      const ids = Array.from({ length: n }, () => `ctr-${runId}-${index++}`);
      const started = performance.now();
      await Promise.all(
        ids.map(async (id) => {
          ctrIds.push(id);
          const elapsed = await timedCtrRun(ctrOptions, image, id, command);
          if (record) ctrSamples.push(elapsed);
        }),
      );
      if (record) wall.ctr += performance.now() - started;
    };

    const cp = controlPlane;
    const agentBurst = async (n: number, record: boolean): Promise<void> => {
      const agent = cp.pools.listAgentProcesses()[0]?.client;
      if (!agent) throw new Error("no agent connection for the breakdown");
      await Promise.all(
        Array.from({ length: n }, async () => {
          const name = `a${runId}-${index++}`;
          const sandboxId = `default.${name}.direct`;
          const t0 = performance.now();
          await agent.createSandbox({
            sandboxId,
            namespace: "default",
            name,
            image,
            command,
            args: [],
            envs: [],
            workingDir: "",
            runtimeType: "container",
            cpuMillis: 0,
            memoryBytes: 0n,
            pids: 0,
            slots: 0,
            exposedPorts: [],
          });
          const elapsed = performance.now() - t0;
          agentIds.push(sandboxId);
          if (record) agentSamples.push(elapsed);
        }),
      );
    };
    const sides = options.breakdown ? [fsbBurst, ctrBurst, agentBurst] : [fsbBurst, ctrBurst];
    const rounds = async (n: number, record: boolean, label: string): Promise<void> => {
      let round = 0;
      for (let done = 0; done < n; done += concurrency, round++) {
        const size = Math.min(concurrency, n - done);
        // Rotate which side goes first: A B, B A, ... (A B C, B C A, C A B with the breakdown side).
        for (let k = 0; k < sides.length; k++) await sides[(round + k) % sides.length]!(size, record);
      }
      log(`${label}: ${n} creates per side in ${round} rounds`);
    };
    if (warmup > 0) await rounds(warmup, false, "warm-up");
    await rounds(count, true, "measured");
    if (options.breakdown) {
      for (let i = 0; i < count; i++) {
        const t0 = performance.now();
        await fsbClient.sandboxes.get(created[i % created.length]!);
        getSamples.push(performance.now() - t0);
      }
      const agent = cp.pools.listAgentProcesses()[0]?.client;
      for (const id of agentIds.splice(0)) await agent?.deleteSandbox(id, 1).catch((e: unknown) => log(`direct delete ${id}: ${String(e)}`));
    }

    // Delete every sandbox through the SDK, with the same concurrency; each call resolves when the
    // container, task and snapshot are gone. Grace period 0: the stop is a SIGKILL.
    // A failed delete is counted and reported, not fatal: the clean-up below removes what is left.
    await forEachLimited([...created], concurrency, async (name) => {
      const t0 = performance.now();
      try {
        await fsbClient.sandboxes.delete(name, { gracePeriodMs: 0 });
      } catch (error) {
        deleteErrors.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
        return;
      }
      deleteSamples.push(performance.now() - t0);
      created.splice(created.indexOf(name), 1);
    });
    log(`deleted ${deleteSamples.length} sandboxes${deleteErrors.length ? `; ${deleteErrors.length} deletes failed, first: ${deleteErrors[0]}` : ""}`);
  } finally {
    // Whatever happened: no sandbox, container, task or cgroup of this run survives it.
    if (client && created.length > 0 && deleteSamples.length + deleteErrors.length === 0) {
      // The run failed before its deletes: best effort through the API, then the namespace clean-up.
      const fsb = client;
      await forEachLimited([...created], 4, (name) =>
        fsb.sandboxes.delete(name, { gracePeriodMs: 0 }).catch((e: unknown) => log(`delete ${name}: ${String(e)}`)),
      );
    }
    (client as unknown as { close?: () => void } | undefined)?.close?.();
    await controlPlane?.close();
    await forEachLimited(ctrIds, 4, (id) => removeCtrContainer(ctrOptions, id));
    await cleanNamespace(ctrOptions);
    const left = await leftovers(ctrOptions);
    const cgroupDirsLeft = removeCgroupTree(`/${options.cgroupRoot}`) + (options.cgroupRoot === namespace ? 0 : removeCgroupTree(`/${namespace}`));
    cleanupResult = { leftoverTasks: left.tasks, leftoverContainers: left.containers, cgroupDirsLeft };
    if (left.tasks.length + left.containers.length > 0 || cgroupDirsLeft > 0) log(`clean-up left something behind: ${JSON.stringify(cleanupResult)}`);
    rmSync(dataDir, { recursive: true, force: true });
  }

  const fsbCreate = summarize(fsbSamples);
  const ctrCreate = summarize(ctrSamples);
  return {
    benchmark: "create",
    count,
    warmup,
    concurrency,
    agents: options.agents,
    image,
    containerdNamespace: namespace,
    command,
    order: `rounds of ${concurrency} concurrent create(s) per side; the side going first rotates every round (${options.breakdown ? "fsb ctr agent, ctr agent fsb, agent fsb ctr" : "fsb ctr, ctr fsb"}, ...); warm-up rounds unrecorded`,
    fastSandbox: { create: fsbCreate, delete: deleteSamples.length > 0 ? summarize(deleteSamples) : null, deleteErrors, samplesMs: fsbSamples },
    ctrBaseline: { create: ctrCreate, samplesMs: ctrSamples },
    wallMs: wall,
    ...(options.breakdown
      ? {
          breakdown: {
            agentDirectCreate: summarize(agentSamples),
            sdkGetRoundTrip: summarize(getSamples),
            cpuMsPerCreate: { sdkAndControlPlane: cpu.self / count, agents: cpu.agents / count },
          },
        }
      : {}),
    throughputPerSecond: { fastSandbox: (count / wall.fastSandbox) * 1000, ctr: (count / wall.ctr) * 1000 },
    ratioP50: ratio(fsbCreate.p50, ctrCreate.p50),
    machine: { cpus: cpus().length, memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10, kernel: release(), node: process.version },
    cleanup: cleanupResult,
  };
}
