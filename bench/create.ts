/**
 * `bench create`: sandbox create latency through the SDK and the real HTTP API (loopback) of an
 * in-process embedded control plane, against `ctr run -d` of the same image on the same containerd,
 * measured in the same run. The rounds, the samples and what they mean: create-rounds.ts. This
 * file sets up and removes the embedded side: a dedicated containerd namespace, the control plane
 * with its local agents, and the optional `--breakdown` side (the agent called directly, with the
 * network the control plane would send for the pool: Isolated with the pool's egress policy, or
 * Shared; until 2026-12-06 it always sent Shared, whatever the pool's network).
 *
 * `--prepared`: every burst of every side waits, untimed, until each agent's stock is full again.
 * The refills therefore run outside every timed region: the CPU per create and the creates per
 * second of such a run count the claims, not the refills (the report says so).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, totalmem, tmpdir, release } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { destination, pino } from "pino";
import { egressPolicyOf, type NetworkMode, type RuntimeType } from "@fast-sandbox/api";
import { startEmbeddedControlPlane, type AgentSandboxSpec, type EmbeddedControlPlane } from "@fast-sandbox/controlplane";
import { benchPool, CreateRounds, type Burst } from "./create-rounds.js";
import { cleanNamespace, leftovers, removeCgroupTree, runscCtrOptions, type CtrOptions } from "./ctr-baseline.js";
import { SdkProcess } from "./sdk-process.js";
import { summarize, type Summary } from "./stats.js";

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
   * Then agent calls with an empty answer (the control plane → agent hop alone), and the means of
   * the control plane's CreateSandbox handler and of the agent's claims from their own histograms.
   */
  breakdown: boolean;
  /**
   * Agents in the pool (default 1). Each agent's runc sandboxes share one shim, and the runc v2
   * shim serializes Tasks.Create and Tasks.Start; more agents mean more shims working in parallel.
   */
  agents: number;
  /** The bench pool's network mode. */
  network: NetworkMode;
  /**
   * The bench pool's runtime. gvisor: the baseline's `ctr run` takes the runsc the agents take
   * (FSB_RUNSC_PATH, default /usr/bin/runsc) through the same wrapper as a Shared sandbox
   * (--network=none, the memory root overlay, host FIFOs: gvisor-binary.ts).
   */
  runtimeType: RuntimeType;
  /**
   * The pool keeps prepared instances (max(2, concurrency) per agent, at most 64) and every burst
   * of either side starts once every agent's stock is full again: creates claim prepared instances,
   * and no refill runs during any side's burst.
   */
  prepared: boolean;
  /** After every round, delete both sides' containers of the round, untimed (create-rounds.ts; `bench burst`). @default false */
  clearAfterEachRound?: boolean;
  /**
   * The fast-sandbox side's SDK in a process of its own (sdk-process.ts) instead of this process,
   * which also runs the control plane. @default false
   */
  sdkProcess?: boolean;
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
  /** The pool's runtime, and the baseline's (`ctr run --runc-binary` a runsc wrapper for gvisor). */
  runtimeType: RuntimeType;
  containerdNamespace: string;
  command: string[];
  /** The pool's network (and, with `breakdown`, the network of the agent's direct creates). */
  network: NetworkMode;
  /**
   * Prepared instances each agent keeps (`--prepared`; 0: none, every create takes the cold path).
   * When > 0, every burst of either side started once each agent's stock was full again.
   */
  prepared: number;
  /** Whether the timed SDK creates ran in a process of their own (`--sdk-process`) or in the bench's, beside the control plane. */
  sdkProcess: boolean;
  order: string;
  fastSandbox: { create: Summary; delete: Summary | null; deleteErrors: string[]; samplesMs: number[] };
  ctrBaseline: { create: Summary; samplesMs: number[] };
  /** Wall time of the measured rounds of each side (sum of its bursts), and creates per second. */
  wallMs: { fastSandbox: number; ctr: number };
  /** Wall time of each measured burst of each side, in the order they ran. */
  burstWallMs: { fastSandbox: number[]; ctr: number[] };
  breakdown?: {
    agentDirectCreate: Summary;
    sdkGetRoundTrip: Summary;
    /** CPU ms per measured fast-sandbox create: this process (SDK + control plane) and the agent processes. */
    cpuMsPerCreate: { sdkAndControlPlane: number; agents: number };
    /**
     * Means over every SDK create of the run (warm-up included), from the processes' own histograms:
     * the control plane's CreateSandbox handler (fsb_sandbox_create_duration_seconds: from the API
     * interceptor to the answer, the agent call inside), and the agent's claim of a prepared instance
     * (fsb_agent_create_step_duration_seconds{step="claim"}; null when no create claimed one).
     */
    handlerMeanMs: { controlPlane: number | null; agentClaim: number | null };
    /** Round trips of an agent call with an empty answer (ListCheckpoints of a runc pool): the control plane → agent hop alone. */
    agentRpcRoundTrip: Summary | null;
  };
  /** Only for `--kubernetes` (create-kubernetes.ts): where the fast-sandbox side ran. */
  kubernetes?: {
    /** The controller replica the SDK called (`http://<Pod IP>:7070`). */
    controllerUrl: string;
    /** Ready controller replicas of the Deployment. */
    controllerReplicas: number;
    /** The pool's Kubernetes namespace. */
    namespace: string;
    /** Cluster start + deployment until the controller was Available, and until the pool's agents were ready (ms). */
    setupMs: { clusterAndDeployment: number; poolReady: number };
  };
  throughputPerSecond: { fastSandbox: number; ctr: number };
  ratioP50: number;
  machine: { cpus: number; memoryGiB: number; kernel: string; node: string };
  /** What the run left; `problems` (only with `--kubernetes`): what the cluster teardown reported left. */
  cleanup: { leftoverTasks: string[]; leftoverContainers: string[]; cgroupDirsLeft: number; problems?: string[] };
}

export function machine(): CreateBenchResult["machine"] {
  return { cpus: cpus().length, memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10, kernel: release(), node: process.version };
}

export async function runCreateBench(options: CreateBenchOptions): Promise<CreateBenchResult> {
  const { count, warmup, concurrency, image, namespace, command, log } = options;
  if (process.getuid?.() !== 0) throw new Error("the benchmark needs root (containerd's socket, cgroups)");
  if (!existsSync(HELPER)) throw new Error(`${HELPER} is missing: run 'bash scripts/build-helper.sh' (or 'npm run build')`);
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-bench-"));
  let ctrOptions: CtrOptions = { namespace };
  log(`importing ${image} into containerd namespace ${namespace} (cached)`);
  let stale: Awaited<ReturnType<typeof cleanNamespace>>;
  try {
    if (options.runtimeType === "gvisor") ctrOptions = runscCtrOptions(namespace, dataDir);
    execFileSync("bash", [join(REPO_ROOT, "scripts/build-base-image.sh"), image, namespace], { stdio: ["ignore", "ignore", "inherit"] });
    stale = await cleanNamespace(ctrOptions);
  } catch (error) {
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  if (stale.containers > 0 || stale.snapshots > 0) log(`removed leftovers of an earlier run: ${JSON.stringify(stale)}`);

  const preparedInstances = options.prepared ? Math.min(64, Math.max(2, concurrency)) : 0;
  const token = randomBytes(24).toString("base64url");
  let controlPlane: EmbeddedControlPlane | undefined;
  let rounds: CreateRounds | undefined;
  let sdkProcess: SdkProcess | undefined;
  const agentSamples: number[] = [];
  const agentIds: string[] = [];
  let getSamples: number[] = [];
  let handlerMeanMs: { controlPlane: number | null; agentClaim: number | null } = { controlPlane: null, agentClaim: null };
  let agentRpcSamples: number[] = [];
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
    const cp = controlPlane;
    if (options.sdkProcess) {
      sdkProcess = await SdkProcess.start(cp.url, token);
      log(`SDK process pid ${sdkProcess.pid}`);
    }
    const run = new CreateRounds({
      target: { url: cp.url, token, pool: POOL },
      ctr: ctrOptions,
      count,
      warmup,
      concurrency,
      image,
      command,
      log,
      agentPids: () => cp.fleet.listAgentProcesses().map((a) => a.pid),
      ...(options.prepared ? { beforeBurst: () => waitForPreparedStock(cp, preparedInstances, 60_000) } : {}),
      ...(options.clearAfterEachRound ? { clearAfterEachRound: true } : {}),
      ...(sdkProcess ? { sdkProcess } : {}),
    });
    rounds = run;
    // The breakdown side's sandboxes, created on the agent directly, hold slots of the first agent too.
    const total = (count + warmup) * (options.breakdown ? 2 : 1);
    const pool = benchPool({
      name: POOL,
      namespace: "default",
      image,
      agents: options.agents,
      total,
      concurrency,
      network: options.network,
      preparedInstances,
      runtimeType: options.runtimeType,
    });
    await run.client.pools.apply(pool);
    // What the control plane sends an agent for this pool (sandbox-network.ts, instanceNetwork), so
    // the direct side creates the same sandbox: on an Isolated pool a Shared create would skip the
    // network namespace and never match the pool's prepared instances.
    const directNetwork: AgentSandboxSpec["network"] =
      options.network === "Isolated"
        ? { mode: "Isolated", egress: egressPolicyOf(pool.spec), allowSandboxToSandbox: pool.spec.network?.allowSandboxToSandbox ?? false }
        : { mode: "Shared" };
    const readyStarted = performance.now();
    await run.waitForReadyAgents(options.agents, 60_000);
    log(`${options.agents} agent(s) ready after ${(performance.now() - readyStarted).toFixed(0)} ms`);

    const agentBurst: Burst = async (n, record) => {
      const agent = cp.connections.get(cp.fleet.listAgents()[0]?.name ?? "");
      if (!agent) throw new Error("no agent connection for the breakdown");
      await Promise.all(
        Array.from({ length: n }, async () => {
          const name = `a${run.runId}-${run.nextIndex()}`;
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
            runtimeType: options.runtimeType,
            exposedPorts: [],
            // No `slots`: the direct side's sandboxes all go to the first agent, beyond its share of the pool's slots.
            network: directNetwork,
          });
          const elapsed = performance.now() - t0;
          agentIds.push(sandboxId);
          if (record) agentSamples.push(elapsed);
        }),
      );
    };
    await run.run(options.breakdown ? [agentBurst] : []);
    if (options.breakdown) {
      getSamples = await run.getRoundTrips(count);
      handlerMeanMs = await handlerMeans(cp);
      agentRpcSamples = await emptyAgentRoundTrips(cp, count);
      const agent = cp.connections.get(cp.fleet.listAgents()[0]?.name ?? "");
      for (const id of agentIds.splice(0)) await agent?.deleteSandbox(id, 1).catch((e: unknown) => log(`direct delete ${id}: ${String(e)}`));
    }
    await run.deleteSandboxes();
  } finally {
    // Whatever happened: no sandbox, container, task or cgroup of this run survives it.
    await rounds?.close();
    await sdkProcess?.close();
    await controlPlane?.close();
    await rounds?.removeCtrContainers();
    await cleanNamespace(ctrOptions);
    const left = await leftovers(ctrOptions);
    const cgroupDirsLeft = removeCgroupTree(`/${options.cgroupRoot}`) + (options.cgroupRoot === namespace ? 0 : removeCgroupTree(`/${namespace}`));
    cleanupResult = { leftoverTasks: left.tasks, leftoverContainers: left.containers, cgroupDirsLeft };
    if (left.tasks.length + left.containers.length > 0 || cgroupDirsLeft > 0) log(`clean-up left something behind: ${JSON.stringify(cleanupResult)}`);
    rmSync(dataDir, { recursive: true, force: true });
  }

  const measured = rounds.results();
  return {
    benchmark: "create",
    count,
    warmup,
    concurrency,
    agents: options.agents,
    image,
    runtimeType: options.runtimeType,
    containerdNamespace: namespace,
    command,
    network: options.network,
    prepared: preparedInstances,
    sdkProcess: options.sdkProcess ?? false,
    order: rounds.order(options.breakdown ? 1 : 0),
    fastSandbox: measured.fastSandbox,
    ctrBaseline: measured.ctrBaseline,
    wallMs: measured.wallMs,
    burstWallMs: measured.burstWallMs,
    ...(options.breakdown
      ? {
          breakdown: {
            agentDirectCreate: summarize(agentSamples),
            sdkGetRoundTrip: summarize(getSamples),
            cpuMsPerCreate: { sdkAndControlPlane: rounds.cpu.self / count, agents: rounds.cpu.agents / count },
            handlerMeanMs,
            agentRpcRoundTrip: agentRpcSamples.length > 0 ? summarize(agentRpcSamples) : null,
          },
        }
      : {}),
    throughputPerSecond: measured.throughputPerSecond,
    ratioP50: measured.ratioP50,
    machine: machine(),
    cleanup: cleanupResult,
  };
}

/** A histogram's sum / count in a Prometheus text exposition, in ms; null when it counted nothing. */
function histogramMeanMs(text: string, name: string, labels: string): number | null {
  const value = (suffix: string) => Number(new RegExp(`^${name}_${suffix}\\{${labels}\\} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
  const count = value("count");
  return count > 0 ? (value("sum") / count) * 1000 : null;
}

/** The control plane's create handler and the first agent's claim, as their own histograms saw them. */
async function handlerMeans(cp: EmbeddedControlPlane): Promise<{ controlPlane: number | null; agentClaim: number | null }> {
  const controlPlane = histogramMeanMs(await (await fetch(`${cp.url}/metrics`)).text(), "fsb_sandbox_create_duration_seconds", 'outcome="ok"');
  const endpoint = cp.fleet.listAgents()[0]?.endpoint;
  const agentClaim = endpoint
    ? histogramMeanMs(await (await fetch(`http://${endpoint}/metrics`)).text(), "fsb_agent_create_step_duration_seconds", 'step="claim"')
    : null;
  return { controlPlane, agentClaim };
}

/**
 * `n` calls of the first agent's ListCheckpoints (an empty answer for a runc pool: no containerd,
 * no disk) over the control plane's own connection, 20 ms apart as the creates are: one hop's cost.
 */
async function emptyAgentRoundTrips(cp: EmbeddedControlPlane, n: number): Promise<number[]> {
  const agent = cp.connections.get(cp.fleet.listAgents()[0]?.name ?? "") as Partial<{ listCheckpoints(): Promise<unknown[]> }> | undefined;
  if (!agent?.listCheckpoints) return [];
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    const t0 = performance.now();
    await agent.listCheckpoints();
    samples.push(performance.now() - t0);
  }
  return samples;
}

/** Until every agent of the control plane reports `target` prepared instances (its /metrics gauge). */
async function waitForPreparedStock(cp: EmbeddedControlPlane, target: number, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const counts = await Promise.all(
      cp.fleet.listAgents().map(async (agent) => {
        if (!agent.endpoint) return 0;
        const text = await (await fetch(`http://${agent.endpoint}/metrics`)).text();
        return Number(/^fsb_agent_prepared_instances (\d+)$/m.exec(text)?.[1] ?? 0);
      }),
    );
    if (counts.length > 0 && counts.every((count) => count >= target)) return;
    if (performance.now() > deadline) throw new Error(`the agents' prepared instances did not reach ${target} within ${timeoutMs} ms: ${counts.join(", ")}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
