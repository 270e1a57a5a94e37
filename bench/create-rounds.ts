/**
 * The measurement of `bench create`, whatever runs Fast Sandbox (the embedded control plane of
 * create.ts, or a controller Pod of a cluster in create-kubernetes.ts): interleaved rounds of
 * `FastSandboxClient.sandboxes.create()` against a Fast Sandbox API (URL + token + pool) and of
 * `ctr run -d` of the same image on the same containerd, then the deletes through the SDK, and the
 * summaries.
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
 * containers (`clearAfterEachRound`, `bench burst`: both sides' containers of a round are deleted,
 * untimed, before the next round starts).
 *
 * Wall time of a side: the sum of its measured bursts (and each burst's own, for `bench burst`).
 * With a `beforeBurst` wait (the stock refill of `--prepared`), the waits are outside every burst:
 * the wall times, the creates per second and the CPU per create exclude the refills.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { API_VERSION, type NetworkMode, type RuntimeType, type SandboxPool } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import { ctr, removeCtrContainer, timedCtrRun, type CtrOptions } from "./ctr-baseline.js";
import type { SdkProcess } from "./sdk-process.js";
import { ratio, summarize, type Summary } from "./stats.js";

/** Where the fast-sandbox side creates its sandboxes. */
export interface FastSandboxTarget {
  /** The fast-path API, e.g. `http://127.0.0.1:7070`. */
  url: string;
  token: string;
  pool: string;
  /** The pool's (and the sandboxes') namespace; the API's default when absent. */
  namespace?: string;
}

/** One side of a round: `n` creates started together; records its samples when `record`. */
export type Burst = (n: number, record: boolean) => Promise<void>;

export interface CreateRoundsOptions {
  target: FastSandboxTarget;
  /** The baseline's containerd (namespace of the agents' sandboxes, so both sides share a snapshotter and image). */
  ctr: CtrOptions;
  count: number;
  warmup: number;
  concurrency: number;
  image: string;
  command: string[];
  /** Progress and diagnostics (stderr). */
  log: (message: string) => void;
  /** The agents' processes, when this process can see them: their CPU time per measured create is counted. */
  agentPids?: () => (number | undefined)[];
  /** Awaited before every burst of every side (warm-up and measured), outside its timing. */
  beforeBurst?: () => Promise<void>;
  /**
   * After every round (warm-up included), deletes what both sides created in it, untimed: every
   * round then starts with nothing of the run running (`bench burst`, whose rounds are repeats of
   * one experiment). @default false: every container of both sides stays up until the end
   */
  clearAfterEachRound?: boolean;
  /**
   * Makes the timed creates in this SDK process instead of this process's client (`--sdk-process`,
   * sdk-process.ts); its CPU time joins this process's in `cpu.self`. @default this process's client
   */
  sdkProcess?: SdkProcess;
}

/**
 * The pool every sandbox of the run goes to: a fixed number of agents (1 by default) holds every
 * sandbox of the run, so no agent starts inside the measured region; placement prefers the agent
 * with the most free slots.
 */
export function benchPool(options: {
  name: string;
  namespace: string;
  image: string;
  agents: number;
  total: number;
  concurrency: number;
  /** The pool's network mode (Isolated: a network namespace per sandbox; Shared: the agent's). */
  network: NetworkMode;
  /** Prepared instances per agent. @default 0: every create takes the cold path */
  preparedInstances?: number;
  /** @default "container" (runc) */
  runtimeType?: RuntimeType;
}): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name: options.name, namespace: options.namespace },
    spec: {
      capacity: { poolMin: options.agents, poolMax: options.agents, bufferMin: 0 },
      maxSandboxesPerPod: Math.min(1024, Math.ceil(options.total / options.agents) + options.concurrency),
      runtimeType: options.runtimeType ?? "container",
      image: options.image,
      network: { mode: options.network },
      preparedInstances: options.preparedInstances ?? 0,
    },
  };
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
export async function forEachLimited<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await task(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

/**
 * One run's two sides and their samples. Use: `waitForReadyAgents`, `run` (warm-up and measured
 * rounds), `deleteSandboxes`; then, whatever happened, `close` and `removeCtrContainers`; then
 * `results`.
 */
export class CreateRounds {
  readonly runId = randomBytes(3).toString("hex");
  readonly client: FastSandboxClient;
  /** Names of the sandboxes created and not deleted yet. */
  readonly created: string[] = [];
  /** containerd ids of every sandbox created (status.sandboxID). */
  readonly sandboxIds: string[] = [];
  /** ids of the baseline's containers. */
  readonly ctrIds: string[] = [];
  readonly fsbSamples: number[] = [];
  readonly ctrSamples: number[] = [];
  readonly deleteSamples: number[] = [];
  readonly deleteErrors: string[] = [];
  /** Wall time of the measured rounds of each side (sum of its bursts). */
  readonly wall = { fastSandbox: 0, ctr: 0 };
  /** Wall time of each measured burst of each side, in the order they ran. */
  readonly burstWalls: { fastSandbox: number[]; ctr: number[] } = { fastSandbox: [], ctr: [] };
  /** CPU ms over the measured fast-sandbox bursts: this process (and the SDK process, with `sdkProcess`), and the agents (with `agentPids`). */
  readonly cpu = { self: 0, agents: 0 };
  private index = 0;
  private deletesDone = false;

  constructor(private readonly options: CreateRoundsOptions) {
    this.client = new FastSandboxClient({ url: options.target.url, token: options.target.token });
  }

  /** A number unique in the run, for names and ids of every side. */
  nextIndex(): number {
    return this.index++;
  }

  private get namespaceOption(): { namespace?: string } {
    return this.options.target.namespace === undefined ? {} : { namespace: this.options.target.namespace };
  }

  /** Waits until the API knows `wanted` ready agents of the pool holding the image. */
  async waitForReadyAgents(wanted: number, timeoutMs: number): Promise<void> {
    const { pool } = this.options.target;
    const { image } = this.options;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const agents = await this.client.pools.agents({ pool, ...this.namespaceOption });
      if (agents.filter((agent) => agent.ready && agent.images.includes(image)).length >= wanted) return;
      if (Date.now() > deadline) throw new Error(`no ready agent of pool ${pool} with ${image} after ${timeoutMs} ms: ${JSON.stringify(agents)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** `n` SDK creates started together (in this process, or in the SDK process). */
  readonly fastSandboxBurst: Burst = async (n, record) => {
    const { target, image, command, agentPids, sdkProcess } = this.options;
    const names = Array.from({ length: n }, () => `b${this.runId}-${this.nextIndex()}`);
    const pids = agentPids?.() ?? [];
    const selfCpu = process.cpuUsage();
    const sdkCpu = processCpuMs(sdkProcess?.pid);
    const agentCpu = pids.reduce<number>((sum, pid) => sum + processCpuMs(pid), 0);
    const started = performance.now();
    const created = (name: string, elapsed: number, status: { sandboxID?: string; phase?: string } | undefined): void => {
      this.created.push(name);
      if (status?.sandboxID) this.sandboxIds.push(status.sandboxID);
      if (status?.phase !== "Running") throw new Error(`sandbox ${name} is ${status?.phase ?? "without status"}, not Running`);
      if (record) this.fsbSamples.push(elapsed);
    };
    if (sdkProcess) {
      const answers = await sdkProcess
        .burst(names.map((name) => ({ name, pool: target.pool, image, command, ...this.namespaceOption })))
        .catch((error: unknown) => {
          // Which of them the API made is not known here: the clean-up's best-effort deletes try them all.
          this.created.push(...names);
          throw error;
        });
      for (const answer of answers) created(answer.name, answer.elapsedMs, answer);
    } else {
      await Promise.all(
        names.map(async (name) => {
          const t0 = performance.now();
          const sandbox = await this.client.sandboxes.create({ name, pool: target.pool, image, command, ...this.namespaceOption });
          created(name, performance.now() - t0, sandbox.status);
        }),
      );
    }
    if (record) {
      const wall = performance.now() - started;
      this.wall.fastSandbox += wall;
      this.burstWalls.fastSandbox.push(wall);
      const used = process.cpuUsage(selfCpu);
      this.cpu.self += (used.user + used.system) / 1000 + (processCpuMs(sdkProcess?.pid) - sdkCpu);
      this.cpu.agents += pids.reduce<number>((sum, pid) => sum + processCpuMs(pid), 0) - agentCpu;
    }
  };

  /** `n` `ctr run -d` started together. */
  readonly ctrBurst: Burst = async (n, record) => {
    const ids = Array.from({ length: n }, () => `ctr-${this.runId}-${this.nextIndex()}`);
    const started = performance.now();
    await Promise.all(
      ids.map(async (id) => {
        this.ctrIds.push(id);
        const elapsed = await timedCtrRun(this.options.ctr, this.options.image, id, this.options.command);
        if (record) this.ctrSamples.push(elapsed);
      }),
    );
    if (record) {
      const wall = performance.now() - started;
      this.wall.ctr += wall;
      this.burstWalls.ctr.push(wall);
    }
  };

  /** The side order, for the report. */
  order(extraSides: number): string {
    const concurrency = this.options.concurrency;
    const rotation = extraSides > 0 ? "fsb ctr agent, ctr agent fsb, agent fsb ctr" : "fsb ctr, ctr fsb";
    return `rounds of ${concurrency} concurrent create(s) per side; the side going first rotates every round (${rotation}, ...); warm-up rounds unrecorded`;
  }

  /** The warm-up rounds (unrecorded), then the measured ones; `extraSides` join the rotation after the two sides. */
  async run(extraSides: readonly Burst[] = []): Promise<void> {
    const { count, warmup, concurrency, log } = this.options;
    const sides = [this.fastSandboxBurst, this.ctrBurst, ...extraSides];
    const rounds = async (n: number, record: boolean, label: string): Promise<void> => {
      let round = 0;
      for (let done = 0; done < n; done += concurrency, round++) {
        const size = Math.min(concurrency, n - done);
        // Rotate which side goes first: A B, B A, ... (A B C, B C A, C A B with a third side).
        for (let k = 0; k < sides.length; k++) {
          await this.options.beforeBurst?.();
          await sides[(round + k) % sides.length]!(size, record);
        }
        if (this.options.clearAfterEachRound) await this.clearRound();
      }
      log(`${label}: ${n} creates per side in ${round} rounds`);
    };
    if (warmup > 0) await rounds(warmup, false, "warm-up");
    await rounds(count, true, "measured");
  }

  /**
   * Deletes the sandboxes (through the SDK, grace period 0) and the baseline's containers created so
   * far, untimed and not counted as the run's deletes. Extra sides' sandboxes are not this class's.
   */
  private async clearRound(): Promise<void> {
    const names = this.created.splice(0);
    await forEachLimited(names, 16, async (name) => {
      await this.client.sandboxes.delete(name, { gracePeriodMs: 0, ...this.namespaceOption }).catch((error: unknown) => {
        // Left for the final clean-up, which deletes what `created` still names.
        this.created.push(name);
        this.options.log(`delete ${name} between rounds: ${String(error)}`);
      });
    });
    const ids = this.ctrIds.splice(0);
    await forEachLimited(ids, 4, (id) => removeCtrContainer(this.options.ctr, id));
  }

  /** `n` SDK `get` round trips of created sandboxes; their durations. */
  async getRoundTrips(n: number): Promise<number[]> {
    const samples: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await this.client.sandboxes.get(this.created[i % this.created.length]!, this.namespaceOption);
      samples.push(performance.now() - t0);
    }
    return samples;
  }

  /**
   * Deletes every sandbox through the SDK, with the run's concurrency; each call resolves when the
   * container, task and snapshot are gone. Grace period 0: the stop is a SIGKILL. A failed delete
   * is counted and reported, not fatal: the clean-up removes what is left.
   */
  async deleteSandboxes(): Promise<void> {
    this.deletesDone = true;
    await forEachLimited([...this.created], this.options.concurrency, async (name) => {
      const t0 = performance.now();
      try {
        await this.client.sandboxes.delete(name, { gracePeriodMs: 0, ...this.namespaceOption });
      } catch (error) {
        this.deleteErrors.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
        return;
      }
      this.deleteSamples.push(performance.now() - t0);
      this.created.splice(this.created.indexOf(name), 1);
    });
    this.options.log(
      `deleted ${this.deleteSamples.length} sandboxes${this.deleteErrors.length ? `; ${this.deleteErrors.length} deletes failed, first: ${this.deleteErrors[0]}` : ""}`,
    );
  }

  /**
   * When the run failed before its deletes: deletes what it created, best effort through the API.
   * Then closes the client.
   */
  async close(): Promise<void> {
    if (this.created.length > 0 && !this.deletesDone) {
      await forEachLimited([...this.created], 4, (name) =>
        this.client.sandboxes
          .delete(name, { gracePeriodMs: 0, ...this.namespaceOption })
          .catch((e: unknown) => this.options.log(`delete ${name}: ${String(e)}`)),
      );
    }
    this.client.close();
  }

  /** Kills and removes the baseline's containers (not timed). */
  async removeCtrContainers(): Promise<void> {
    await forEachLimited(this.ctrIds, 4, (id) => removeCtrContainer(this.options.ctr, id));
  }

  /** Tasks and containers of this run (either side) still in containerd. */
  async leftoversOfTheRun(): Promise<{ tasks: string[]; containers: string[] }> {
    const ours = new Set([...this.ctrIds, ...this.sandboxIds]);
    // `ctr task ls -q` lists tasks by container id.
    const tasks = lines(await ctr(this.options.ctr, "task", "ls", "-q")).filter((id) => ours.has(id));
    const containers = lines(await ctr(this.options.ctr, "container", "ls", "-q")).filter((id) => ours.has(id));
    return { tasks, containers };
  }

  /** The summaries; needs at least one measured sample per side. */
  results(): {
    fastSandbox: { create: Summary; delete: Summary | null; deleteErrors: string[]; samplesMs: number[] };
    ctrBaseline: { create: Summary; samplesMs: number[] };
    wallMs: { fastSandbox: number; ctr: number };
    burstWallMs: { fastSandbox: number[]; ctr: number[] };
    throughputPerSecond: { fastSandbox: number; ctr: number };
    ratioP50: number;
  } {
    const { count } = this.options;
    const fsbCreate = summarize(this.fsbSamples);
    const ctrCreate = summarize(this.ctrSamples);
    return {
      fastSandbox: {
        create: fsbCreate,
        delete: this.deleteSamples.length > 0 ? summarize(this.deleteSamples) : null,
        deleteErrors: this.deleteErrors,
        samplesMs: this.fsbSamples,
      },
      ctrBaseline: { create: ctrCreate, samplesMs: this.ctrSamples },
      wallMs: this.wall,
      burstWallMs: this.burstWalls,
      throughputPerSecond: { fastSandbox: (count / this.wall.fastSandbox) * 1000, ctr: (count / this.wall.ctr) * 1000 },
      ratioP50: ratio(fsbCreate.p50, ctrCreate.p50),
    };
  }
}
