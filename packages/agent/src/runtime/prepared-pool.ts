/**
 * A few expensive things made ahead of need (network namespaces: a CNI ADD costs more than the rest
 * of a create; whole sandboxes: prepared instances), handed out one at a time and made again in the
 * background, one after another so the refill never competes with creates for more than one core
 * (and, with `beforeEachPrepare`, not while creates are in flight at all). Generic, so its rules are
 * tested with fakes.
 */
import { setTimeout as sleep } from "node:timers/promises";

export interface PreparedPoolOptions<T> {
  /** How many to keep ready. 0: none (`take` always returns undefined). */
  target: number;
  prepare: () => Promise<T>;
  /** Pause after a failed prepare, doubling with each failure in a row up to 32×. @default 1_000 */
  retryDelayMs?: number;
  /** Told about every failed prepare (the pool retries). */
  onError?: (error: unknown) => void;
  /** Awaited before each prepare of a refill, e.g. until no create is in flight. @default none */
  beforeEachPrepare?: (signal: AbortSignal) => Promise<void>;
}

export class PreparedPool<T> {
  readonly target: number;
  private readonly options: PreparedPoolOptions<T>;
  private readonly ready: T[] = [];
  private filling: Promise<void> | undefined;
  private stopped = false;
  private readonly stopping = new AbortController();
  private waiters: (() => void)[] = [];
  private lastFailure: unknown;
  private failing = false;

  constructor(options: PreparedPoolOptions<T>) {
    this.options = options;
    this.target = Math.max(0, options.target);
  }

  /** Items ready to be taken. */
  get size(): number {
    return this.ready.length;
  }

  /**
   * Why the pool is short of its target: the error of the last prepare while none has succeeded
   * since (the pool keeps retrying); undefined once one succeeds, or when none has failed.
   */
  get failure(): { error: unknown } | undefined {
    return this.failing ? { error: this.lastFailure } : undefined;
  }

  /**
   * The oldest ready item (that `accept` accepts, when given), or undefined when none is; starts
   * refilling either way.
   */
  take(): T | undefined;
  take<S extends T>(accept: (item: T) => item is S): S | undefined;
  take(accept?: (item: T) => boolean): T | undefined {
    const index = accept ? this.ready.findIndex(accept) : 0;
    const item = index >= 0 ? this.ready.splice(index, 1)[0] : undefined;
    this.fill();
    return item;
  }

  /** Adds items made earlier (e.g. found after a restart); they are taken first, even beyond the target. */
  adopt(items: readonly T[]): void {
    if (this.stopped) throw new Error("the pool is drained");
    this.ready.unshift(...items);
  }

  /** Starts (or keeps) refilling up to the target in the background. */
  fill(): void {
    if (this.stopped || this.filling || this.ready.length >= this.target) return;
    this.filling = this.refill().finally(() => {
      this.filling = undefined;
      const waiters = this.waiters;
      this.waiters = [];
      waiters.forEach((resolve) => resolve());
    });
  }

  /** Resolves once the pool holds its target (or has been drained). Starts refilling. */
  async filled(): Promise<void> {
    this.fill();
    while (this.filling) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Stops refilling for good, waits for a prepare in progress, and hands every ready item back (for release). */
  async drain(): Promise<T[]> {
    this.stopped = true;
    this.stopping.abort();
    await this.filling;
    return this.ready.splice(0);
  }

  private async refill(): Promise<void> {
    const baseDelayMs = this.options.retryDelayMs ?? 1_000;
    let failures = 0;
    while (!this.stopped && this.ready.length < this.target) {
      try {
        if (this.options.beforeEachPrepare) {
          await this.options.beforeEachPrepare(this.stopping.signal).catch(() => undefined);
          // Items given back meanwhile (a take undone: `adopt`) may have filled it already.
          if (this.stopped || this.ready.length >= this.target) break;
        }
        const item = await this.options.prepare();
        this.ready.push(item);
        failures = 0;
        this.failing = false;
        this.lastFailure = undefined;
      } catch (error) {
        this.failing = true;
        this.lastFailure = error;
        this.options.onError?.(error);
        failures += 1;
        const delayMs = baseDelayMs * 2 ** Math.min(failures - 1, 5);
        await sleep(delayMs, undefined, { signal: this.stopping.signal }).catch(() => undefined);
      }
    }
  }
}
