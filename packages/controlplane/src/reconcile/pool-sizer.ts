/**
 * How many agents a pool should run, and which ones may go. Pure and mode-independent: the
 * pool controller (reconcile/pool-controller.ts) applies them in both modes, to local processes and to Pods.
 *
 * - desired = ceil((allocated + waiting + bufferMin) / maxSandboxesPerPod), clamped to [poolMin, poolMax];
 *   `waiting` counts creates that wait for capacity, so a pool at zero wakes on its first create.
 * - Growing is immediate.
 * - Shrinking releases only agents with no sandboxes (never a busy one), and only after the pool has
 *   had spare capacity continuously for `scaleDownDelaySeconds`: more agents than desired, and more
 *   free slots than `bufferMax` (defaults to bufferMin). Each release keeps at least `desired` agents.
 *   A pool with poolMin 0 and bufferMin 0 so goes back to zero agents once idle for the delay.
 */
import type { SandboxPool } from "@fast-sandbox/api";

/** @default 300 */
export const DEFAULT_SCALE_DOWN_DELAY_SECONDS = 300;
/** @default 30 */
export const DEFAULT_WAKE_TIMEOUT_SECONDS = 30;

export interface PoolAgentState {
  name: string;
  /** Sandboxes placed on it. */
  allocated: number;
  /** Serving placements (an agent still starting counts as capacity that is coming). */
  ready: boolean;
}

export interface PoolSizeInput {
  pool: SandboxPool;
  agents: readonly PoolAgentState[];
  /** Creates waiting for a free slot in this pool. */
  waiting: number;
  now: Date;
  /** When the pool's spare capacity was first seen (from the previous plan); undefined: none was. */
  spareSince: Date | undefined;
}

export interface PoolSizePlan {
  desired: number;
  /** How many agents to start now. */
  add: number;
  /** Idle agents to drain and stop now (highest names first). */
  remove: string[];
  /** Carry into the next plan. */
  spareSince: Date | undefined;
}

export function desiredAgents(pool: SandboxPool, allocated: number, waiting = 0): number {
  const { poolMin, poolMax, bufferMin = 0 } = pool.spec.capacity;
  const needed = Math.ceil((allocated + waiting + bufferMin) / pool.spec.maxSandboxesPerPod);
  return Math.max(poolMin, Math.min(poolMax, needed));
}

export function planPoolSize(input: PoolSizeInput): PoolSizePlan {
  const { pool, agents, waiting, now } = input;
  const perAgent = pool.spec.maxSandboxesPerPod;
  const allocated = agents.reduce((sum, agent) => sum + agent.allocated, 0);
  const desired = desiredAgents(pool, allocated, waiting);
  if (agents.length < desired) return { desired, add: desired - agents.length, remove: [], spareSince: undefined };

  const { bufferMin = 0, bufferMax = bufferMin } = pool.spec.capacity;
  const free = agents.reduce((sum, agent) => sum + Math.max(0, perAgent - agent.allocated), 0);
  const idle = agents.filter((agent) => agent.allocated === 0).sort((a, b) => b.name.localeCompare(a.name, undefined, { numeric: true }));
  const spare = agents.length > desired && free > bufferMax && waiting === 0 && idle.length > 0;
  if (!spare) return { desired, add: 0, remove: [], spareSince: undefined };
  const spareSince = input.spareSince ?? now;
  const delayMs = (pool.spec.capacity.scaleDownDelaySeconds ?? DEFAULT_SCALE_DOWN_DELAY_SECONDS) * 1000;
  if (now.getTime() - spareSince.getTime() < delayMs) return { desired, add: 0, remove: [], spareSince };

  // Release idle agents while the pool has more than desired and more than bufferMax free slots.
  const remove: string[] = [];
  let count = agents.length;
  let freeLeft = free;
  for (const agent of idle) {
    if (count <= desired || freeLeft <= bufferMax) break;
    remove.push(agent.name);
    count -= 1;
    freeLeft -= perAgent;
  }
  return { desired, add: 0, remove, spareSince: undefined };
}
