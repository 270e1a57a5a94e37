/**
 * What happens when an agent (re)connects, before it takes placements, the same in both deployment
 * modes: what it runs is adopted (reconcile/agent-adoption.ts) — by the one control-plane instance
 * that reconciles (the leader) — and its pool's `prewarmImages` it lacks are pulled onto it
 * (reconcile/image-prewarmer.ts), so the first create of such an image finds it there. The agent is
 * usable (AgentConnections' `onConnected` resolved) only after both. An adoption that fails (the
 * store or the agent did not answer) is tried again in the background, with a fresh status of the
 * agent and a back-off, until it succeeds, the agent connects anew (which adopts) or goes, or this
 * instance stops leading.
 */
import type { Logger } from "pino";
import type { SandboxPool } from "@fast-sandbox/api";
import type { AgentStatus } from "../agent-client/agent-client.js";
import { systemClock, type Clock, type Timer } from "../controller/clock.js";
import type { AgentClients } from "../fastpath/sandbox-manager.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { AgentAdoption } from "./agent-adoption.js";
import { ImagePrewarmer } from "./image-prewarmer.js";

export interface AgentOnboardingOptions {
  adoption: AgentAdoption;
  registry: AgentRegistry;
  agents: AgentClients;
  /** The pool an agent belongs to, as last seen; undefined when unknown (nothing to prewarm). */
  poolOf(agentName: string): SandboxPool | undefined;
  logger: Logger;
  /** Whether this instance adopts (the leader's work). @default always */
  isLeader?(): boolean;
  /** @default an ImagePrewarmer with its defaults */
  prewarmer?: ImagePrewarmer;
  /** Times the adoption's retries. @default systemClock */
  clock?: Clock;
  /** The first pause before adopting again after a failure; it doubles per failure, up to 30 s. @default 1000 */
  adoptionRetryMs?: number;
}

/** The longest pause between two tries of an adoption. */
const MAX_ADOPTION_RETRY_MS = 30_000;

export class AgentOnboarding {
  private readonly options: AgentOnboardingOptions;
  private readonly prewarmer: ImagePrewarmer;
  private readonly clock: Clock;
  /** The pending retry of each agent's adoption. */
  private readonly retries = new Map<string, Timer>();
  private stopped = false;

  constructor(options: AgentOnboardingOptions) {
    this.options = options;
    this.prewarmer = options.prewarmer ?? new ImagePrewarmer({ logger: options.logger });
    this.clock = options.clock ?? systemClock;
  }

  /** Adopts (leader) and prewarms; never throws: an agent that cannot be fully adopted or warmed still serves, and its adoption is tried again. */
  async onConnected(agentName: string, status: AgentStatus): Promise<void> {
    const { logger } = this.options;
    // A new connection adopts afresh (a retry of an earlier one's adoption is moot: `adopt` cancels it).
    this.retries.get(agentName)?.cancel();
    this.retries.delete(agentName);
    if (this.isLeader()) await this.adopt(agentName, status);
    await this.prewarm(agentName, status).catch((error: unknown) => logger.error({ err: error, agent: agentName }, "could not prewarm the pool's images"));
  }

  /** Adopts what the agent runs (also for a new leader's first look at every agent); never throws: a failure is tried again later. */
  async adopt(agentName: string, status: AgentStatus): Promise<void> {
    this.retries.get(agentName)?.cancel();
    this.retries.delete(agentName);
    await this.options.adoption.adopt(agentName, status).catch((error: unknown) => {
      this.options.logger.error({ err: error, agent: agentName }, "could not adopt all of the agent's sandboxes; adopting again later");
      this.retryAdoption(agentName, 1);
    });
  }

  /** Cancels the adoptions waiting to be tried again. */
  stop(): void {
    this.stopped = true;
    for (const timer of this.retries.values()) timer.cancel();
    this.retries.clear();
  }

  private isLeader(): boolean {
    return this.options.isLeader?.() ?? true;
  }

  private retryAdoption(agentName: string, failures: number): void {
    if (this.stopped) return;
    const delayMs = Math.min(MAX_ADOPTION_RETRY_MS, (this.options.adoptionRetryMs ?? 1000) * 2 ** (failures - 1));
    const timer = this.clock.setTimeout(() => {
      if (this.retries.get(agentName) !== timer) return;
      this.retries.delete(agentName);
      void this.adoptAgain(agentName, failures);
    }, delayMs);
    this.retries.set(agentName, timer);
  }

  private async adoptAgain(agentName: string, failures: number): Promise<void> {
    const client = this.options.agents.get(agentName);
    // Gone (its next connection adopts), or no longer this instance's work (the next leader adopts every agent).
    if (this.stopped || !client || !this.isLeader()) return;
    try {
      // What it runs now: the status of the failed try is old.
      await this.options.adoption.adopt(agentName, await client.status());
      this.options.logger.info({ agent: agentName, failures }, "adopted the agent's sandboxes after failed tries");
    } catch (error) {
      this.options.logger.warn({ err: error, agent: agentName, failures: failures + 1 }, "could not adopt all of the agent's sandboxes; adopting again later");
      // Unless a new connection took over meanwhile (its own adoption runs).
      if (!this.retries.has(agentName)) this.retryAdoption(agentName, failures + 1);
    }
  }

  /** Pulls the pool's prewarmImages the agent lacks (never fails: see image-prewarmer.ts). */
  private async prewarm(agentName: string, status: AgentStatus): Promise<void> {
    const images = this.options.poolOf(agentName)?.spec.prewarmImages ?? [];
    const client = this.options.agents.get(agentName);
    if (images.length === 0 || !client) return;
    const { pulled } = await this.prewarmer.prewarm(agentName, client, images, status.images);
    // Image affinity sees them at once, not at the next heartbeat.
    if (pulled.length > 0 && this.options.registry.getAgent(agentName)) this.options.registry.setImages(agentName, [...status.images, ...pulled]);
  }
}
