/**
 * Settles pauses whose outcome is not known, in both deployment modes (on Kubernetes, on the leader
 * only): a Paused record whose Paused condition is Unknown — its checkpoint call got no answer, or a
 * crash or another replica's end cut it short — stays so until someone finds out what became of it,
 * while its instance may run on, holding a slot, with no end. Once its pause cannot still be under
 * way (SandboxPauses.settleDueInMs: a while after its call came back unanswered, and
 * PAUSE_TAKES_AT_MOST_MS after it began, whatever became of it) SandboxPauses.settle asks its agent
 * and records the outcome: paused, Running again with its end, or Lost.
 *
 * Level-triggered, one `reconcile(key)` per sandbox over the shared Sandbox informer: a record not
 * due yet is looked at again when it is (a timed requeue), one whose agent cannot tell yet a little
 * later, and every change of a record brings it back. The settle runs as the sandbox's one operation
 * in this process (`exclusively`, after any pause or resume of it here); one refused because the
 * sandbox is being created or deleted here is tried again shortly.
 */
import type { Logger } from "pino";
import { FailedPreconditionError } from "@fast-sandbox/api";
import { systemClock, type Clock } from "../controller/clock.js";
import { Controller, type ReconcileResult, type Reconciler } from "../controller/controller.js";
import type { Informer } from "../controller/informer.js";
import { parseObjectKey } from "../controller/object-key.js";
import type { SandboxPauses } from "../fastpath/checkpoint-pauses.js";
import type { ResourceStore } from "../store/resource-store.js";
import { sandboxInformer } from "./sandbox-informer.js";

/** How soon a sandbox the fast path is creating or deleting here is looked at again. */
const BUSY_RECHECK_MS = 1000;

export interface PauseSettlerOptions {
  /** Says when a pause's outcome is due and finds it out. */
  pauses: Pick<SandboxPauses, "settleDueInMs" | "settle">;
  store: ResourceStore;
  logger: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** The Sandbox informer shared with the control plane's other controllers. @default one of its own */
  informer?: Informer<"Sandbox">;
  /** The longest pause between retries of a failing settle. @default 60000 */
  maxRetryDelayMs?: number;
}

export class PauseSettler implements Reconciler {
  private readonly options: PauseSettlerOptions;
  private readonly informer: Informer<"Sandbox">;
  private readonly controller: Controller;
  private readonly logger: Logger;

  constructor(options: PauseSettlerOptions) {
    this.options = options;
    const clock = options.clock ?? systemClock;
    this.logger = options.logger.child({ component: "pause-settler" });
    this.informer = options.informer ?? sandboxInformer({ store: options.store, logger: options.logger, clock });
    this.controller = new Controller({
      name: "pause-settler",
      reconciler: this,
      logger: options.logger,
      clock,
      workers: 2,
      maxBackoffMs: options.maxRetryDelayMs ?? 60_000,
    });
    this.controller.watch(this.informer);
  }

  /** Lists the sandboxes, looks at each, and from then on at every change. */
  start(): Promise<void> {
    return this.controller.start();
  }

  stop(): Promise<void> {
    return this.controller.stop();
  }

  /** Resolves when every change seen so far is reconciled (timed requeues still pending do not count); for tests. */
  whenIdle(): Promise<void> {
    return this.controller.whenIdle();
  }

  async reconcile(key: string): Promise<ReconcileResult | void> {
    const sandbox = this.informer.get(key);
    const dueInMs = sandbox ? this.options.pauses.settleDueInMs(sandbox) : undefined;
    if (dueInMs === undefined) return;
    if (dueInMs > 0) return { requeueAfterMs: dueInMs };
    const { namespace, name } = parseObjectKey(key);
    try {
      const settled = await this.options.pauses.settle(namespace, name);
      if (settled.outcome !== "waiting") return;
      this.logger.debug({ sandbox: key, why: settled.why, retryInMs: settled.retryInMs }, "the outcome of a pause is not known yet");
      return { requeueAfterMs: settled.retryInMs };
    } catch (error) {
      // Being created or deleted here right now: that operation's writes come back as changes.
      if (!(error instanceof FailedPreconditionError)) throw error;
      return { requeueAfterMs: BUSY_RECHECK_MS };
    }
  }
}
