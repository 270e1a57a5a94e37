/**
 * Level-triggered lifecycle of sandboxes. On every pass, for each sandbox, it reads desired and
 * observed state and makes one step of progress, so a crash or a missed event only delays a step:
 * - deletion: the cleanup finalizer;
 * - expiry: sandboxes whose `expireTime` has passed are deleted;
 * - placement: `Pending` sandboxes nobody is placing (created through the store, or left by a
 *   create that did not finish) are placed;
 * - unfinished creates: `Bound` sandboxes nobody is creating become `Running` when their agent runs
 *   them, and are removed (never acknowledged) when it does not;
 * - agent connectivity: the `AgentConnected` condition follows the agent within a heartbeat or two;
 * - failure policy: after `recoveryTimeoutSeconds` without the agent, `Manual` sandboxes become
 *   `Lost` (kept, deletable, slot released) and `AutoRecreate` ones get a new instance elsewhere;
 * - reset: a changed `resetRevision` replaces the running instance.
 */
import type { Logger } from "pino";
import type { Sandbox } from "@fast-sandbox/api";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { ResourceStore, Watch } from "../store/resource-store.js";
import { DEFAULT_NAMESPACE, sandboxKey, type SandboxManager } from "../fastpath/sandbox-manager.js";
import { writeStatus } from "../fastpath/sandbox-status.js";

/** @default 30 */
export const DEFAULT_RECOVERY_TIMEOUT_SECONDS = 30;
/** Pause between attempts of a step that failed (placement, recreation). */
const RETRY_DELAY_MS = 2000;

/** What the deployment mode knows about its agents: connectivity and their last reported sandboxes. */
export interface AgentObserver {
  /** Whether the agent answers and since when; undefined when the agent does not exist (any more). */
  agentConnectivity(name: string): { connected: boolean; since: Date } | undefined;
  /** The agent's last status and when it arrived. */
  observedStatus(name: string): { status: { sandboxes: readonly { sandboxId: string; state: string; exitCode?: number | undefined }[] }; at: Date } | undefined;
}

export interface SandboxReconcilerOptions {
  store: ResourceStore;
  manager: SandboxManager;
  registry: AgentRegistry;
  agents: AgentObserver;
  logger: Logger;
  clock?: () => Date;
  /** Full resync period. @default 1000 */
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
  /** Steps that failed, by sandbox key: not retried before this time. */
  private readonly retryAt = new Map<string, number>();
  /** When a sandbox was first seen Bound with nobody creating it (unfinished create). */
  private readonly boundSince = new Map<string, Date>();
  /** When an agent was first seen missing altogether, by name. */
  private readonly goneSince = new Map<string, Date>();
  /** Background steps (placements, recreations) in flight, by key. */
  private readonly inFlight = new Map<string, Promise<unknown>>();

  constructor(options: SandboxReconcilerOptions) {
    this.options = options;
    this.clock = options.clock ?? (() => new Date());
  }

  async start(): Promise<void> {
    const { resourceVersion } = await this.options.store.list("Sandbox");
    // Changes wake the loop at once; the timer catches expiry, timeouts and anything missed.
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
    const keys = new Set<string>();
    for (const sandbox of items) {
      if (this.stopped) return;
      const key = sandboxKey(sandbox.metadata.namespace ?? DEFAULT_NAMESPACE, sandbox.metadata.name);
      keys.add(key);
      try {
        await this.reconcile(sandbox, key);
      } catch (error) {
        this.options.logger.warn({ err: error, sandbox: key }, "reconcile failed; will retry");
      }
    }
    for (const key of this.boundSince.keys()) if (!keys.has(key)) this.boundSince.delete(key);
    for (const key of this.retryAt.keys()) if (!keys.has(key)) this.retryAt.delete(key);
  }

  /** Runs a long step (placement, recreation) without holding up the pass; one per sandbox at a time, retried after a pause when it fails. */
  private background(key: string, what: string, step: () => Promise<unknown>): void {
    if (this.inFlight.has(key) || (this.retryAt.get(key) ?? 0) > Date.now()) return;
    const run = step()
      .then(
        () => this.retryAt.delete(key),
        (error: unknown) => {
          this.retryAt.set(key, Date.now() + RETRY_DELAY_MS);
          this.options.logger.warn({ err: error, sandbox: key }, `${what} failed; will retry`);
        },
      )
      .finally(() => {
        this.inFlight.delete(key);
        this.trigger();
      });
    this.inFlight.set(key, run);
  }

  private async reconcile(sandbox: Sandbox, key: string): Promise<void> {
    const { store, manager } = this.options;
    const namespace = sandbox.metadata.namespace ?? DEFAULT_NAMESPACE;
    if (sandbox.metadata.deletionTimestamp) {
      await manager.finalize(sandbox);
      return;
    }
    const now = this.clock();
    if (sandbox.spec.expireTime && Date.parse(sandbox.spec.expireTime) <= now.getTime()) {
      this.options.logger.info({ sandbox: key }, "sandbox expired; deleting it");
      await writeStatus(store, sandbox, { phase: "Expired" });
      await manager.delete(namespace, sandbox.metadata.name);
      return;
    }
    if (manager.isBusy(namespace, sandbox.metadata.name) || this.inFlight.has(key)) return;
    const phase = sandbox.status?.phase ?? "Pending";
    if (phase === "Pending") {
      this.background(key, "placement", () => manager.placeStored(sandbox));
      return;
    }
    if (phase === "Bound") {
      this.finishBound(sandbox, key, now);
      return;
    }
    this.boundSince.delete(key);
    if (phase !== "Running" && phase !== "Lost") return;
    await this.followAgent(sandbox, key, now);
  }

  /** A Bound sandbox nobody here is creating: its create was cut short (crash). The agent's report decides. */
  private finishBound(sandbox: Sandbox, key: string, now: Date): void {
    const since = this.boundSince.get(key) ?? now;
    this.boundSince.set(key, since);
    const agentName = sandbox.status?.assignedPod ?? "";
    const sandboxId = sandbox.status?.sandboxID ?? "";
    const observed = this.options.agents.observedStatus(agentName);
    const connectivity = this.options.agents.agentConnectivity(agentName);
    // Only a report that arrived after we saw the record Bound counts (an older one may predate the create).
    if (connectivity?.connected && (!observed || observed.at <= since)) return;
    const reported = connectivity?.connected ? observed?.status.sandboxes.find((s) => s.sandboxId === sandboxId) : undefined;
    if (reported?.state === "creating") return;
    const recreating = sandbox.status?.conditions?.some((c) => c.type === "Recreated" && c.status === "Unknown") === true;
    if (reported && (reported.state === "running" || reported.exitCode !== undefined)) {
      this.background(key, "adopting a finished create", () => this.options.manager.adoptRunning(sandbox));
      return;
    }
    if (!connectivity?.connected) {
      // The agent is away: the failure policy's clock decides, as for a running sandbox.
      if (now.getTime() - since.getTime() < recoveryTimeoutMs(sandbox)) return;
    }
    if (recreating || sandbox.status?.recreations) {
      this.background(key, "recreation", () => this.options.manager.replaceInstance(sandbox, "AgentLost"));
      return;
    }
    this.background(key, "removing an unfinished create", () =>
      this.options.manager.abandon(sandbox, reported ? `its task is ${reported.state}` : `agent ${agentName} does not run it`),
    );
  }

  private async followAgent(sandbox: Sandbox, key: string, now: Date): Promise<void> {
    const { store, manager } = this.options;
    const agentName = sandbox.status?.assignedPod;
    if (!agentName) return;
    const connectivity = this.options.agents.agentConnectivity(agentName);
    let connected = connectivity?.connected === true;
    if (connectivity) this.goneSince.delete(agentName);
    else if (!this.goneSince.has(agentName)) this.goneSince.set(agentName, now);
    const phase = sandbox.status?.phase;
    const previous = sandbox.status?.conditions?.find((c) => c.type === "AgentConnected");

    if (sandbox.spec.resetRevision && sandbox.spec.resetRevision !== sandbox.status?.acceptedResetRevision) {
      this.background(key, "reset", () => manager.replaceInstance(sandbox, "Reset"));
      return;
    }
    if (connected && phase === "Lost") {
      // The agent is back; adoption turns the sandbox Running again when the agent still runs it.
      connected = false;
    }
    if (connected) {
      if (previous && previous.status !== "True") {
        await writeStatus(
          store,
          sandbox,
          {},
          { type: "AgentConnected", status: "True", reason: "AgentReady", message: `agent ${agentName} answers again` },
          now,
        );
      }
      return;
    }
    if (phase === "Running" && previous?.status !== "False") {
      const reason = connectivity ? "AgentNotResponding" : "AgentGone";
      const message = connectivity
        ? `agent ${agentName} does not answer; failurePolicy ${sandbox.spec.failurePolicy ?? "Manual"} acts after ${recoveryTimeoutMs(sandbox) / 1000}s`
        : `agent ${agentName} no longer exists; failurePolicy ${sandbox.spec.failurePolicy ?? "Manual"} acts after ${recoveryTimeoutMs(sandbox) / 1000}s`;
      await writeStatus(store, sandbox, {}, { type: "AgentConnected", status: "False", reason, message }, now);
      return;
    }
    const lostSince = Date.parse(previous?.lastTransitionTime ?? "") || (connectivity?.since ?? this.goneSince.get(agentName) ?? now).getTime();
    const waited = now.getTime() - lostSince;
    if (waited < recoveryTimeoutMs(sandbox)) return;
    if (sandbox.spec.failurePolicy === "AutoRecreate") {
      this.background(key, "recreation", () => manager.replaceInstance(sandbox, "AgentLost"));
      return;
    }
    if (phase === "Running") {
      this.options.logger.warn(
        { sandbox: key, agent: agentName },
        "agent unreachable beyond recoveryTimeoutSeconds; marking the sandbox Lost (failurePolicy Manual)",
      );
      this.options.registry.release(key);
      await writeStatus(
        store,
        sandbox,
        { phase: "Lost", endpoints: [] },
        {
          type: "Ready",
          status: "False",
          reason: "AgentLost",
          message: `agent ${agentName} was unreachable for ${Math.round(waited / 1000)}s (recoveryTimeoutSeconds ${recoveryTimeoutMs(sandbox) / 1000}); failurePolicy Manual: delete the sandbox, or set failurePolicy AutoRecreate`,
        },
        now,
      );
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.watch?.stop();
    await this.running;
    await Promise.allSettled(this.inFlight.values());
  }
}

function recoveryTimeoutMs(sandbox: Sandbox): number {
  return (sandbox.spec.recoveryTimeoutSeconds ?? DEFAULT_RECOVERY_TIMEOUT_SECONDS) * 1000;
}
