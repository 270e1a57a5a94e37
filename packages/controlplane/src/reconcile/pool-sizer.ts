/**
 * How many agents a pool should run, and which ones may go. Pure and mode-independent: the
 * pool controller (reconcile/pool-controller.ts) applies them in both modes, to local processes and to Pods.
 *
 * - desired = ceil((allocated + waiting + buffer) / maxSandboxesPerPod), clamped to [poolMin, poolMax];
 *   `waiting` counts creates that wait for capacity, so a pool at zero wakes on its first create;
 *   `buffer` is bufferMin, or with capacity.dynamicBuffer the flow buffer of the recent create rate
 *   within [bufferMin, bufferMax] (poolBuffer).
 * - Growing is immediate.
 * - Shrinking releases only agents with no sandboxes (never a busy one), and only after the pool has
 *   had spare capacity continuously for `scaleDownDelaySeconds`: more agents than desired, and more
 *   free slots than `bufferMax` (defaults to bufferMin; never below the buffer). Each release keeps at least `desired` agents.
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
  /** The free slots the recent create rate asks for (create-rate.ts); counts only with capacity.dynamicBuffer. */
  flowBuffer?: number;
}

export interface PoolSizePlan {
  desired: number;
  /** The free slots the pool keeps now (poolBuffer's min). */
  buffer: number;
  /** How many agents to start now. */
  add: number;
  /** Idle agents to drain and stop now (highest names first). */
  remove: string[];
  /** Carry into the next plan. */
  spareSince: Date | undefined;
}

export function desiredAgents(pool: SandboxPool, allocated: number, waiting = 0, buffer = pool.spec.capacity.bufferMin ?? 0): number {
  const { poolMin, poolMax } = pool.spec.capacity;
  const needed = Math.ceil((allocated + waiting + buffer) / pool.spec.maxSandboxesPerPod);
  return Math.max(poolMin, Math.min(poolMax, needed));
}

/**
 * The free slots the pool keeps (`min`) and beyond which idle agents go (`max`): bufferMin and
 * bufferMax (default bufferMin); with `capacity.dynamicBuffer`, the flow buffer (create-rate.ts)
 * within [bufferMin, bufferMax when set], and `max` raised to it, so what the flow asks for is not
 * released as spare.
 */
export function poolBuffer(pool: SandboxPool, flow: number | undefined): { min: number; max: number } {
  const { bufferMin = 0, bufferMax, dynamicBuffer } = pool.spec.capacity;
  const staticMax = bufferMax ?? bufferMin;
  if (!dynamicBuffer || flow === undefined) return { min: bufferMin, max: staticMax };
  const min = Math.max(bufferMin, bufferMax !== undefined ? Math.min(flow, bufferMax) : flow);
  return { min, max: Math.max(staticMax, min) };
}

export function planPoolSize(input: PoolSizeInput): PoolSizePlan {
  const { pool, agents, waiting, now } = input;
  const perAgent = pool.spec.maxSandboxesPerPod;
  const allocated = agents.reduce((sum, agent) => sum + agent.allocated, 0);
  const { min: buffer, max: bufferMax } = poolBuffer(pool, input.flowBuffer);
  const desired = desiredAgents(pool, allocated, waiting, buffer);
  if (agents.length < desired) return { desired, buffer, add: desired - agents.length, remove: [], spareSince: undefined };

  const free = agents.reduce((sum, agent) => sum + Math.max(0, perAgent - agent.allocated), 0);
  const idle = agents.filter((agent) => agent.allocated === 0).sort((a, b) => b.name.localeCompare(a.name, undefined, { numeric: true }));
  const spare = agents.length > desired && free > bufferMax && waiting === 0 && idle.length > 0;
  if (!spare) return { desired, buffer, add: 0, remove: [], spareSince: undefined };
  const spareSince = input.spareSince ?? now;
  const delayMs = (pool.spec.capacity.scaleDownDelaySeconds ?? DEFAULT_SCALE_DOWN_DELAY_SECONDS) * 1000;
  if (now.getTime() - spareSince.getTime() < delayMs) return { desired, buffer, add: 0, remove: [], spareSince };

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
  return { desired, buffer, add: 0, remove, spareSince: undefined };
}
