/**
 * What E2B's `getMetrics()` shows and one reading cannot: a sandbox's resource use over time. The
 * agent samples each of its running sandboxes every `intervalMs` (its cgroup: CPU time, memory,
 * processes; its snapshot's usage, a walk of what it wrote, every `diskEvery`-th sample only, the
 * last value carried between) and keeps the last `retain` samples of each, in memory: an agent that
 * restarts starts its sandboxes' histories afresh. A sample's CPU use is the sandbox's over the
 * time since the sample before it (the first of a history: since the sandbox started, 0).
 */
import type { Logger } from "pino";
import { NotFoundError } from "@fast-sandbox/api/core";
import type { Runtime, RuntimeSandboxStats } from "../runtime/runtime.js";

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

interface History {
  samples: RuntimeSandboxStats[];
  taken: number;
}

export class StatsHistory {
  private readonly runtime: StatsHistoryOptions["runtime"];
  private readonly intervalMs: number;
  private readonly retain: number;
  private readonly diskEvery: number;
  private readonly logger: StatsHistoryOptions["logger"];
  private readonly histories = new Map<string, History>();
  private timer: NodeJS.Timeout | undefined;
  private pass: Promise<void> | undefined;

  constructor(options: StatsHistoryOptions) {
    this.runtime = options.runtime;
    this.intervalMs = options.intervalMs ?? 5000;
    this.retain = Math.max(1, options.retain ?? 720);
    this.diskEvery = Math.max(1, options.diskEvery ?? 6);
    this.logger = options.logger;
  }

  /** Samples every intervalMs from now on (the timer keeps no process alive). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.sampleAll(), this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.pass;
  }

  /**
   * One pass: a sample of every running sandbox; the histories of sandboxes no longer listed go. A
   * pass still running when the next is due is not doubled (that one is skipped).
   */
  async sampleAll(): Promise<void> {
    if (this.pass) return;
    this.pass = this.sampleRunning().finally(() => (this.pass = undefined));
    await this.pass;
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
    return history.samples.filter((sample) => sample.timestampMs >= sinceMs && (untilMs <= 0 || sample.timestampMs <= untilMs));
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
    const history = this.histories.get(sandboxId) ?? { samples: [], taken: 0 };
    const previous = history.samples.at(-1);
    const disk = history.taken % this.diskEvery === 0;
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
    history.samples.push({ ...sample, cpuUsedMillis, diskUsedBytes: disk ? sample.diskUsedBytes : (previous?.diskUsedBytes ?? 0) });
    if (history.samples.length > this.retain) history.samples.splice(0, history.samples.length - this.retain);
    history.taken += 1;
    this.histories.set(sandboxId, history);
  }
}
