/**
 * `bench scale`: the control plane's footprint at scale, in three parts.
 *
 * 1. Sandboxes over simulated agents. The embedded control plane (registry, pool controller, sandbox
 *    reconciler, allocation sync, agent connections and heartbeats, SQLite store on disk, fast-path
 *    HTTP/Connect API) runs in a child process (scale-control-plane.ts) from the built packages, with
 *    plain node (no tsx: what `fsb up` runs) and the control plane's process settings
 *    (CONTROL_PLANE_NODE_FLAGS and CONTROL_PLANE_ENV, as every control plane starts; since
 *    2026-12-06), so its memory is its own; only its agents are simulated
 *    in memory (simulated-agent.ts: they answer at once and create no container). The bench, through
 *    the SDK (`FastSandboxClient`, HTTP/2 on loopback), applies `pools` pools with `agents` agents in
 *    all (poolMin = poolMax), waits until they are ready, creates `sandboxes` sandboxes
 *    (`concurrency` in flight), then times, one call at a time: `gets` gets of random sandboxes,
 *    `lists` lists of all of them (`sandboxes.list()`: the SDK reads them in pages of 500 and the
 *    time is that of every page),
 *    and `creates` more creates (each deleted after the measured ones, so memory is read at exactly
 *    `sandboxes`). Memory: the child's `process.memoryUsage().rss` after full GCs (`--expose-gc`,
 *    three collections, a `settleMs` pause, one more), read with 500 agents' heartbeats running,
 *    twice at `sandboxes`: right after populating and after the timed calls. RESULT's
 *    `controlplane_rss_*` is the larger of the two (until 2026-12-06 it was the second, which is
 *    usually lower: the allocator has given back some of what the populating burst took).
 *    What is real and what is simulated there:
 *    - real, in the measured process: the control plane's code and data at that scale — registry,
 *      reconcilers, the store (SQLite on disk, its cache), the API server with the bench's one
 *      HTTP/2 session, the per-agent bookkeeping and heartbeat timers (a Status call to every agent
 *      every interval, its answer handled as a real one);
 *    - simulated: the agents. The simulated agents run inside the measured process (its
 *      `agents` port, scale-control-plane.ts): there is no agent process, no HTTP/2 session and no
 *      Connect client to any of the 500 agents (each `AgentClient` is an in-memory object), no
 *      protobuf encoding of a call or a heartbeat, no container. A real fleet's per-agent sessions,
 *      clients and buffers (and, embedded, 500 supervised child processes' handles) are therefore
 *      not in the figure; the simulated agents' own memory (every agent's sandbox records, 10,000
 *      in all, its images, the copies each Status answer makes) is in it. The RSS is the control
 *      plane's at that scale without its connections to agents, plus the simulation's state.
 * 2. An idle agent. A second child starts the embedded control plane with real agents (as `fsb up`:
 *    LocalAgentProcess, the built agent run by plain node, on this host's containerd, namespace and
 *    cgroup `fsb-bench-scale`) and one pool of one agent that never gets a sandbox; VmRSS of the
 *    agent's process from /proc/PID/status every second. An idle agent's memory saw-tooths: its
 *    start-up garbage goes at the first full GC (some 10–20 s in), then heartbeat garbage builds up
 *    slowly until the next one. The figure is the median of the samples of the `idleAgentWindowMs`
 *    after `idleAgentSettleMs` (lowest and highest alongside). Only the agent's own Node.js
 *    process is counted: the processes it keeps up on containerd are not — its shim anchors (the
 *    `fsb-anchor.<agent>.<n>` containers that keep its shared runc shims alive), each a
 *    containerd-shim-runc-v2 plus the anchor's own process — nor what containerd holds for it.
 *    Needs root and containerd; `--skip-idle-agent` leaves it out.
 * 3. Placement at `placementAgents` agents. In this process, the registry (AgentRegistry) alone: one
 *    pool of that many agents (16 slots each, each holding the base image and one of 8 others, an
 *    address each as Pods have) half full; then `placements` timed `place` calls (hrtime around the
 *    call alone), each followed by the release of a random sandbox (untimed) so the fill stays; after
 *    as many untimed rounds to warm up. The requests ask for one of the 8 images, or (1 in 10) an
 *    image no agent holds. A second scenario adds an exposed port 8080 to 1 in 10 sandboxes (Shared
 *    network), the case where `place` walks past agents already using it.
 *
 * The bench builds the packages the child runs (`tsc -b` of api, agent, janitor, controlplane) first.
 *
 * Units: the memory tables are in MiB (2^20 bytes). The RESULT line gives each memory figure twice:
 * `…_rss_mib` (MiB) and `…_rss_mb` (decimal MB, 10^6 bytes: issue 10's goals are written in MB). Until
 * 2026-12-06 the RESULT keys `controlplane_rss_mb` and `agent_idle_rss_mb` carried the MiB value.
 */
import { execFileSync, fork, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { API_VERSION, type SandboxPool } from "@fast-sandbox/api";
import { AgentRegistry, CONTROL_PLANE_NODE_FLAGS, controlPlaneEnv, type PlacementRequest } from "@fast-sandbox/controlplane";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { forEachLimited } from "./create-rounds.js";
import { machine } from "./create.js";
import { cleanNamespace, leftovers, removeCgroupTree } from "./ctr-baseline.js";
import {
  IDLE_AGENT_NAMESPACE,
  procStatusMemory,
  type MemoryReport,
  type ProcStatusMemory,
  type ScaleChildMessage,
  type ScaleChildRequest,
} from "./scale-protocol.js";
import { NearMaxMarks, percentileOfSorted } from "./stats.js";

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BENCH_DIR = join(REPO_ROOT, "bench");
/** Where the child's files are transpiled to: inside the repository, so that they resolve its node_modules (`.cache/` is ignored by git). */
const CHILD_DIR = join(REPO_ROOT, ".cache", "bench-scale");
const CHILD_SOURCES = ["scale-control-plane.ts", "scale-protocol.ts", "simulated-agent.ts"];
/** The packages the child runs from dist. */
const BUILT_PACKAGES = ["api", "controlplane", "agent", "janitor"];
const IMAGE = "fast-sandbox.io/base:latest";
const HELPER = join(REPO_ROOT, "packages/agent/helper/build/fsb-helper");

export interface ScaleBenchOptions {
  /** Sandboxes created over the simulated agents. @default 10000 */
  sandboxes: number;
  /** Simulated agents, over all pools. @default 500 */
  agents: number;
  /** Pools the agents are split over (evenly). @default 5 */
  pools: number;
  /** Creates in flight while populating. @default 32 */
  concurrency: number;
  /** Timed gets, lists and creates at full size. @default 1000, 20, 200 */
  gets: number;
  lists: number;
  creates: number;
  /** Pause between the full GCs and the memory reading. @default 3000 */
  settleMs: number;
  /** Leaves out the idle agent (part 2: needs root and containerd). */
  skipIdleAgent: boolean;
  /** How long the idle agent runs before the samples that count, and how long they are taken. @default 20000, 20000 */
  idleAgentSettleMs: number;
  idleAgentWindowMs: number;
  /** Agents of the placement benchmark, and timed placements per scenario. @default 10000, 200000 */
  placementAgents: number;
  placements: number;
  log: (message: string) => void;
}

/** Latency percentiles of a timed call; milliseconds, or microseconds for placements. */
export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export interface ScaleBenchResult {
  benchmark: "scale";
  sandboxes: number;
  agents: number;
  pools: number;
  slotsPerAgent: number;
  concurrency: number;
  machine: ReturnType<typeof machine>;
  /** Pools applied until every agent was ready (ms). */
  agentsReadyMs: number;
  populate: { latencyMs: Percentiles; wallMs: number; perSecond: number };
  latencyMs: { get: Percentiles; list: Percentiles; create: Percentiles; delete: Percentiles };
  /** Sandboxes one list returned (every one, over all its pages). */
  listedSandboxes: number;
  /**
   * The control plane's memory: started (imports, no pool), agents ready (no sandbox), populated (before
   * the timed calls) and at full size after them (the RESULT: what the lists of every sandbox left).
   */
  controlPlane: {
    started: MemoryReport;
    agentsReady: MemoryReport;
    populated: MemoryReport;
    full: MemoryReport;
    registry: { agents: number; placements: number };
  };
  /** Undefined when skipped. */
  idleAgent: IdleAgentResult | undefined;
  placement: { agents: number; slotsPerAgent: number; fill: number; scenarios: PlacementScenarioResult[] };
}

export interface IdleAgentResult {
  /** One a second from the agent's start (`atMs` after the control plane was ready). */
  samples: (ProcStatusMemory & { atMs: number })[];
  settleMs: number;
  windowMs: number;
  /** VmRSS over the window (kB): median (the figure), lowest, highest; RssAnon and RssFile medians. */
  vmRssKb: { median: number; min: number; max: number };
  rssAnonKb: number;
  rssFileKb: number;
  /** Containers and tasks left in the agent's containerd namespace (none expected). */
  leftovers: string[];
}

export interface PlacementScenarioResult {
  label: string;
  latencyUs: Percentiles;
  /** Agents `place` looked at (port checks): mean and max. */
  inspectedMean: number;
  inspectedMax: number;
}

export function percentiles(values: ArrayLike<number>): Percentiles {
  const sorted = Array.from(values).sort((a, b) => a - b);
  if (sorted.length === 0) throw new RangeError("percentiles of an empty sample");
  let sum = 0;
  for (const value of sorted) sum += value;
  return {
    count: sorted.length,
    p50: percentileOfSorted(sorted, 50),
    p90: percentileOfSorted(sorted, 90),
    p99: percentileOfSorted(sorted, 99),
    max: sorted[sorted.length - 1]!,
    mean: sum / sorted.length,
  };
}

/**
 * A fixed-width table of percentile rows. A p90 or p99 of too few samples to be more than the
 * largest ones is marked, with a note line under the table (stats.ts, percentileNearMax).
 */
export function formatPercentileTable(unit: string, rows: readonly { label: string; summary: Percentiles }[], digits = 2): string {
  const columns = ["count", "p50", "p90", "p99", "max", "mean"] as const;
  const labelWidth = Math.max(unit.length, ...rows.map((row) => row.label.length));
  const cell = (text: string) => text.padStart(10);
  const header = `${unit.padEnd(labelWidth)}${columns.map((c) => cell(c)).join("")}`;
  const marks = new NearMaxMarks();
  const value = (summary: Percentiles, column: (typeof columns)[number]): string => {
    if (column === "count") return String(summary.count);
    return marks.cell(summary[column].toFixed(digits), column === "p90" ? 90 : column === "p99" ? 99 : undefined, summary.count);
  };
  const lines = rows.map(({ label, summary }) => `${label.padEnd(labelWidth)}${columns.map((c) => cell(value(summary, c))).join("")}`);
  const note = marks.note();
  return [header, ...lines, ...(note ? [note] : [])].join("\n");
}

export async function runScaleBench(options: ScaleBenchOptions): Promise<ScaleBenchResult> {
  const { log } = options;
  if (options.pools > options.agents) throw new Error(`--pools (${options.pools}) must not exceed --agents (${options.agents})`);
  buildPackages(log);
  const childPath = transpileChild();

  const part1 = await measureSandboxesAtScale(childPath, options);
  let idleAgent: ScaleBenchResult["idleAgent"];
  if (options.skipIdleAgent) log("idle agent: skipped (--skip-idle-agent)");
  else idleAgent = await measureIdleAgent(childPath, options);
  log(`placement: ${options.placementAgents} agents, ${options.placements} timed placements per scenario`);
  const placement = measurePlacement(options.placementAgents, options.placements);
  return { benchmark: "scale", machine: machine(), ...part1, idleAgent, placement };
}

// ---------------------------------------------------------------- part 1: sandboxes at scale

async function measureSandboxesAtScale(
  childPath: string,
  options: ScaleBenchOptions,
): Promise<Omit<ScaleBenchResult, "benchmark" | "machine" | "idleAgent" | "placement">> {
  const { log, sandboxes, agents, pools: poolCount, concurrency } = options;
  // Room for every sandbox and the timed creates, with a quarter to spare: placement never waits for capacity.
  const slotsPerAgent = Math.min(1024, Math.ceil(((sandboxes + options.creates) * 1.25) / agents));
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-bench-scale-"));
  const child = await ControlPlaneChild.start(childPath, "simulated", dataDir);
  const client = new FastSandboxClient({ url: child.ready.url, token: child.ready.token });
  try {
    log(`control plane pid ${child.ready.pid} at ${child.ready.url} (data ${dataDir}), RSS ${mib(child.ready.memory.rssBytes)} MiB at start`);
    const started = (await child.memory(options.settleMs)).memory;

    const pools = Array.from({ length: poolCount }, (_, index): SandboxPool => {
      const size = Math.floor(agents / poolCount) + (index < agents % poolCount ? 1 : 0);
      return {
        apiVersion: API_VERSION,
        kind: "SandboxPool",
        metadata: { name: `scale-${index}`, namespace: "default" },
        spec: { capacity: { poolMin: size, poolMax: size, bufferMin: 0 }, maxSandboxesPerPod: slotsPerAgent, runtimeType: "container", image: IMAGE },
      };
    });
    const applied = performance.now();
    for (const pool of pools) await client.pools.apply(pool);
    await waitFor(
      async () => {
        const listed = await client.pools.list();
        return pools.every((pool) => listed.find((p) => p.metadata.name === pool.metadata.name)?.status?.readyAgents === pool.spec.capacity.poolMin);
      },
      120_000,
      `${agents} simulated agents ready`,
    );
    const agentsReadyMs = performance.now() - applied;
    log(`${agents} agents in ${poolCount} pools ready in ${(agentsReadyMs / 1000).toFixed(1)} s (${slotsPerAgent} slots each)`);
    const agentsReady = (await child.memory(options.settleMs)).memory;

    const names = Array.from({ length: sandboxes }, (_, i) => `scale-${i}`);
    const populateSamples = new Float64Array(sandboxes);
    let done = 0;
    const populateStart = performance.now();
    await forEachLimited(
      names.map((name, index) => ({ name, index })),
      concurrency,
      async ({ name, index }) => {
        const t0 = performance.now();
        await client.sandboxes.create({ name, pool: pools[index % poolCount]!.metadata.name, image: IMAGE, command: ["sleep", "3600"] });
        populateSamples[index] = performance.now() - t0;
        if (++done % 1000 === 0 || done === sandboxes) log(`created ${done}/${sandboxes}`);
      },
    );
    const populateWallMs = performance.now() - populateStart;
    const populated = (await child.memory(options.settleMs)).memory;

    const getSamples: number[] = [];
    for (let i = 0; i < options.gets; i++) {
      const name = names[Math.floor(Math.random() * names.length)]!;
      const t0 = performance.now();
      await client.sandboxes.get(name);
      getSamples.push(performance.now() - t0);
    }
    log(`${options.gets} gets done`);
    const listSamples: number[] = [];
    let listedSandboxes = 0;
    for (let i = 0; i < options.lists; i++) {
      const t0 = performance.now();
      const listed = await client.sandboxes.list();
      listSamples.push(performance.now() - t0);
      listedSandboxes = listed.length;
    }
    if (listedSandboxes !== sandboxes) throw new Error(`a list returned ${listedSandboxes} sandboxes, ${sandboxes} expected`);
    log(`${options.lists} lists of ${listedSandboxes} done`);
    const createSamples: number[] = [];
    const extra: string[] = [];
    for (let i = 0; i < options.creates; i++) {
      const name = `scale-extra-${i}`;
      const t0 = performance.now();
      await client.sandboxes.create({ name, pool: pools[i % poolCount]!.metadata.name, image: IMAGE, command: ["sleep", "3600"] });
      createSamples.push(performance.now() - t0);
      extra.push(name);
    }
    const deleteSamples: number[] = [];
    for (const name of extra) {
      const t0 = performance.now();
      await client.sandboxes.delete(name, { gracePeriodMs: 0 });
      deleteSamples.push(performance.now() - t0);
    }
    log(`${options.creates} creates and deletes done`);

    const full = await child.memory(options.settleMs);
    if (full.registry.placements !== sandboxes || full.simulatedSandboxes !== sandboxes) {
      throw new Error(
        `at full size the registry holds ${full.registry.placements} placements and the agents ${full.simulatedSandboxes} sandboxes, ${sandboxes} expected`,
      );
    }
    return {
      sandboxes,
      agents,
      pools: poolCount,
      slotsPerAgent,
      concurrency,
      agentsReadyMs,
      populate: { latencyMs: percentiles(populateSamples), wallMs: populateWallMs, perSecond: (sandboxes / populateWallMs) * 1000 },
      latencyMs: { get: percentiles(getSamples), list: percentiles(listSamples), create: percentiles(createSamples), delete: percentiles(deleteSamples) },
      listedSandboxes,
      controlPlane: { started, agentsReady, populated, full: full.memory, registry: full.registry },
    };
  } finally {
    client.close();
    await child.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- part 2: an idle agent

async function measureIdleAgent(childPath: string, options: ScaleBenchOptions): Promise<ScaleBenchResult["idleAgent"]> {
  const { log } = options;
  if (process.getuid?.() !== 0) throw new Error("the idle agent needs root (containerd's socket, cgroups); --skip-idle-agent leaves it out");
  if (!existsSync("/run/containerd/containerd.sock"))
    throw new Error("containerd is not running (bash scripts/start-containerd.sh); --skip-idle-agent leaves it out");
  if (!existsSync(HELPER)) throw new Error(`${HELPER} is missing: run 'bash scripts/build-helper.sh' (or 'npm run build')`);
  const ctrOptions = { namespace: IDLE_AGENT_NAMESPACE };
  await cleanNamespace(ctrOptions).catch(() => undefined);
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-bench-scale-agent-"));
  const child = await ControlPlaneChild.start(childPath, "idle-agent", dataDir);
  const samples: IdleAgentResult["samples"] = [];
  try {
    const pid = child.ready.agentPid;
    if (!pid) throw new Error("the idle-agent control plane reported no agent process");
    log(`idle agent pid ${pid}; its memory every second for ${(options.idleAgentSettleMs + options.idleAgentWindowMs) / 1000} s`);
    const started = performance.now();
    for (;;) {
      const atMs = performance.now() - started;
      samples.push({ ...procStatusMemory(pid), atMs });
      if (atMs >= options.idleAgentSettleMs + options.idleAgentWindowMs) break;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  } finally {
    await child.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
  await cleanNamespace(ctrOptions).catch(() => undefined);
  const left = await leftovers(ctrOptions).catch(() => ({ tasks: [], containers: [] }));
  removeCgroupTree(`/${IDLE_AGENT_NAMESPACE}`);
  const window = samples.filter((sample) => sample.atMs >= options.idleAgentSettleMs);
  const vmRss = percentiles(window.map((sample) => sample.vmRssKb));
  return {
    samples,
    settleMs: options.idleAgentSettleMs,
    windowMs: options.idleAgentWindowMs,
    vmRssKb: { median: vmRss.p50, min: Math.min(...window.map((sample) => sample.vmRssKb)), max: vmRss.max },
    rssAnonKb: percentiles(window.map((sample) => sample.rssAnonKb)).p50,
    rssFileKb: percentiles(window.map((sample) => sample.rssFileKb)).p50,
    leftovers: [...left.tasks.map((t) => `task ${t}`), ...left.containers.map((c) => `container ${c}`)],
  };
}

// ---------------------------------------------------------------- part 3: placement

const PLACEMENT_SLOTS = 16;
const PLACEMENT_IMAGES = 8;

function measurePlacement(agentCount: number, placements: number): ScaleBenchResult["placement"] {
  const scenarios = [
    { label: "place (Isolated: no ports)", portShare: 0 },
    { label: "place (1 in 10 with port 8080)", portShare: 0.1 },
  ];
  return {
    agents: agentCount,
    slotsPerAgent: PLACEMENT_SLOTS,
    fill: 0.5,
    scenarios: scenarios.map(({ label, portShare }) => placementScenario(label, agentCount, placements, portShare)),
  };
}

function placementScenario(label: string, agentCount: number, placements: number, portShare: number): PlacementScenarioResult {
  const registry = new AgentRegistry();
  for (let i = 0; i < agentCount; i++) {
    registry.upsertAgent({
      name: `agent-${i}`,
      namespace: "default",
      pool: "bench",
      endpoint: `10.1.${i >>> 8}.${i & 255}:7080`,
      hostIP: `10.1.${i >>> 8}.${i & 255}`,
      capacity: PLACEMENT_SLOTS,
      images: ["base", `image-${i % PLACEMENT_IMAGES}`],
    });
  }
  let serial = 0;
  const live: string[] = [];
  const request = (): PlacementRequest => {
    const image = Math.random() < 0.1 ? "image-nobody-has" : `image-${Math.floor(Math.random() * PLACEMENT_IMAGES)}`;
    return { sandboxKey: `default/sb-${serial++}`, namespace: "default", pool: "bench", image, ports: Math.random() < portShare ? [8080] : [] };
  };
  const place = (req: PlacementRequest): boolean => {
    try {
      registry.place(req);
      live.push(req.sandboxKey);
      return true;
    } catch {
      // No agent with port 8080 free: the request is refused, as the API would refuse it.
      return false;
    }
  };
  const releaseRandom = () => {
    const index = Math.floor(Math.random() * live.length);
    const key = live[index]!;
    live[index] = live[live.length - 1]!;
    live.pop();
    registry.release(key);
  };
  const fill = Math.floor(agentCount * PLACEMENT_SLOTS * 0.5);
  while (live.length < fill) place(request());
  for (let i = 0; i < placements; i++) {
    place(request());
    releaseRandom();
  }
  const samples = new Float64Array(placements);
  let inspected = 0;
  let inspectedMax = 0;
  for (let i = 0; i < placements; i++) {
    const req = request();
    const t0 = process.hrtime.bigint();
    let placed = true;
    try {
      registry.place(req);
    } catch {
      placed = false;
    }
    samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
    inspected += registry.lastPlacementInspected;
    inspectedMax = Math.max(inspectedMax, registry.lastPlacementInspected);
    if (placed) {
      live.push(req.sandboxKey);
      releaseRandom();
    }
  }
  registry.verifyIndexes();
  return { label, latencyUs: percentiles(samples), inspectedMean: inspected / placements, inspectedMax };
}

// ---------------------------------------------------------------- the child process

type Ready = Extract<ScaleChildMessage, { type: "ready" }>;
type MemoryAnswer = Extract<ScaleChildMessage, { type: "memory" }>;

/** The control plane child (scale-control-plane.ts): one request at a time. */
class ControlPlaneChild {
  private waiter: { resolve: (message: ScaleChildMessage) => void; reject: (error: Error) => void } | undefined;
  private exited: Error | undefined;

  private constructor(
    private readonly child: ChildProcess,
    readonly ready: Ready,
  ) {}

  static start(childPath: string, mode: "simulated" | "idle-agent", dataDir: string): Promise<ControlPlaneChild> {
    const child = fork(childPath, [mode, dataDir], {
      execArgv: [...CONTROL_PLANE_NODE_FLAGS, "--expose-gc"],
      env: controlPlaneEnv(process.env),
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null, signal: string | null) =>
        reject(new Error(`the control plane process exited (${signal ?? code}) before it was ready`));
      child.once("exit", onExit);
      child.once("message", (message: ScaleChildMessage) => {
        child.off("exit", onExit);
        if (message.type !== "ready") {
          child.kill("SIGKILL");
          reject(new Error(`the control plane process failed to start: ${message.type === "error" ? message.message : message.type}`));
          return;
        }
        const handle = new ControlPlaneChild(child, message);
        child.on("message", (next: ScaleChildMessage) => handle.answer(next));
        child.on("exit", (code, signal) => handle.fail(new Error(`the control plane process exited (${signal ?? code})`)));
        resolve(handle);
      });
    });
  }

  async memory(settleMs: number): Promise<MemoryAnswer> {
    const answer = await this.request({ type: "memory", settleMs });
    if (answer.type !== "memory") throw new Error(`unexpected answer ${answer.type}`);
    return answer;
  }

  /** Closes the control plane and waits for the process to exit (SIGKILL after 30 s). */
  async close(): Promise<void> {
    if (this.exited) return;
    const exit = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 30_000);
    try {
      await this.request({ type: "close" }).catch(() => undefined);
      await exit;
    } finally {
      clearTimeout(timer);
    }
  }

  private request(request: ScaleChildRequest): Promise<ScaleChildMessage> {
    if (this.exited) return Promise.reject(this.exited);
    if (this.waiter) return Promise.reject(new Error("one request at a time"));
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.child.send(request);
    });
  }

  private answer(message: ScaleChildMessage): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    if (message.type === "error") waiter?.reject(new Error(`the control plane process failed: ${message.message}`));
    else waiter?.resolve(message);
  }

  private fail(error: Error): void {
    this.exited = error;
    this.waiter?.reject(error);
    this.waiter = undefined;
  }
}

/** Transpiles the child's sources (types stripped, nothing bundled) next to the repository's node_modules; returns the entry. */
function transpileChild(): string {
  mkdirSync(CHILD_DIR, { recursive: true });
  for (const file of CHILD_SOURCES) {
    const source = readFileSync(join(BENCH_DIR, file), "utf8");
    const { outputText } = ts.transpileModule(source, {
      fileName: file,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
    });
    writeFileSync(join(CHILD_DIR, file.replace(/\.ts$/, ".js")), outputText);
  }
  return join(CHILD_DIR, "scale-control-plane.js");
}

/** Builds the packages the child runs from dist (`tsc -b`: nothing to do when they are up to date). */
function buildPackages(log: (message: string) => void): void {
  const tsc = join(dirname(fileURLToPath(import.meta.resolve("typescript"))), "..", "bin", "tsc");
  log(`building ${BUILT_PACKAGES.map((name) => `packages/${name}`).join(", ")} (tsc -b)`);
  try {
    execFileSync(process.execPath, [tsc, "-b", ...BUILT_PACKAGES.map((name) => join(REPO_ROOT, "packages", name))], { cwd: REPO_ROOT, stdio: "inherit" });
  } catch {
    throw new Error("the build failed (tsc -b, above): the control plane process runs the built packages");
  }
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Bytes in MiB (2^20 bytes), one decimal. */
export function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

/** Bytes in decimal MB (10^6 bytes), one decimal: issue 10's memory goals are written in MB. */
export function mb(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

/**
 * The RESULT line's memory keys: each figure in MiB, then in MB. `agentVmRssKb`: /proc's VmRSS,
 * whose "kB" are KiB; undefined when the idle agent was skipped.
 */
export function memoryResultFields(controlPlaneRssBytes: number, agentVmRssKb: number | undefined): string {
  const agentBytes = agentVmRssKb === undefined ? undefined : agentVmRssKb * 1024;
  return (
    `controlplane_rss_mib=${mib(controlPlaneRssBytes)} controlplane_rss_mb=${mb(controlPlaneRssBytes)} ` +
    `agent_idle_rss_mib=${agentBytes === undefined ? "n/a" : mib(agentBytes)} agent_idle_rss_mb=${agentBytes === undefined ? "n/a" : mb(agentBytes)}`
  );
}

/** The tables and the RESULT line (last). */
export function formatScaleReport(result: ScaleBenchResult): string[] {
  const m = result.machine;
  const cp = result.controlPlane;
  const memoryRow = (label: string, memory: MemoryReport) =>
    `${label.padEnd(40)}${mib(memory.rssBytes).padStart(9)}${mib(memory.heapUsedBytes).padStart(10)}${mib(memory.heapTotalBytes).padStart(10)}${(memory.status.rssAnonKb / 1024).toFixed(1).padStart(10)}${(memory.status.vmHwmKb / 1024).toFixed(1).padStart(10)}`;
  const lines = [
    `scale: ${result.sandboxes} sandboxes over ${result.agents} simulated agents in ${result.pools} pools (${result.slotsPerAgent} slots each), ` +
      `populated ${result.concurrency} at a time; ${m.cpus} CPUs, ${m.memoryGiB} GiB, kernel ${m.kernel}, node ${m.node}`,
    `agents ready ${(result.agentsReadyMs / 1000).toFixed(1)} s after the pools were applied; populate ${(result.populate.wallMs / 1000).toFixed(1)} s, ${result.populate.perSecond.toFixed(0)} creates/s`,
    formatPercentileTable("ms", [
      { label: `create while populating (${result.concurrency} in flight)`, summary: result.populate.latencyMs },
      { label: `get (1 at a time, at ${result.sandboxes})`, summary: result.latencyMs.get },
      { label: `list all ${result.listedSandboxes} (1 at a time)`, summary: result.latencyMs.list },
      { label: `create (1 at a time, at ${result.sandboxes})`, summary: result.latencyMs.create },
      { label: `delete (1 at a time, at ${result.sandboxes})`, summary: result.latencyMs.delete },
    ]),
    `control plane memory (MiB; child process, built packages, after full GCs):`,
    `${"".padEnd(40)}${"rss".padStart(9)}${"heapUsed".padStart(10)}${"heapTotal".padStart(10)}${"RssAnon".padStart(10)}${"VmHWM".padStart(10)}`,
    memoryRow("started (no pool)", cp.started),
    memoryRow(`${result.agents} agents ready, no sandbox`, cp.agentsReady),
    memoryRow(`${result.sandboxes} sandboxes, populated`, cp.populated),
    memoryRow(`${result.sandboxes} sandboxes, after the timed calls`, cp.full),
  ];
  const agent = result.idleAgent;
  if (agent) {
    const mibOfKb = (kb: number) => (kb / 1024).toFixed(1);
    const first = agent.samples[0]!;
    lines.push(
      `idle agent (built, plain node, its own process: its shim anchors' shims not counted; samples ${agent.settleMs / 1000}-${(agent.settleMs + agent.windowMs) / 1000} s after start): VmRSS median ${mibOfKb(agent.vmRssKb.median)} MiB ` +
        `(lowest ${mibOfKb(agent.vmRssKb.min)}, highest ${mibOfKb(agent.vmRssKb.max)}; RssAnon ${mibOfKb(agent.rssAnonKb)} + RssFile ${mibOfKb(agent.rssFileKb)}); ` +
        `at start ${mibOfKb(first.vmRssKb)}, peak VmHWM ${mibOfKb(agent.samples[agent.samples.length - 1]!.vmHwmKb)}` +
        (agent.leftovers.length > 0 ? `; LEFT in containerd: ${agent.leftovers.join(", ")}` : ""),
    );
  }
  const p = result.placement;
  lines.push(
    `placement: registry alone, ${p.agents} agents in one pool, ${p.slotsPerAgent} slots each, ${p.fill * 100}% full`,
    formatPercentileTable(
      "µs",
      p.scenarios.map((s) => ({ label: `${s.label}, agents looked at: mean ${s.inspectedMean.toFixed(2)}, max ${s.inspectedMax}`, summary: s.latencyUs })),
    ),
  );
  lines.push(
    `RESULT scale_sandboxes=${result.sandboxes} agents=${result.agents} list_p50_ms=${result.latencyMs.list.p50.toFixed(1)} get_p50_ms=${result.latencyMs.get.p50.toFixed(2)} ` +
      `create_p50_ms=${result.latencyMs.create.p50.toFixed(2)} ${memoryResultFields(Math.max(cp.populated.rssBytes, cp.full.rssBytes), agent?.vmRssKb.median)} ` +
      `placement_p99_us=${p.scenarios[0]!.latencyUs.p99.toFixed(2)}`,
  );
  return lines;
}
