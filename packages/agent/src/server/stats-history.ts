/**
 * What E2B's `getMetrics()` shows and one reading cannot: a sandbox's resource use over time. The
 * agent samples each of its running sandboxes every `intervalMs` (its cgroup: CPU time, memory,
 * processes; its snapshot's usage, a walk of what it wrote, every `diskEvery`-th sample only, the
 * last value carried between) and keeps the last `retain` samples of each, in memory: an agent that
 * restarts starts its sandboxes' histories afresh. A sample's CPU use is the sandbox's over the
 * time since the sample before it (the first of a history: 0). Memory: 80 bytes a sample, ~56 KiB
 * per sandbox for an hour at 5 s. The cost of a pass: one list of the agent's containers, then per
 * running sandbox one containerd call and a few cgroup files (and every 6th time the snapshot's walk).
 */
import type { Logger } from "pino";
import { NotFoundError } from "@fast-sandbox/api/core";
import type { Runtime, RuntimeSandboxStats } from "../runtime/runtime.js";
import { PeriodicPass } from "../periodic-pass.js";

export interface StatsHistoryOptions {
  runtime: Pick<Runtime, "list" | "stats">;
  /** @default 5000 (E2B's own interval) */
  intervalMs?: number;
  /** Samples kept per sandbox. @default 720 (an hour at 5 s) */
  retain?: number;
  /** The snapshot's usage is read with every this many samples. @default 6 */
  diskEvery?: number;
  logger?: Pick<Logger, "warn">;
}

/** The fields a sample keeps (the node's CPUs and memory are the agent's: kept once). */
const FIELDS = [
  "timestampMs",
  "cpuUsageNanos",
  "cpuUsedMillis",
  "cpuLimitMillis",
  "memoryUsedBytes",
  "memoryCacheBytes",
  "memoryLimitBytes",
  "pids",
  "diskUsedBytes",
  "diskLimitBytes",
] as const;

/**
 * One sandbox's samples, oldest first: a ring of numbers (10 per sample, 80 bytes; ~56 KiB for an
 * hour at 5 s, where objects took ~100), grown by doubling up to `retain` samples.
 */
class History {
  private values: Float64Array;
  private first = 0;
  size = 0;
  taken = 0;

  constructor(
    private readonly retain: number,
    private node: Pick<RuntimeSandboxStats, "nodeCpus" | "nodeMemoryBytes">,
  ) {
    this.values = new Float64Array(Math.min(16, retain) * FIELDS.length);
  }

  push(sample: RuntimeSandboxStats): void {
    const capacity = this.values.length / FIELDS.length;
    if (this.size === capacity && capacity < this.retain) {
      const grown = new Float64Array(Math.min(this.retain, capacity * 2) * FIELDS.length);
      for (let index = 0; index < this.size; index++) grown.set(this.slot(index), index * FIELDS.length);
      this.values = grown;
      this.first = 0;
    }
    const slots = this.values.length / FIELDS.length;
    const at = this.size < slots ? (this.first + this.size) % slots : this.first;
    if (this.size < slots) this.size += 1;
    else this.first = (this.first + 1) % slots;
    this.values.set(
      FIELDS.map((field) => sample[field]),
      at * FIELDS.length,
    );
    this.node = { nodeCpus: sample.nodeCpus, nodeMemoryBytes: sample.nodeMemoryBytes };
    this.taken += 1;
  }

  at(index: number): RuntimeSandboxStats {
    const values = this.slot(index);
    const sample = { ...this.node } as RuntimeSandboxStats;
    FIELDS.forEach((field, position) => (sample[field] = values[position]!));
    return sample;
  }

  last(): RuntimeSandboxStats | undefined {
    return this.size > 0 ? this.at(this.size - 1) : undefined;
  }

  all(): RuntimeSandboxStats[] {
    return Array.from({ length: this.size }, (_, index) => this.at(index));
  }

  private slot(index: number): Float64Array {
    const slots = this.values.length / FIELDS.length;
    const start = ((this.first + index) % slots) * FIELDS.length;
    return this.values.subarray(start, start + FIELDS.length);
  }
}

export class StatsHistory {
  private readonly runtime: StatsHistoryOptions["runtime"];
  private readonly retain: number;
  private readonly diskEvery: number;
  private readonly logger: StatsHistoryOptions["logger"];
  private readonly histories = new Map<string, History>();
  private readonly passes: PeriodicPass;

  constructor(options: StatsHistoryOptions) {
    this.runtime = options.runtime;
    this.passes = new PeriodicPass(() => this.sampleRunning(), options.intervalMs ?? 5000);
    this.retain = Math.max(1, options.retain ?? 720);
    this.diskEvery = Math.max(1, options.diskEvery ?? 6);
    this.logger = options.logger;
  }

  /** Samples every intervalMs from now on (the timer keeps no process alive). */
  start(): void {
    this.passes.start();
  }

  async stop(): Promise<void> {
    await this.passes.stop();
  }

  /**
   * One pass: a sample of every running sandbox; the histories of sandboxes no longer listed go. A
   * pass still running when the next is due is not doubled (that one is skipped).
   */
  async sampleAll(): Promise<void> {
    await this.passes.run();
  }

  /** The samples of a sandbox taken within [sinceMs, untilMs] (0: open), oldest first; NotFoundError for a sandbox this agent does not hold. */
  async samples(sandboxId: string, sinceMs = 0, untilMs = 0): Promise<RuntimeSandboxStats[]> {
    const history = this.histories.get(sandboxId);
    if (!history) {
      // Not sampled yet (just created, or the agent just started): known, or not.
      const listed = await this.runtime.list();
      if (!listed.some((sandbox) => sandbox.sandboxId === sandboxId)) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
      return [];
    }
    return history.all().filter((sample) => sample.timestampMs >= sinceMs && (untilMs <= 0 || sample.timestampMs <= untilMs));
  }

  private async sampleRunning(): Promise<void> {
    let listed;
    try {
      listed = await this.runtime.list();
    } catch (error) {
      this.logger?.warn({ err: error }, "could not list the sandboxes to sample their resource use; trying again at the next interval");
      return;
    }
    const present = new Set(listed.map((sandbox) => sandbox.sandboxId));
    for (const id of this.histories.keys()) if (!present.has(id)) this.histories.delete(id);
    for (const sandbox of listed) {
      if (sandbox.state !== "running") continue;
      await this.sampleOne(sandbox.sandboxId);
    }
  }

  private async sampleOne(sandboxId: string): Promise<void> {
    const known = this.histories.get(sandboxId);
    const previous = known?.last();
    const disk = (known?.taken ?? 0) % this.diskEvery === 0;
    let sample: RuntimeSandboxStats;
    try {
      sample = await this.runtime.stats(sandboxId, 0, { disk });
    } catch (error) {
      // Gone between the list and now (its history goes with the next pass), or paused for a checkpoint.
      if (!(error instanceof NotFoundError)) this.logger?.warn({ sandboxId, err: error }, "could not sample a sandbox's resource use");
      return;
    }
    const cpuUsedMillis =
      previous && sample.timestampMs > previous.timestampMs && sample.cpuUsageNanos >= previous.cpuUsageNanos
        ? Math.round(((sample.cpuUsageNanos - previous.cpuUsageNanos) / ((sample.timestampMs - previous.timestampMs) * 1e6)) * 1000)
        : 0;
    const history = known ?? new History(this.retain, sample);
    history.push({ ...sample, cpuUsedMillis, diskUsedBytes: disk ? sample.diskUsedBytes : (previous?.diskUsedBytes ?? 0) });
    this.histories.set(sandboxId, history);
  }
}
