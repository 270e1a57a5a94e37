/**
 * The `AgentFleet` port: where a deployment mode runs a pool's agents. The core (the pool sizer,
 * the registry, connectivity and adoption) decides how many agents a pool needs and which idle ones
 * go; a fleet only starts and stops them and says when each one can be reached and when it cannot.
 *
 * Adapters: supervised local processes (embedded mode, `embedded-agent-fleet.ts`) and Pods owned by
 * the SandboxPool (Kubernetes mode, `kubernetes-agent-fleet.ts`).
 *
 * Events are delivered asynchronously, never inside `startAgents`/`stopAgents`: a caller cannot
 * depend on an agent being ready, or gone, when the call returns.
 */
import { FsbError, type SandboxPool } from "@fast-sandbox/api";
import type { Logger } from "pino";

/** A pool, by namespace and name. */
export interface PoolRef {
  namespace: string;
  pool: string;
}

/** An agent the fleet runs, as the core sees it. */
export interface FleetAgent extends PoolRef {
  /** Unique in the fleet: the Pod's name (Kubernetes: one Pod per name is reported, of whatever namespace), `<pool>-<n>` (embedded). */
  name: string;
  /** Whether the agent can be reached at `endpoint` now. */
  ready: boolean;
  /** `host:port` of the agent API; set while ready. */
  endpoint?: string;
  /** The node the agent runs on (Kubernetes: the Pod's node; embedded: this host's name). */
  nodeName?: string;
  /** The node's address; sandboxes' exposed ports are reached through the agent address, not this. */
  hostIP?: string;
  /** Distinguishes two incarnations of one name (the Pod's UID); empty when the mode has none. */
  uid?: string;
  /**
   * The uid of the pool that started the agent (Kubernetes: the Pod's controller owner reference);
   * empty when the mode has none. A pool deleted and created again under its name has a new uid:
   * agents of the earlier uid are not its own.
   */
  poolUid?: string;
  /** The agent's process id on this host, when the mode runs it as a local process (embedded). */
  pid?: number;
  /**
   * Why the agent will never run again although it still exists (Kubernetes: its Pod's phase is
   * Failed or Succeeded — evicted, shut down with its node — and a Pod never leaves those phases):
   * the pool controller removes it, which replaces it. Undefined while it may run.
   */
  terminated?: string;
  /**
   * The hash of the settings the agent was started with (agent-template-hash.ts); undefined when
   * unknown (a Pod of a controller that did not record it). The pool controller replaces idle agents
   * whose hash is not `AgentFleet.templateHash(pool)`.
   */
  templateHash?: string;
  /** How the agent's token is made (Kubernetes: its Pod's AGENT_TOKEN_LABEL, agent-token.ts); undefined: the deployment's own. */
  tokenScheme?: string;
  /**
   * Set by `fetchAgents` only (Kubernetes): the Pod is left out because another namespace's Pod
   * (`namespace/name`) holds its name — the fleet reports one Pod per name — and it is not reported
   * while that one exists. The pool controller replaces a Pod of its own that stays so.
   */
  nameTakenBy?: string;
}

/** A ready agent: its endpoint is known. */
export type ReadyAgent = FleetAgent & { ready: true; endpoint: string };

export type AgentFleetEvent =
  /** The agent can be reached now (first start, restart, Pod ready again). */
  | { type: "ready"; agent: ReadyAgent }
  /** The agent was ready and cannot be reached any more; it may come back (`ready` again). */
  | { type: "lost"; agent: FleetAgent; reason: string }
  /** The agent is gone for good (stopped, or its Pod deleted by anyone). */
  | { type: "removed"; agent: FleetAgent };

export type AgentFleetListener = (event: AgentFleetEvent) => void;

export interface AgentFleet {
  /** Begins observing the agents that already exist (e.g. Pods of an earlier controller); `ready` events follow for the ready ones. */
  start(): Promise<void>;
  /**
   * Starts `count` more agents for the pool (its spec says how: the agent template, the slots).
   * Resolves with the new agents' names once they are requested, not once they are ready.
   */
  startAgents(pool: SandboxPool, count: number): Promise<string[]>;
  /**
   * The `templateHash` an agent started now for the pool would carry. Throws when none would start
   * from the pool's spec: a PermissionDeniedError when the deployment's policy refuses it
   * (Kubernetes: an agentTemplate FSB_AGENT_TEMPLATE_POLICY does not allow), anything else when no
   * agent can be built from it (an agentTemplate the CRD lets through malformed).
   */
  templateHash(pool: SandboxPool): string;
  /**
   * Stops the named agents of the pool. The caller has drained them: the fleet never checks for
   * sandboxes, so a busy agent must never be named here. Names the fleet does not know are ignored.
   * Rejects with `AgentsNotStoppedError` when some could not be stopped (the others were); after
   * any other rejection, any of them may still run.
   */
  stopAgents(pool: PoolRef, names: readonly string[]): Promise<void>;
  /** The pool's agents as last observed (ready or not), or every agent of the fleet. */
  listAgents(pool?: PoolRef): FleetAgent[];
  /**
   * The pool's agents as they exist now, read from the source rather than from what the fleet
   * observed (Kubernetes: a list of the pool's Pods from the API server, where `listAgents` follows
   * a watch that can be blind for minutes before it is ended). For a caller that must not act on a
   * stale view: the pool controller, before it gives up on Pods it created and never saw. Absent
   * when `listAgents` is always current (the embedded fleet runs the agents itself).
   */
  fetchAgents?(pool: PoolRef): Promise<FleetAgent[]>;
  /** Subscribes to agent events; returns the unsubscribe function. */
  subscribe(listener: AgentFleetListener): () => void;
  /** Stops observing. Kubernetes: the Pods keep running; embedded: the agent processes are stopped. */
  stop(): Promise<void>;
}

/**
 * `stopAgents` stopped some of the named agents and not the others: `notStopped` still run. Its
 * code is the first failure's (`cause`).
 */
export class AgentsNotStoppedError extends FsbError {
  readonly notStopped: readonly string[];

  constructor(notStopped: readonly string[], cause: unknown) {
    const first = FsbError.from(cause);
    super(first.code, `could not stop ${notStopped.length === 1 ? "agent" : "agents"} ${notStopped.join(", ")}: ${first.message}`, { cause });
    this.notStopped = [...notStopped];
  }
}

/**
 * Finds the agent of a sandbox of `namespace` by its name (`status.assignedPod`) among the fleet's
 * (the proxy's and the E2B relay's lookup of an agent's address). Agents are known by name, and a
 * Pod's name is unique only within its namespace: a sandbox whose agent is gone may name a Pod of
 * another namespace that took the name since (kubernetes-agent-fleet.ts). Nothing of the sandbox goes
 * there: such an agent is not found, as one not there (its traffic waits for its own agent), and
 * each such mismatch is logged once.
 */
export function agentsByName(fleet: Pick<AgentFleet, "listAgents">, logger: Pick<Logger, "warn">): (name: string, namespace: string) => FleetAgent | undefined {
  const logged = new Set<string>();
  return (name, namespace) => {
    const agent = fleet.listAgents().find((candidate) => candidate.name === name);
    if (!agent || agent.namespace === namespace) return agent;
    const mismatch = `${agent.namespace}/${name} ${namespace}`;
    if (!logged.has(mismatch)) {
      logged.add(mismatch);
      logger.warn({ agent: name, agentNamespace: agent.namespace, namespace }, "a sandbox names an agent of another namespace: nothing of it is sent there");
    }
    return undefined;
  };
}
