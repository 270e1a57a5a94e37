/**
 * The flow-aware buffer of a pool that asks for one (`capacity.dynamicBuffer`, roadmap 2.4): enough
 * free slots for the creates expected while the pool starts another agent. By Little's law that is
 * the create rate times the agent's start time:
 *
 *   buffer = ceil(creates per second over the last `windowMs` × seconds an agent of the pool takes to start)
 *
 * kept within [bufferMin, bufferMax] by the sizer (pool-sizer.ts). Any create in the window so
 * asks for at least one free slot; a quiet window gives the buffer back to bufferMin, and the
 * agents it held go after `scaleDownDelaySeconds` like any spare capacity.
 *
 * Creates are counted from the store (the Sandbox informer's additions, by creation time), so every
 * replica counts every replica's creates, and the leader that sizes the pools sees them all.
 * Start times are measured by the pool controller, from an agent's request to its first placement-ready
 * registration, as a moving average per pool.
 */
import type { Sandbox } from "@fast-sandbox/api";
import { systemClock, type Clock } from "../controller/clock.js";
import type { Informer } from "../controller/informer.js";

/** @default 60 s */
export const DEFAULT_CREATE_RATE_WINDOW_MS = 60_000;
/** How long an agent is taken to start before a start of the pool was measured. @default 5 s */
export const DEFAULT_AGENT_START_SECONDS = 5;
/** The weight of a new start time in the moving average. */
const START_TIME_WEIGHT = 0.5;

/** The free slots the creates expected during an agent's start ask for. */
export function flowBuffer(createsPerSecond: number, agentStartSeconds: number): number {
  return Math.max(0, Math.ceil(createsPerSecond * agentStartSeconds - 1e-9));
}

export interface CreateRatesOptions {
  /** @default systemClock */
  clock?: Clock;
  /** @default DEFAULT_CREATE_RATE_WINDOW_MS */
  windowMs?: number;
}

/** Creates per pool over a sliding window. */
export class CreateRates {
  private readonly clock: Clock;
  private readonly windowMs: number;
  /** Per pool key (`namespace/pool`): creation times (ms) in the window, oldest first. */
  private readonly creates = new Map<string, number[]>();

  constructor(options: CreateRatesOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.windowMs = options.windowMs ?? DEFAULT_CREATE_RATE_WINDOW_MS;
  }

  /** Counts every sandbox the informer adds (its initial list included: those older than the window do not count). */
  follow(informer: Informer<"Sandbox">): () => void {
    return informer.addHandlers({ onAdd: (sandbox) => this.recordSandbox(sandbox) });
  }

  recordSandbox(sandbox: Sandbox): void {
    const created = Date.parse(sandbox.metadata.creationTimestamp ?? "");
    if (!sandbox.spec.poolRef || Number.isNaN(created)) return;
    this.record(sandbox.metadata.namespace ?? "default", sandbox.spec.poolRef, created);
  }

  /** A sandbox of the pool was created at `atMs`. */
  record(namespace: string, pool: string, atMs: number): void {
    const now = this.clock.now().getTime();
    if (atMs <= now - this.windowMs) return;
    const key = `${namespace}/${pool}`;
    const times = this.pruned(key, now);
    // Almost always in order; a late one goes to its place.
    let at = times.length;
    while (at > 0 && times[at - 1]! > atMs) at--;
    times.splice(at, 0, atMs);
    this.creates.set(key, times);
  }

  /** Creates per second in the pool over the window up to now. */
  perSecond(namespace: string, pool: string): number {
    const key = `${namespace}/${pool}`;
    const times = this.pruned(key, this.clock.now().getTime());
    if (times.length === 0) this.creates.delete(key);
    return times.length / (this.windowMs / 1000);
  }

  private pruned(key: string, now: number): number[] {
    const times = this.creates.get(key) ?? [];
    let drop = 0;
    while (drop < times.length && times[drop]! <= now - this.windowMs) drop++;
    if (drop > 0) times.splice(0, drop);
    return times;
  }
}

/** How long a pool's agents take to start, as a moving average of the measured starts. */
export class AgentStartTimes {
  private readonly seconds = new Map<string, number>();

  /** One agent of the pool took `ms` from its request to serving. */
  sample(poolKey: string, ms: number): void {
    const measured = Math.max(0, ms) / 1000;
    const previous = this.seconds.get(poolKey);
    this.seconds.set(poolKey, previous === undefined ? measured : previous + START_TIME_WEIGHT * (measured - previous));
  }

  /** The pool's start time in seconds; DEFAULT_AGENT_START_SECONDS until one was measured. */
  of(poolKey: string): number {
    return this.seconds.get(poolKey) ?? DEFAULT_AGENT_START_SECONDS;
  }

  forget(poolKey: string): void {
    this.seconds.delete(poolKey);
  }
}
