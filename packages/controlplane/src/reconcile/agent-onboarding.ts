/**
 * What happens when an agent (re)connects, before it takes placements, the same in both deployment
 * modes: what it runs is adopted (reconcile/agent-adoption.ts) — by the one control-plane instance
 * that reconciles (the leader) — and its pool's `prewarmImages` it lacks are pulled onto it
 * (reconcile/image-prewarmer.ts), so the first create of such an image finds it there. The agent is
 * usable (AgentConnections' `onConnected` resolved) only after both.
 */
import type { Logger } from "pino";
import type { SandboxPool } from "@fast-sandbox/api";
import type { AgentStatus } from "../agent-client/agent-client.js";
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
}

export class AgentOnboarding {
  private readonly options: AgentOnboardingOptions;
  private readonly prewarmer: ImagePrewarmer;

  constructor(options: AgentOnboardingOptions) {
    this.options = options;
    this.prewarmer = options.prewarmer ?? new ImagePrewarmer({ logger: options.logger });
  }

  /** Adopts (leader) and prewarms; never throws: an agent that cannot be fully adopted or warmed still serves. */
  async onConnected(agentName: string, status: AgentStatus): Promise<void> {
    const { logger } = this.options;
    if (this.options.isLeader?.() ?? true) {
      await this.options.adoption
        .adopt(agentName, status)
        .catch((error: unknown) => logger.error({ err: error, agent: agentName }, "could not adopt all of the agent's sandboxes"));
    }
    await this.prewarm(agentName, status).catch((error: unknown) => logger.error({ err: error, agent: agentName }, "could not prewarm the pool's images"));
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
