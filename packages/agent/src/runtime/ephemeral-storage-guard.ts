/**
 * Holds each sandbox to its disk limit (its pool's sandboxResources.ephemeralStorage) the way the
 * kubelet holds a Pod to its ephemeral-storage limit: by measuring, not by a quota (a node's
 * overlayfs on ext4 has none to give). Every `intervalMs` the guard reads the disk use of each
 * running sandbox that has a limit — its snapshot's usage and its run directory, walked by `du`,
 * and the files its processes removed but hold open or mapped (which no walk sees) — and evicts one
 * past it: every process of it is killed, the reason recorded with it. Its
 * agent reports it stopped and evicted; the control plane marks it Lost, reason Evicted, and its
 * failurePolicy decides (AutoRecreate: a new instance on a fresh root file system). A sandbox can
 * write past its limit for up to one interval (and what it writes at its disk's speed meanwhile).
 * Sandboxes without a limit cost nothing but the list.
 */
import type { Logger } from "pino";
import { FsbError, NotFoundError, UnavailableError } from "@fast-sandbox/api/core";
import type { Runtime } from "./runtime.js";
import { PeriodicPass } from "../periodic-pass.js";

/**
 * Checks of one sandbox that fail in a row before it is evicted all the same: a sandbox whose disk
 * use cannot be measured (a tree made to defeat the walk, a walk that never ends) cannot be held to
 * its limit, so it fails closed — after a few tries, as one failure may be a passing fault. A check
 * that fails because the runtime is away or late (containerd restarting, overloaded) says nothing
 * of the sandbox and does not count.
 */
export const FAILED_CHECKS_BEFORE_EVICTION = 3;

export interface EphemeralStorageGuardOptions {
  runtime: Pick<Runtime, "list" | "stats" | "evict">;
  /** @default 10000 (the kubelet's housekeeping interval) */
  intervalMs?: number;
  logger?: Pick<Logger, "warn">;
  /** Told of each eviction (the agent's metrics). */
  onEvicted?: (sandboxId: string) => void;
}

const MIB = 1024 ** 2;

/** A size in MiB, two decimals: what an eviction's reason shows. */
function mib(bytes: number): string {
  return `${(bytes / MIB).toFixed(2)} MiB`;
}

/** The reason an eviction records (and its sandbox's Lost condition shows, behind "agent X stopped it: "). */
export function evictionReason(usedBytes: number, limitBytes: number): string {
  return `its disk use, ${mib(usedBytes)} (root file system changes, run directory and removed files still held open), went past its limit of ${mib(limitBytes)} (the pool's sandboxResources.ephemeralStorage)`;
}

/** The runtime is away or answered too late (containerd restarting, overloaded): no fault of the sandbox. */
function runtimeAway(error: unknown): boolean {
  return error instanceof UnavailableError || (error instanceof FsbError && error.code === "deadline_exceeded");
}

/** The reason of an eviction of a sandbox whose disk use could not be measured `failed` times in a row. */
export function unmeasurableReason(failed: number, lastError: string): string {
  const cut = lastError.length > 300 ? `${lastError.slice(0, 299)}…` : lastError;
  return `its disk use could not be measured ${failed} times in a row (last: ${cut}), so it cannot be held to its limit (the pool's sandboxResources.ephemeralStorage)`;
}

export class EphemeralStorageGuard {
  private readonly runtime: EphemeralStorageGuardOptions["runtime"];
  private readonly logger: EphemeralStorageGuardOptions["logger"];
  private readonly onEvicted: EphemeralStorageGuardOptions["onEvicted"];
  private readonly passes: PeriodicPass;
  /** Failed checks in a row, by sandbox. */
  private readonly failures = new Map<string, number>();

  constructor(options: EphemeralStorageGuardOptions) {
    this.runtime = options.runtime;
    this.logger = options.logger;
    this.onEvicted = options.onEvicted;
    this.passes = new PeriodicPass(() => this.checkRunning(), options.intervalMs ?? 10_000);
  }

  /** Checks every intervalMs from now on (the timer keeps no process alive). */
  start(): void {
    this.passes.start();
  }

  async stop(): Promise<void> {
    await this.passes.stop();
  }

  /** One pass over the running sandboxes that have a limit; a pass still running when the next is due is not doubled. */
  async checkAll(): Promise<void> {
    await this.passes.run();
  }

  private async checkRunning(): Promise<void> {
    let listed;
    try {
      listed = await this.runtime.list();
    } catch (error) {
      this.logger?.warn({ err: error }, "could not list the sandboxes to check their disk use; trying again at the next interval");
      return;
    }
    const listedIds = new Set(listed.map((sandbox) => sandbox.sandboxId));
    for (const id of this.failures.keys()) if (!listedIds.has(id)) this.failures.delete(id);
    for (const sandbox of listed) {
      const limit = sandbox.ephemeralStorageBytes;
      // A paused one (a checkpoint in flight) is left to the next pass.
      if (limit === undefined || sandbox.state !== "running" || sandbox.checkpointing || sandbox.evicted) continue;
      let reason: string;
      let diskUsedBytes: number | undefined;
      try {
        ({ diskUsedBytes } = await this.runtime.stats(sandbox.sandboxId, 0, { disk: true }));
        this.failures.delete(sandbox.sandboxId);
        if (diskUsedBytes <= limit) continue;
        reason = evictionReason(diskUsedBytes, limit);
      } catch (error) {
        // Gone between the list and now: nothing to guard.
        if (error instanceof NotFoundError) continue;
        if (runtimeAway(error)) {
          this.logger?.warn(
            { sandboxId: sandbox.sandboxId, err: error },
            "could not check a sandbox's disk use: the runtime did not answer; trying again at the next interval",
          );
          continue;
        }
        const failed = (this.failures.get(sandbox.sandboxId) ?? 0) + 1;
        this.failures.set(sandbox.sandboxId, failed);
        const message = error instanceof Error ? error.message : String(error);
        if (failed < FAILED_CHECKS_BEFORE_EVICTION) {
          this.logger?.warn({ sandboxId: sandbox.sandboxId, err: error, failed }, "could not check a sandbox's disk use; trying again at the next interval");
          continue;
        }
        reason = unmeasurableReason(failed, message);
      }
      try {
        this.logger?.warn({ sandboxId: sandbox.sandboxId, diskUsedBytes, limitBytes: limit }, `evicting a sandbox: ${reason}`);
        await this.runtime.evict(sandbox.sandboxId, reason);
        this.failures.delete(sandbox.sandboxId);
        this.onEvicted?.(sandbox.sandboxId);
      } catch (error) {
        if (!(error instanceof NotFoundError))
          this.logger?.warn({ sandboxId: sandbox.sandboxId, err: error }, "could not evict a sandbox; trying again at the next interval");
      }
    }
  }
}
