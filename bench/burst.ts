/**
 * `bench burst`: N creates at once (default 100) on a pool sized for them, against N `ctr run -d`
 * at once, in the same run, over R rounds (default 3). Method:
 *
 * - The embedded control plane of `bench create` (create.ts), in this process, with
 *   ceil(N / 64) agents whose pool keeps prepared instances (64 per agent, the most an agent keeps;
 *   `--cold`: none, every create takes the cold path). The SDK sends all N creates at once over the
 *   real HTTP API on loopback; each sample is one create, from the call to the resolved promise,
 *   which the API gives only once the sandbox's command runs.
 * - The baseline: N `ctr run -d` of the same image started at once on the same containerd.
 * - One warm-up round of 2 creates per side first (connections, shims, caches), unrecorded. Then
 *   `--rounds` measured rounds, each a burst of N per side; the side that goes first alternates
 *   (fast-sandbox first in rounds 1, 3, …, ctr first in rounds 2, 4, …), so neither side always
 *   meets the machine as the other left it. Each side's burst, in every round, starts only once
 *   every agent's stock of prepared instances is full again (as for the one round this bench ran
 *   before), so no refill runs during either burst. After each round (the warm-up's too) both
 *   sides' containers of the round are deleted, untimed, so every round starts from the same state:
 *   nothing of the run running, the agents' stock full.
 * - Wall time of a burst: from the first call to the last answer. Per side, the median over the
 *   rounds (each round's own printed beside it); percentiles over every create of every round
 *   (stats.ts). ratio_wall: the medians' ratio.
 *
 * Prints the create tables and `RESULT burst_wall_ms=… p50_ms=… p99_ms=… baseline_ctr_wall_ms=…
 * baseline_ctr_p50_ms=… baseline_ctr_p99_ms=… ratio_wall=…` (create-report.ts).
 */
import type { NetworkMode } from "@fast-sandbox/api";
import { runCreateBench, type CreateBenchResult } from "./create.js";

/** The most prepared instances one agent keeps (agent-config.ts MAX_PREPARED_INSTANCES). */
const INSTANCES_PER_AGENT = 64;

export interface BurstBenchOptions {
  /** Creates per burst (per side and round). */
  count: number;
  /** Measured rounds; the side that goes first alternates. @default 3 */
  rounds: number;
  warmup: number;
  image: string;
  namespace: string;
  network: NetworkMode;
  /** No prepared instances: every create takes the cold path. */
  cold: boolean;
  log: (message: string) => void;
}

export async function runBurstBench(options: BurstBenchOptions): Promise<CreateBenchResult> {
  const { count, rounds } = options;
  // Rounds of `count` creates per side: the measured creates of `rounds` rounds at a concurrency of `count`.
  return runCreateBench({
    count: count * rounds,
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
    clearAfterEachRound: true,
    log: options.log,
  });
}
