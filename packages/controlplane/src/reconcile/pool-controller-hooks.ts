/**
 * How both composition roots connect the pool controller to the rest of the core: which agents may
 * be placed on (connected and adopted), how an idle one is retired before it is stopped, what happens when one is registered (its images and the
 * slots the store records), how much demand waits in a pool (creates waiting here, Pending records),
 * how fast creates arrive in it (the flow-aware buffer), and which pool an agent belongs to. One place, so the two modes cannot drift apart.
 */
import type { SandboxPool } from "@fast-sandbox/api";
import type { SandboxManager } from "../fastpath/sandbox-manager.js";
import type { AgentConnections } from "../fleet/agent-connections.js";
import type { AgentFleet } from "../fleet/agent-fleet.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { Clock } from "../controller/clock.js";
import type { Informer } from "../controller/informer.js";
import type { AllocationSync } from "./allocation-sync.js";
import { CreateRates } from "./create-rate.js";
import type { PoolController, PoolControllerOptions } from "./pool-controller.js";

export interface PoolControllerHooksOptions {
  connections: AgentConnections;
  registry: AgentRegistry;
  allocations: AllocationSync;
  manager: SandboxManager;
  /** The shared Sandbox informer: the pools' create rates are counted from what it adds (every replica's creates). */
  sandboxes: Informer<"Sandbox">;
  /** @default systemClock */
  clock?: Clock;
  /** The window of the create rates. @default DEFAULT_CREATE_RATE_WINDOW_MS */
  createRateWindowMs?: number;
}

export function poolControllerHooks(
  options: PoolControllerHooksOptions,
): Pick<PoolControllerOptions, "agentUsable" | "onAgentRegistered" | "waitingFor" | "closingPool" | "createsPerSecond" | "retireAgent" | "holdsSandboxes"> {
  const { connections, registry, allocations, manager } = options;
  const rates = new CreateRates({
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.createRateWindowMs !== undefined ? { windowMs: options.createRateWindowMs } : {}),
  });
  rates.follow(options.sandboxes);
  return {
    createsPerSecond: (namespace, pool) => rates.perSecond(namespace, pool),
    closingPool: (namespace, pool, work) => manager.withPoolClosed(namespace, pool, work),
    // Connected, adopted, and not retired (a retired agent refuses creates: the leader is stopping it).
    agentUsable: (name) => connections.agentConnectivity(name)?.connected === true && connections.observedStatus(name)?.status.retired !== true,
    retireAgent: async (name, cancel) => {
      // Not answering here: nothing to ask, and nothing placed on it through this replica; stopped as before.
      const client = connections.get(name);
      if (!client || connections.agentConnectivity(name)?.connected !== true) return true;
      return (await client.retire(cancel)).retired;
    },
    onAgentRegistered: (name) => {
      // Its first heartbeat may have answered before it was registered: placement (image affinity,
      // pull-if-missing) must see its images from the start, not after the next heartbeat.
      const observed = connections.observedStatus(name);
      if (observed) registry.setImages(name, observed.status.images);
      allocations.agentRegistered(name);
    },
    holdsSandboxes: (name) => allocations.holdsSandboxes(name),
    waitingFor: (namespace, pool) => Math.max(manager.waitingFor(namespace, pool), allocations.pendingIn(namespace, pool)),
  };
}

/** The pool of a fleet agent, as the pool controller last saw it. */
export function agentPoolOf(fleet: AgentFleet, pools: PoolController): (agentName: string) => SandboxPool | undefined {
  return (name) => {
    const agent = fleet.listAgents().find((a) => a.name === name);
    return agent ? pools.getPool(agent.namespace, agent.pool) : undefined;
  };
}
