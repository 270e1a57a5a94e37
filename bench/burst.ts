/**
 * `bench burst`: N creates at once (default 100) on a pool sized for them, against N `ctr run -d`
 * at once, in the same run. Method:
 *
 * - The embedded control plane of `bench create` (create.ts), in this process, with
 *   ceil(N / 64) agents whose pool keeps prepared instances (64 per agent, the most an agent keeps;
 *   `--cold`: none, every create takes the cold path). The SDK sends all N creates at once over the
 *   real HTTP API on loopback; each sample is one create, from the call to the resolved promise,
 *   which the API gives only once the sandbox's command runs.
 * - The baseline: N `ctr run -d` of the same image started at once on the same containerd.
 * - One warm-up round of 2 creates per side first (connections, shims, caches), unrecorded; each
 *   side's burst starts only once every agent's stock of prepared instances is full again, so no
 *   refill runs during either burst.
 * - Wall time of a burst: from the first call to the last answer. Percentiles as in stats.ts.
 *
 * Prints the create tables and `RESULT burst_wall_ms=… p50_ms=… p99_ms=… baseline_ctr_wall_ms=…`.
 */
import type { NetworkMode } from "@fast-sandbox/api";
import { runCreateBench, type CreateBenchResult } from "./create.js";

/** The most prepared instances one agent keeps (agent-config.ts MAX_PREPARED_INSTANCES). */
const INSTANCES_PER_AGENT = 64;

export interface BurstBenchOptions {
  count: number;
  warmup: number;
  image: string;
  namespace: string;
  network: NetworkMode;
  /** No prepared instances: every create takes the cold path. */
  cold: boolean;
  log: (message: string) => void;
}

export async function runBurstBench(options: BurstBenchOptions): Promise<CreateBenchResult> {
  const { count } = options;
  return runCreateBench({
    count,
    warmup: options.warmup,
    concurrency: count,
    image: options.image,
    namespace: options.namespace,
    cgroupRoot: options.namespace,
    command: ["sleep", "3600"],
    breakdown: false,
    agents: Math.ceil(count / INSTANCES_PER_AGENT),
    network: options.network,
    runtimeType: "container",
    prepared: !options.cold,
    log: options.log,
  });
}

export function burstResultLine(result: CreateBenchResult): string {
  const create = result.fastSandbox.create;
  return (
    `RESULT burst_wall_ms=${result.wallMs.fastSandbox.toFixed(0)} p50_ms=${create.p50.toFixed(2)} p99_ms=${create.p99.toFixed(2)} ` +
    `baseline_ctr_wall_ms=${result.wallMs.ctr.toFixed(0)}`
  );
}
