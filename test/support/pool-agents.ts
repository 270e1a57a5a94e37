/**
 * The agents of pools as the public API reports them (`client.pools.agents`, the control plane's
 * view: each agent's readiness, pid, slots and ports). E2e cases assert through these rather than
 * on the control plane's in-process state, so the same assertions hold whichever mode serves the API.
 */
import type { AgentSummary, FastSandboxClient } from "@fast-sandbox/sdk";

/** The sandbox slots the agents of a pool hold: the sum of their `allocated`; 0 for a pool without agents. */
export async function slotsHeld(client: FastSandboxClient, pool: string, namespace = "default"): Promise<number> {
  return (await client.pools.agents({ namespace, pool })).reduce((sum, agent) => sum + agent.allocated, 0);
}

/** The declared ports the agents hold (of one pool, or of every pool), in the order the agents are listed. */
export async function portsHeld(client: FastSandboxClient, filter: { pool?: string; namespace?: string } = {}): Promise<number[]> {
  return (await client.pools.agents(filter)).flatMap((agent) => agent.usedPorts);
}

/** The agent of that name (names are unique on the control plane, across namespaces); undefined when it is not registered. */
export async function agentNamed(client: FastSandboxClient, name: string): Promise<AgentSummary | undefined> {
  return (await client.pools.agents()).find((agent) => agent.name === name);
}
