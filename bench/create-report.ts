/**
 * What `bench create` and `bench burst` print beside their tables: pure functions of their results
 * and flags, so that what each line claims — prepared or cold, which waits a figure leaves out, the
 * RESULT keys and their order — is unit-tested (create-report.spec.ts). main.ts prints them.
 */
import type { CreateBenchResult } from "./create.js";
import { percentile, ratio } from "./stats.js";

/** How the pool served the creates, for the header line: a run with `--prepared` must not read as a cold one. */
export function preparedSetting(prepared: number): string {
  return prepared > 0
    ? `prepared instances (${prepared} per agent; every burst of either side starts once each agent's stock is full again)`
    : "cold path (no prepared instances)";
}

/**
 * Where the timed SDK ran, for the header line: in the bench's process the SDK shares an event loop
 * with the embedded control plane, which measured ~18% faster than an SDK in a process of its own
 * (docs/PERFORMANCE.md, 2026-12-04).
 */
export function sdkSetting(result: CreateBenchResult): string {
  if (result.kubernetes) return "SDK in the bench's process (the control plane in its Pod)";
  return result.sdkProcess ? "SDK in a process of its own" : "SDK in the bench's process, beside the control plane";
}

/**
 * The last line of `bench create`. Its first three keys keep their names and order (scripts read
 * them); `prepared` (instances per agent, 0: the cold path) and `sdk_process` (1: `--sdk-process`)
 * came later, appended.
 */
export function createResultLine(result: CreateBenchResult): string {
  return (
    `RESULT create_p50_ms=${result.fastSandbox.create.p50.toFixed(2)} baseline_ctr_p50_ms=${result.ctrBaseline.create.p50.toFixed(2)} ` +
    `ratio=${result.ratioP50.toFixed(3)} prepared=${result.prepared} sdk_process=${result.sdkProcess ? 1 : 0}`
  );
}

/** Creates per second over the measured bursts; with prepared instances, the stock's refills ran outside them. */
export function throughputLine(result: CreateBenchResult): string {
  const scope = result.prepared > 0 ? "over the measured bursts; claims only, the stock's refill waits between bursts excluded" : "over the measured bursts";
  return `throughput (creates/s ${scope}): fast-sandbox ${result.throughputPerSecond.fastSandbox.toFixed(1)}, ctr ${result.throughputPerSecond.ctr.toFixed(1)}`;
}

/**
 * CPU per measured fast-sandbox create (`--breakdown`), counted over the fast-sandbox bursts alone.
 * With prepared instances the refills that each claim causes run in the untimed waits between
 * bursts, so the figure is the claim's CPU, not a create's whole cost: the line says so.
 */
export function cpuLine(result: CreateBenchResult): string | undefined {
  const c = result.breakdown?.cpuMsPerCreate;
  if (!c) return undefined;
  const scope = result.prepared > 0 ? " (claim only, refill excluded: the stock refills between bursts, untimed)" : "";
  return `CPU per fast-sandbox create${scope}: SDK + control plane ${c.sdkAndControlPlane.toFixed(1)} ms, agent ${c.agents.toFixed(1)} ms (10 ms resolution)`;
}

/** The label of the `--breakdown` side: the network it creates on is part of what it measures. */
export function agentDirectLabel(result: CreateBenchResult): string {
  return `agent CreateSandbox direct (${result.network})`;
}

/** The flags of `bench create` that `--kubernetes` cannot honour. */
export interface CreateFlags {
  namespace?: string;
  image?: string;
  breakdown: boolean;
  prepared: boolean;
  sdkProcess: boolean;
  /** `--runtime` as given (runc, gvisor). */
  runtime: string;
}

/** Why `--kubernetes` refuses these flags (the first that does not apply), or undefined. */
export function kubernetesRefusal(flags: CreateFlags): string | undefined {
  for (const flag of ["namespace", "image", "breakdown"] as const) {
    if (flags[flag]) return `--${flag} does not apply to --kubernetes (containerd namespace fsb-e2e-kubernetes, image fast-sandbox.io/base:latest)`;
  }
  if (flags.prepared) {
    // Silently ignored, a --prepared run on the cluster would print a cold run's figures under a prepared run's command.
    return "--prepared does not apply to --kubernetes: the suite's pool keeps no prepared instances and the bench does not wait for a stock there";
  }
  if (flags.sdkProcess) return "--sdk-process does not apply to --kubernetes: the SDK already runs apart from the control plane there (which runs in its Pod)";
  if (flags.runtime !== "runc") return `--runtime ${flags.runtime} does not apply to --kubernetes (the suite's pool is runc)`;
  return undefined;
}

/** A burst run's rounds: each side's wall time per round and their medians. */
export interface BurstWalls {
  rounds: number;
  fastSandbox: number[];
  ctr: number[];
  fastSandboxMedian: number;
  ctrMedian: number;
  /** Median fast-sandbox wall over median ctr wall. */
  ratio: number;
}

export function burstWalls(result: CreateBenchResult): BurstWalls {
  const { fastSandbox, ctr } = result.burstWallMs;
  if (fastSandbox.length === 0 || fastSandbox.length !== ctr.length) {
    throw new Error(`a burst run needs as many measured bursts of each side, got ${fastSandbox.length} and ${ctr.length}`);
  }
  const fastSandboxMedian = percentile(fastSandbox, 50);
  const ctrMedian = percentile(ctr, 50);
  return { rounds: fastSandbox.length, fastSandbox, ctr, fastSandboxMedian, ctrMedian, ratio: ratio(fastSandboxMedian, ctrMedian) };
}

/** Each round's wall times, and which side went first (create-rounds.ts alternates it, fast-sandbox first). */
export function burstWallsLine(walls: BurstWalls): string {
  const rounds = walls.fastSandbox.map(
    (wall, i) => `${i % 2 === 0 ? "fsb first" : "ctr first"}: fast-sandbox ${wall.toFixed(0)}, ctr ${walls.ctr[i]!.toFixed(0)}`,
  );
  return (
    `wall ms per round (${rounds.join("; ")}); median fast-sandbox ${walls.fastSandboxMedian.toFixed(0)}, ctr ${walls.ctrMedian.toFixed(0)}, ` +
    `ratio ${walls.ratio.toFixed(3)}`
  );
}

/**
 * The last line of `bench burst`. Its first four keys keep their names and order; with rounds, the
 * wall times are the medians over the rounds and the percentiles are over every create of every
 * round. The baseline's percentiles and the wall ratio came later, appended.
 */
export function burstResultLine(result: CreateBenchResult): string {
  const walls = burstWalls(result);
  const create = result.fastSandbox.create;
  const ctr = result.ctrBaseline.create;
  return (
    `RESULT burst_wall_ms=${walls.fastSandboxMedian.toFixed(0)} p50_ms=${create.p50.toFixed(2)} p99_ms=${create.p99.toFixed(2)} ` +
    `baseline_ctr_wall_ms=${walls.ctrMedian.toFixed(0)} baseline_ctr_p50_ms=${ctr.p50.toFixed(2)} baseline_ctr_p99_ms=${ctr.p99.toFixed(2)} ` +
    `ratio_wall=${walls.ratio.toFixed(3)}`
  );
}
