/**
 * A controller: informers feed a keyed work queue, and N workers hand its keys to a `Reconciler`.
 * The reconciler is level-triggered: it reads the cached object of the key, makes one step of
 * progress, and says when it wants to look again (`requeueAfterMs`, for timed work such as expiry);
 * a failure is retried with the queue's per-key back-off. A key is never reconciled by two workers
 * at once — so a reconcile that never settles holds its key for good. Every call of the stores and
 * the fleet has a time limit for that reason; one still running after `slowReconcileMs` is logged
 * (an error, naming the key), not abandoned: a second reconcile of the key beside it could do its
 * work twice (place a sandbox twice).
 */
import type { Logger } from "pino";
import { FsbError } from "@fast-sandbox/api";
import type { ResourceByKind, ResourceKind } from "../store/resource-store.js";
import { systemClock, type Clock } from "./clock.js";
import type { Informer } from "./informer.js";
import { objectKey } from "./object-key.js";
import { WorkQueue } from "./work-queue.js";

export interface ReconcileResult {
  /** Reconcile the key again after this long (an earlier requeue of the key wins). */
  requeueAfterMs?: number;
}

export interface Reconciler {
  /** One step of progress for the object of `key` (`namespace/name`), which may no longer exist. */
  reconcile(key: string): Promise<ReconcileResult | void>;
}

export interface ControllerOptions {
  /** Names the controller in logs. */
  name: string;
  reconciler: Reconciler;
  logger: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** Keys reconciled at the same time (different keys). @default 4 */
  workers?: number;
  /** Delay before the first retry of a failed key; doubles per further failure. @default 200 */
  initialBackoffMs?: number;
  /** The longest delay between retries of a failing key. @default 60000 */
  maxBackoffMs?: number;
  /** A reconcile still running after this long is logged as stuck. @default 300000 */
  slowReconcileMs?: number;
}

/** Which keys an informer's change makes the controller reconcile. @default the changed object's own key */
export type KeysOf<T> = (object: T) => readonly string[];

/** What the controller does with its informers, whatever their kind. */
type InformerLifecycle = Pick<Informer<ResourceKind>, "start" | "waitForSync" | "isIdle" | "whenIdle" | "stop">;

export class Controller {
  readonly queue: WorkQueue;
  private readonly options: ControllerOptions;
  private readonly clock: Clock;
  private readonly informers: InformerLifecycle[] = [];
  /** Remove this controller's handlers from its informers (which other controllers may share). */
  private readonly removeHandlers: (() => void)[] = [];
  private workers: Promise<void>[] = [];
  private started = false;
  /** Between start() and the first stop(): the informers are held. */
  private holdingInformers = false;

  constructor(options: ControllerOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.queue = new WorkQueue({
      clock: this.clock,
      ...(options.initialBackoffMs !== undefined ? { initialBackoffMs: options.initialBackoffMs } : {}),
      ...(options.maxBackoffMs !== undefined ? { maxBackoffMs: options.maxBackoffMs } : {}),
    });
  }

  /**
   * Reconciles the keys of every object the informer adds, changes or deletes. Before start(). The
   * informer may be shared with other controllers (it may even run already): start() and stop() hold
   * and release it.
   */
  watch<K extends ResourceKind>(informer: Informer<K>, keysOf: KeysOf<ResourceByKind[K]> = (object) => [objectKey(object)]): void {
    const enqueue = (object: ResourceByKind[K]): void => {
      for (const key of keysOf(object)) this.queue.add(key);
    };
    this.removeHandlers.push(informer.addHandlers({ onAdd: enqueue, onUpdate: (_previous, current) => enqueue(current), onDelete: enqueue }));
    this.informers.push(informer);
  }

  /** Reconciles the key soon (a change the informers do not see, e.g. an agent that stopped answering). */
  enqueue(key: string): void {
    this.queue.add(key);
  }

  /** Starts the informers, waits until their caches hold the first list, then starts the workers. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    for (const informer of this.informers) informer.start();
    this.holdingInformers = true;
    await Promise.all(this.informers.map((informer) => informer.waitForSync()));
    const count = Math.max(1, this.options.workers ?? 4);
    this.workers = Array.from({ length: count }, () => this.work());
    this.options.logger.debug({ controller: this.options.name, workers: count }, "controller started");
  }

  /** Stops taking keys, waits for the reconciles in progress, then leaves the informers (stopping those nobody else holds). */
  async stop(): Promise<void> {
    this.queue.shutDown();
    for (const remove of this.removeHandlers.splice(0)) remove();
    await Promise.all(this.workers);
    // Only what start() held is released: a shared informer is not stopped under its other users.
    if (!this.holdingInformers) return;
    this.holdingInformers = false;
    for (const informer of this.informers) informer.stop();
  }

  /**
   * Resolves when nothing is left to do now: every change the informers have received is
   * delivered, no key is ready or being reconciled (keys waiting for a time do not count). Tests
   * use it with a FakeClock: change something, advance the clock, await whenIdle(), assert.
   */
  async whenIdle(): Promise<void> {
    for (;;) {
      await Promise.all(this.informers.map((informer) => informer.whenIdle()));
      await this.queue.whenIdle();
      // A reconcile's own writes may have produced events still on their way to the informers.
      await new Promise((resolve) => setImmediate(resolve));
      if (this.queue.isIdle() && this.informers.every((informer) => informer.isIdle())) return;
    }
  }

  private async work(): Promise<void> {
    const { reconciler, logger, name } = this.options;
    const slowMs = this.options.slowReconcileMs ?? 300_000;
    for (let key = await this.queue.get(); key !== undefined; key = await this.queue.get()) {
      const watchdog = this.clock.setTimeout(
        () => logger.error({ controller: name, key, runningMs: slowMs }, "reconcile still running; the key is not reconciled again until it ends"),
        slowMs,
      );
      try {
        const result = await reconciler.reconcile(key);
        this.queue.forget(key);
        if (result?.requeueAfterMs !== undefined) this.queue.addAfter(key, result.requeueAfterMs);
      } catch (error) {
        this.queue.addRateLimited(key);
        // A conflict is optimistic concurrency at work (the cache was behind a write): routine, not news.
        const level = error instanceof FsbError && error.code === "conflict" ? "debug" : "warn";
        logger[level]({ err: error, controller: name, key, failures: this.queue.failures(key) }, "reconcile failed; retrying after a back-off");
      } finally {
        watchdog.cancel();
        this.queue.done(key);
      }
    }
  }
}
