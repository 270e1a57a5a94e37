/**
 * A keyed work queue with controller-runtime's semantics, for level-triggered reconcilers:
 * - a key (`namespace/name`) waits in the queue at most once, however often it is added;
 * - a key is handed to one worker at a time: added while being processed, it is remembered and
 *   handed out again after `done()`;
 * - `addAfter` (timed work: expiry, timeouts) and `addRateLimited` (per-key exponential back-off
 *   after failures, capped; `forget` on success) wait through the Clock;
 * - a key waiting out a back-off is not made ready by adds: they are folded into the retry, which
 *   sees the latest state anyway. Otherwise the events of a failing reconcile's own writes (a
 *   status that says why it failed) would retry it at once, again and again;
 * - `shutDown()` stops it: no more adds, waiting workers get `undefined`.
 */
import { systemClock, type Clock, type Timer } from "./clock.js";

export interface WorkQueueOptions {
  /** @default systemClock */
  clock?: Clock;
  /** Delay before the first retry of a failed key; it doubles with each further failure. @default 200 */
  initialBackoffMs?: number;
  /** The longest delay between retries of a failing key. @default 60000 */
  maxBackoffMs?: number;
}

export const DEFAULT_INITIAL_BACKOFF_MS = 200;
export const DEFAULT_MAX_BACKOFF_MS = 60_000;

/** The retry delay after `failures` consecutive failures: initial × 2^(failures−1), at most max. */
export function backoffDelayMs(failures: number, initialMs: number, maxMs: number): number {
  if (failures <= 0) return 0;
  return Math.min(maxMs, initialMs * 2 ** Math.min(failures - 1, 52));
}

interface Delayed {
  dueAtMs: number;
  timer: Timer;
  /** Set by addRateLimited: adds wait for it. */
  backoff: boolean;
}

export class WorkQueue {
  private readonly clock: Clock;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  /** Keys ready to be handed out, in the order they became ready. */
  private readonly ready: string[] = [];
  /** Keys that need processing: in `ready`, or added while processing (handed out again after done). */
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  /** Keys waiting for a time (addAfter, back-off); only the earliest time per key is kept. */
  private readonly delayed = new Map<string, Delayed>();
  private readonly failureCounts = new Map<string, number>();
  /** Workers blocked in get(), oldest first. */
  private readonly waiters: ((key: string | undefined) => void)[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private shuttingDown = false;

  constructor(options: WorkQueueOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.initialBackoffMs = options.initialBackoffMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    this.maxBackoffMs = options.maxBackoffMs ?? DEFAULT_MAX_BACKOFF_MS;
  }

  /** Makes the key ready now (or, while it is processed, right after; or, in back-off, when that ends). */
  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key) || this.delayed.get(key)?.backoff) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    this.ready.push(key);
    this.handOut();
  }

  /** Adds the key `delayMs` from now; an earlier pending time for the key wins, and so does a back-off. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (!(delayMs > 0)) {
      this.add(key);
      return;
    }
    const dueAtMs = this.clock.now().getTime() + delayMs;
    const pending = this.delayed.get(key);
    if (pending && (pending.backoff || pending.dueAtMs <= dueAtMs)) return;
    this.schedule(key, dueAtMs, delayMs, false);
  }

  /**
   * Adds the key after its back-off, which grows with each call until `forget`; until then the key
   * is not ready, whatever is added (adds made while it was processed included).
   */
  addRateLimited(key: string): void {
    if (this.shuttingDown) return;
    const failures = (this.failureCounts.get(key) ?? 0) + 1;
    this.failureCounts.set(key, failures);
    this.dirty.delete(key);
    const readyAt = this.ready.indexOf(key);
    if (readyAt >= 0) this.ready.splice(readyAt, 1);
    const delayMs = backoffDelayMs(failures, this.initialBackoffMs, this.maxBackoffMs);
    this.schedule(key, this.clock.now().getTime() + delayMs, delayMs, true);
  }

  /** Resets the key's back-off (its processing succeeded). */
  forget(key: string): void {
    this.failureCounts.delete(key);
  }

  /** Consecutive failures of the key since it was last forgotten. */
  failures(key: string): number {
    return this.failureCounts.get(key) ?? 0;
  }

  /** The next ready key, now, marked as processing; undefined when none is ready or after shutDown. */
  tryGet(): string | undefined {
    if (this.shuttingDown) return undefined;
    const key = this.ready.shift();
    if (key === undefined) return undefined;
    this.dirty.delete(key);
    this.processing.add(key);
    return key;
  }

  /** Waits for the next ready key and marks it as processing; undefined once the queue is shut down. */
  get(): Promise<string | undefined> {
    const key = this.tryGet();
    if (key !== undefined || this.shuttingDown) return Promise.resolve(key);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** The worker is finished with the key; a key added meanwhile is ready again. */
  done(key: string): void {
    if (!this.processing.delete(key)) return;
    if (this.dirty.has(key) && !this.shuttingDown) {
      this.ready.push(key);
      this.handOut();
    }
    this.notifyIfIdle();
  }

  /** Stops the queue: adds are ignored, timers cancelled, ready keys dropped, waiting workers get undefined. */
  shutDown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) timer.cancel();
    this.delayed.clear();
    this.ready.length = 0;
    this.dirty.clear();
    for (const waiter of this.waiters.splice(0)) waiter(undefined);
    this.notifyIfIdle();
  }

  get isShuttingDown(): boolean {
    return this.shuttingDown;
  }

  /** Keys ready to be handed out. */
  get readyCount(): number {
    return this.ready.length;
  }

  /** Keys handed out and not yet done. */
  get processingCount(): number {
    return this.processing.size;
  }

  /** Keys waiting for a time (addAfter, back-off). */
  get delayedCount(): number {
    return this.delayed.size;
  }

  /** True when no key is ready and none is being processed (keys waiting for a time do not count). */
  isIdle(): boolean {
    return this.ready.length === 0 && this.processing.size === 0;
  }

  /** Resolves when the queue is idle (at once if it is). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Replaces the key's pending time (if any) with this one. */
  private schedule(key: string, dueAtMs: number, delayMs: number, backoff: boolean): void {
    this.delayed.get(key)?.timer.cancel();
    const timer = this.clock.setTimeout(() => {
      if (this.delayed.get(key)?.timer !== timer) return;
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    this.delayed.set(key, { dueAtMs, timer, backoff });
  }

  private handOut(): void {
    while (this.waiters.length > 0 && this.ready.length > 0) {
      const waiter = this.waiters.shift();
      const key = this.tryGet();
      if (waiter && key !== undefined) waiter(key);
    }
  }

  private notifyIfIdle(): void {
    if (!this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
