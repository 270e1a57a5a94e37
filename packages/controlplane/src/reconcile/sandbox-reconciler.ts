/**
 * Level-triggered lifecycle of sandboxes: finishes deletions (finalizer), expires sandboxes whose
 * `expireTime` has passed, and reports agent connectivity in a condition. It reads desired and
 * observed state on every pass, so a crash or a missed event only delays, never loses, a step.
 */
import type { Logger } from "pino";
import type { Sandbox } from "@fast-sandbox/api";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore, Watch } from "../store/resource-store.js";
import { DEFAULT_NAMESPACE, sandboxKey, type SandboxManager } from "../fastpath/sandbox-manager.js";
import { writeStatus } from "../fastpath/sandbox-status.js";

export interface SandboxReconcilerOptions {
  store: ResourceStore;
  manager: SandboxManager;
  registry: AgentRegistry;
  logger: Logger;
  clock?: () => Date;
  /** Full resync period. */
  resyncIntervalMs?: number;
}

export class SandboxReconciler {
  private readonly options: SandboxReconcilerOptions;
  private readonly clock: () => Date;
  private timer: NodeJS.Timeout | undefined;
  private watch: Watch | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(options: SandboxReconcilerOptions) {
    this.options = options;
    this.clock = options.clock ?? (() => new Date());
  }

  async start(): Promise<void> {
    const { resourceVersion } = await this.options.store.list("Sandbox");
    // Changes wake the loop at once; the timer catches expiry and anything missed.
    this.watch = this.options.store.watch("Sandbox", { resourceVersion }, () => this.trigger());
    this.timer = setInterval(() => this.trigger(), this.options.resyncIntervalMs ?? 1000);
    this.timer.unref();
    this.trigger();
  }

  /** Runs a pass now, or right after the current one. */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((error: unknown) => this.options.logger.error({ err: error }, "sandbox reconcile pass failed"))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.trigger();
        }
      });
  }

  /** One pass over every sandbox; resolves when done (tests call it directly). */
  async pass(): Promise<void> {
    const { items } = await this.options.store.list("Sandbox");
    for (const sandbox of items) {
      if (this.stopped) return;
      try {
        await this.reconcile(sandbox);
      } catch (error) {
        this.options.logger.warn({ err: error, sandbox: `${sandbox.metadata.namespace}/${sandbox.metadata.name}` }, "reconcile failed; will retry");
      }
    }
  }

  private async reconcile(sandbox: Sandbox): Promise<void> {
    const { store, manager, registry } = this.options;
    if (sandbox.metadata.deletionTimestamp) {
      await manager.finalize(sandbox);
      return;
    }
    const now = this.clock();
    const namespace = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    if (sandbox.spec.expireTime && Date.parse(sandbox.spec.expireTime) <= now.getTime()) {
      this.options.logger.info({ sandbox: sandboxKey(namespace, sandbox.metadata.name) }, "sandbox expired; deleting it");
      await writeStatus(store, sandbox, { phase: "Expired" });
      await manager.delete(namespace, sandbox.metadata.name);
      return;
    }
    const agentName = sandbox.status?.assignedPod;
    const phase = sandbox.status?.phase;
    if (!agentName || (phase !== "Running" && phase !== "Lost")) return;
    const agent = registry.listAgents({ namespace, pool: sandbox.spec.poolRef }).find((a) => a.name === agentName);
    const connected = agent?.ready === true;
    const previous = sandbox.status?.conditions?.find((c) => c.type === "AgentConnected");
    const wanted = connected ? "True" : "False";
    if (previous?.status === wanted) return;
    if (!previous && connected) return;
    await writeStatus(
      store,
      sandbox,
      {},
      connected
        ? { type: "AgentConnected", status: "True", reason: "AgentReady" }
        : { type: "AgentConnected", status: "False", reason: agent ? "AgentNotReady" : "AgentGone", message: `agent ${agentName} is not reachable` },
      now,
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.watch?.stop();
    await this.running;
  }
}
