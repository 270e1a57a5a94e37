/**
 * How both composition roots connect the pool controller to the rest of the core: which agents may
 * be placed on (connected and adopted), how an idle one is retired before it is stopped (always at the agent), what happens when one is registered (its images and the
 * slots the store records), how much demand waits in a pool (creates waiting here, Pending records),
 * how fast creates arrive in it (the flow-aware buffer), what its agents say of their prepared instances, and which pool an agent belongs to. One place, so the two modes cannot drift apart.
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
): Pick<
  PoolControllerOptions,
  "agentUsable" | "onAgentRegistered" | "waitingFor" | "closingPool" | "createsPerSecond" | "retireAgent" | "holdsSandboxes" | "preparedInstancesOf"
> {
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
    preparedInstancesOf: (name) => connections.observedStatus(name)?.status.preparedInstances,
    retireAgent: async (name, cancel) => {
      const client = connections.get(name);
      // Undone best effort: a retirement whose stop did not follow lapses by itself after a minute.
      if (cancel) {
        await client?.retire(true).catch(() => undefined);
        return true;
      }
      // Asked even when this replica's heartbeats to it fail: the fast path runs on every replica, and
      // another one that reaches it may have placed a sandbox on it that this replica's records do not
      // show yet. Without an answer it is kept (its Pod, with that sandbox, is not deleted); one really
      // unreachable is removed once away too long (the pool controller's stopAwayAndEmpty).
      if (!client) return false;
      try {
        return (await client.retire()).retired;
      } catch {
        return false;
      }
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
