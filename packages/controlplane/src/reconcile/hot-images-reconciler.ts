/**
 * Keeps the images a pool uses warm on its agents, in both deployment modes (it needs only the
 * store, the registry and the agents' clients). It watches sandbox creates (each once its sandbox
 * has run: a create that failed does not count), applies the hot-image
 * rule of recent-image-usage.ts (at most 3 images, most created in the pool over the last 10
 * minutes, each at least twice), writes the result to the pool's `status.hotImages`, and pulls the
 * pool's `prewarmImages` and hot images in the background on every ready agent of the pool whose
 * image list (from its heartbeats) lacks them — one pull per agent at a time, a failed one retried
 * after a minute — so image-affinity placement finds them warm.
 */
import type { Logger } from "pino";
import { normalizeImageName, type Sandbox, type SandboxPool } from "@fast-sandbox/api";
import { every, systemClock, type Clock, type Timer } from "../controller/clock.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { Informer } from "../controller/informer.js";
import type { ResourceStore } from "../store/resource-store.js";
import { DEFAULT_NAMESPACE, type AgentClients } from "../fastpath/sandbox-manager.js";
import { ImagePrewarmer } from "./image-prewarmer.js";
import { RecentImageUsage, type RecentImageUsageOptions } from "./recent-image-usage.js";
import { sandboxInformer } from "./sandbox-informer.js";

/** Whether the sandbox has run: its process was started (a create that failed never was). */
function hasRun(sandbox: Sandbox): boolean {
  return Boolean(sandbox.status?.startTime) || sandbox.status?.phase === "Running";
}

function identityOf(sandbox: Sandbox): string {
  return sandbox.metadata.uid ?? `${sandbox.metadata.namespace ?? DEFAULT_NAMESPACE}/${sandbox.metadata.name}`;
}

export interface HotImagesReconcilerOptions {
  store: ResourceStore;
  registry: AgentRegistry;
  agents: AgentClients;
  logger: Logger;
  /** How often hot images are recomputed, written and pre-pulled. @default 5000 */
  intervalMs?: number;
  /** The hot-image rule's bounds (window, count, minimum uses). @default 10 minutes, 3, 2 */
  usage?: Omit<RecentImageUsageOptions, "clock">;
  /** Times the passes, the hot-image window and the background pulls. @default systemClock */
  clock?: Clock;
  /**
   * The control plane's shared informer of Sandboxes (sandbox-informer.ts), which tells of every
   * sandbox added, across ended watches and relists. @default one of its own
   */
  informer?: Informer<"Sandbox">;
}

export class HotImagesReconciler {
  private readonly options: HotImagesReconcilerOptions;
  private readonly usage: RecentImageUsage;
  private readonly prewarmer: ImagePrewarmer;
  private readonly informer: Informer<"Sandbox">;
  private removeHandlers: (() => void) | undefined;
  /** Whether start() holds the informer (a stop() before any start() must not release another user's hold). */
  private holding = false;
  private readonly clock: Clock;
  /** The sandboxes whose create was counted (uid, else namespace/name), until they are deleted. */
  private readonly counted = new Set<string>();
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(options: HotImagesReconcilerOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.usage = new RecentImageUsage({ ...options.usage, clock: this.clock });
    this.prewarmer = new ImagePrewarmer({ logger: options.logger, clock: this.clock });
    this.informer = options.informer ?? sandboxInformer({ store: options.store, logger: options.logger, clock: this.clock });
  }

  async start(): Promise<void> {
    // Every sandbox the informer holds is told first (creates of the last minutes count after a
    // restart too: their creationTimestamp places them), then every one added — across watches the
    // API server ends and relists after a compaction.
    // A create counts once its sandbox ran: one that failed (an image that cannot be pulled) would
    // otherwise make its image hot, to be pulled on every agent again and again.
    this.removeHandlers = this.informer.addHandlers({
      onAdd: (sandbox) => this.countIfRan(sandbox),
      onUpdate: (_previous, sandbox) => this.countIfRan(sandbox),
      onDelete: (sandbox) => this.counted.delete(identityOf(sandbox)),
    });
    this.informer.start();
    this.holding = true;
    await this.informer.waitForSync();
    this.timer = every(this.clock, this.options.intervalMs ?? 5000, () => this.trigger());
  }

  /** Runs a pass unless one is running. */
  trigger(): void {
    if (this.stopped || this.running) return;
    this.running = this.pass()
      .catch((error: unknown) => this.options.logger.warn({ err: error }, "hot image pass failed; retrying at the next one"))
      .finally(() => (this.running = undefined));
  }

  /** One pass over every pool (tests call it directly). */
  async pass(): Promise<void> {
    const { items } = await this.options.store.list("SandboxPool");
    for (const pool of items) {
      if (this.stopped) return;
      const namespace = pool.metadata.namespace ?? DEFAULT_NAMESPACE;
      const hot = this.usage.hotImages(namespace, pool.metadata.name);
      await this.writeHotImages(pool, hot);
      this.warm(namespace, pool.metadata.name, [...(pool.spec.prewarmImages ?? []), ...hot]);
    }
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.removeHandlers?.();
    if (this.holding) this.informer.stop();
    this.timer?.cancel();
  }

  /** Counts the sandbox's create once, when it has run (at its creation time). */
  private countIfRan(sandbox: Sandbox): void {
    if (!hasRun(sandbox)) return;
    const identity = identityOf(sandbox);
    if (this.counted.has(identity)) return;
    this.counted.add(identity);
    const created = sandbox.metadata.creationTimestamp;
    const at = created ? new Date(created) : undefined;
    this.usage.record(
      sandbox.metadata.namespace ?? DEFAULT_NAMESPACE,
      sandbox.spec.poolRef,
      sandbox.spec.image,
      ...(at && !Number.isNaN(at.getTime()) ? [at] : []),
    );
  }

  private async writeHotImages(pool: SandboxPool, hot: string[]): Promise<void> {
    const previous = pool.status?.hotImages ?? [];
    if (previous.length === hot.length && previous.every((image, i) => image === hot[i])) return;
    try {
      // Written on the object as read this pass: a concurrent status write wins, and the next pass tries again.
      await this.options.store.updateStatus("SandboxPool", { ...pool, status: { ...pool.status, hotImages: hot } });
    } catch (error) {
      this.options.logger.debug({ err: error, pool: pool.metadata.name }, "could not write the pool's hot images; next pass");
    }
  }

  /** Starts a background pull on each ready agent of the pool that lacks one of the images. */
  private warm(namespace: string, pool: string, images: string[]): void {
    if (images.length === 0) return;
    const wanted = [...new Set(images.map(normalizeImageName))];
    for (const agent of this.options.registry.listAgents({ namespace, pool })) {
      if (!agent.ready || this.prewarmer.backgroundPull(agent.name)) continue;
      const client = this.options.agents.get(agent.name);
      if (!client) continue;
      const present = new Set(agent.images.map(normalizeImageName));
      for (const image of wanted) {
        if (!present.has(image) && this.prewarmer.pullInBackground(agent.name, client, image)) break;
      }
    }
  }
}
