/**
 * Keeps the images a pool uses warm on its agents, in both deployment modes (it needs only the
 * store, the registry and the agents' clients). It watches sandbox creates, applies the hot-image
 * rule of recent-image-usage.ts (at most 3 images, most created in the pool over the last 10
 * minutes, each at least twice), writes the result to the pool's `status.hotImages`, and pulls the
 * pool's `prewarmImages` and hot images in the background on every ready agent of the pool whose
 * image list (from its heartbeats) lacks them — one pull per agent at a time, a failed one retried
 * after a minute — so image-affinity placement finds them warm.
 */
import type { Logger } from "pino";
import { normalizeImageName, type SandboxPool } from "@fast-sandbox/api";
import { every, systemClock, type Clock, type Timer } from "../controller/clock.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore, Watch } from "../store/resource-store.js";
import { DEFAULT_NAMESPACE, type AgentClients } from "../fastpath/sandbox-manager.js";
import { ImagePrewarmer } from "./image-prewarmer.js";
import { RecentImageUsage, type RecentImageUsageOptions } from "./recent-image-usage.js";

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
}

export class HotImagesReconciler {
  private readonly options: HotImagesReconcilerOptions;
  private readonly usage: RecentImageUsage;
  private readonly prewarmer: ImagePrewarmer;
  private watch: Watch | undefined;
  private readonly clock: Clock;
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(options: HotImagesReconcilerOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.usage = new RecentImageUsage({ ...options.usage, clock: this.clock });
    this.prewarmer = new ImagePrewarmer({ logger: options.logger, clock: this.clock });
  }

  async start(): Promise<void> {
    // Creates of the last minutes count after a restart too: replay them from their records.
    const { items, resourceVersion } = await this.options.store.list("Sandbox");
    for (const sandbox of items) this.record(sandbox.metadata.namespace, sandbox.spec.poolRef, sandbox.spec.image, sandbox.metadata.creationTimestamp);
    this.watch = this.options.store.watch("Sandbox", { resourceVersion }, (event) => {
      if (event.type === "ADDED") {
        const sandbox = event.object;
        this.record(sandbox.metadata.namespace, sandbox.spec.poolRef, sandbox.spec.image, sandbox.metadata.creationTimestamp);
      }
    });
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
    this.stopped = true;
    this.watch?.stop();
    this.timer?.cancel();
  }

  private record(namespace: string | undefined, pool: string, image: string, created: string | undefined): void {
    const at = created ? new Date(created) : undefined;
    this.usage.record(namespace ?? DEFAULT_NAMESPACE, pool, image, ...(at && !Number.isNaN(at.getTime()) ? [at] : []));
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
