/**
 * In-memory registry of agents and of the sandbox slots they hold; the scheduler's source of truth.
 * The SPEC is in the doc comments; the implementation must keep placement cost independent of
 * the number of agents in the common case (no linear scan over all agents per placement).
 *
 * Everything is synchronous: `place` picks an agent and takes its slot and ports before it returns,
 * so two concurrent creations can never both get the last slot.
 *
 * Indexes, per (namespace, pool) — a "candidate" is a ready agent with at least one free slot:
 * - `bySlots`: the candidates, bucketed by free-slot count (see FreeSlotIndex);
 * - `byImage[image]`: the same, restricted to candidates whose node holds `image`;
 * - with each of those, how many of its candidates use each port, so an index where every candidate
 *   already uses a requested port (e.g. every sandbox declares 8080) is skipped without a walk;
 * - running totals (agents, ready agents, capacity, allocated, free) for `poolUsage` and for errors.
 *
 * Costs (I = images of the agent, P = ports of the sandbox, U = ports used on the agent):
 * - `place`: O(P + 33 + I·P + k·P), k = agents looked at: 1 in the common case (the first agent of the
 *   highest bucket fits), plus one per agent skipped because it already uses a requested port. k only
 *   grows when many candidates, but not all of them, use a requested port. A full pool costs O(1).
 * - `place`/`release` bookkeeping: O(I·P); when the agent gains or loses its last free slot, O(I·U).
 * - `upsertAgent`/`setAgentReady`/`setImages`/`removeAgent`: O(I·U). `listAgents`: O(n log n).
 */
import { FsbError, NoCapacityError, NotFoundError } from "@fast-sandbox/api";
import { FreeSlotIndex, MAX_SLOTS_PER_AGENT } from "./free-slot-index.js";

export interface AgentInfo {
  /** Unique agent name (Pod name in Kubernetes mode). */
  name: string;
  /** Namespace of the agent's SandboxPool; sandboxes of other namespaces never land on it. */
  namespace: string;
  pool: string;
  /** host:port of the agent API. */
  endpoint: string;
  /** Sandbox slots (the pool's maxSandboxesPerPod), an integer from 0 to 1024. */
  capacity: number;
  /** Address sandboxes' ports are reached on (the agent Pod's IP; 127.0.0.1 embedded). */
  hostIP: string;
  nodeName?: string;
  pid?: number;
  /** Images present on the agent's node (image affinity). */
  images: readonly string[];
}

export interface PlacementRequest {
  /** Identity of the sandbox (namespace/name); allocations are keyed by it so release happens exactly once. */
  sandboxKey: string;
  namespace: string;
  pool: string;
  image: string;
  /**
   * Ports the sandbox takes on its agent's address, each exclusive there (1–65535, no duplicates):
   * a Shared-network sandbox's exposed ports; none for an Isolated one, which has an address of its own.
   */
  ports: readonly number[];
  /**
   * Only these agents of the pool may take it (a restore goes to an agent that holds its checkpoint):
   * the first of them that is ready with a free slot and the ports free, most free slots first. O(k)
   * in their number. @default any agent of the pool
   */
  agents?: readonly string[];
  /**
   * Agents to pass over unless no other can take it: the ones that failed this very create a moment
   * ago (unreachable, or retired by their pool) before a heartbeat has told the registry so.
   * @default none
   */
  avoid?: ReadonlySet<string>;
}

export interface Placement {
  sandboxKey: string;
  /** The agent as currently registered (a frozen snapshot; a later `upsertAgent` replaces it, never mutates it). */
  agent: AgentInfo;
  ports: readonly number[];
}

/** An existing placement reported back after a control-plane crash or an agent restart. */
export interface RestoredPlacement {
  sandboxKey: string;
  agentName: string;
  ports: readonly number[];
}

/** A copy of an agent's registration and state; changing it changes nothing in the registry. */
export interface AgentSnapshot extends AgentInfo {
  /** Sandboxes placed on the agent; may exceed `capacity` after `restore` or a lowered capacity. */
  allocated: number;
  /** Ports held by the agent's sandboxes, ascending. */
  usedPorts: number[];
  ready: boolean;
}

export interface AgentFilter {
  namespace?: string;
  pool?: string;
}

export interface PoolUsage {
  /** Registered agents, ready or not. */
  agents: number;
  readyAgents: number;
  /** Slots of all registered agents, ready or not. */
  capacity: number;
  /** Sandboxes placed on the pool's agents, ready or not. */
  allocated: number;
  /** Slots `place` can use now: free slots of ready agents (an over-committed agent counts 0). */
  free: number;
}

interface AgentState {
  /** Frozen; replaced wholesale by `upsertAgent`, so placements can share it safely. */
  info: Readonly<AgentInfo>;
  /** Same object as long as the image list does not change, which keeps updates on the fast path. */
  images: ReadonlySet<string>;
  ready: boolean;
  portsBySandbox: Map<string, readonly number[]>;
  sandboxByPort: Map<number, string>;
}

/** Candidates of a pool (or of a pool and an image), walkable by free slots, with their port usage. */
interface CandidateIndex {
  readonly slots: FreeSlotIndex;
  /** port → number of candidates in `slots` using it (entries never zero). */
  readonly agentsUsingPort: Map<number, number>;
}

interface PoolState {
  readonly namespace: string;
  readonly pool: string;
  readonly agentNames: Set<string>;
  readyAgents: number;
  capacity: number;
  readyCapacity: number;
  allocated: number;
  free: number;
  readonly bySlots: CandidateIndex;
  readonly byImage: Map<string, CandidateIndex>;
}

interface PlacementRecord {
  agentName: string;
  ports: readonly number[];
}

export class AgentRegistry {
  private readonly agents = new Map<string, AgentState>();
  private readonly pools = new Map<string, PoolState>();
  private readonly placements = new Map<string, PlacementRecord>();
  /**
   * Declared ports in use per host address. Agents that share an address share its ports: in
   * Kubernetes every agent Pod has its own IP (so this equals the per-agent rule), but embedded
   * agents all serve sandboxes in the host's network, where a port can be bound only once.
   */
  private readonly hostPorts = new Map<string, Map<number, string>>();
  private inspected = 0;

  /**
   * How many agents the last `place` looked at (port checks). A debugging and test hook that shows
   * placement cost does not grow with the number of agents.
   */
  get lastPlacementInspected(): number {
    return this.inspected;
  }

  /** Number of sandboxes placed (equal to the sum of every agent's `allocated`). */
  get placementCount(): number {
    return this.placements.size;
  }

  /**
   * Adds an agent, or updates its registration (endpoint, capacity, images… may change; its
   * placements stay). A new agent is ready; an existing one keeps its readiness. Capacity lowered
   * below the allocated count leaves the agent with no free slot, nothing is evicted. A name
   * registered in another namespace is another agent (a Pod's name is unique only within its
   * namespace: one named as a gone agent of another namespace): that agent goes, as with
   * removeAgent, and its placements with it — its sandboxes never land on this one.
   */
  upsertAgent(info: AgentInfo): void {
    validateAgentInfo(info);
    const frozen = freezeInfo(info);
    const registered = this.agents.get(info.name);
    if (registered !== undefined && registered.info.namespace !== info.namespace) this.removeAgent(info.name);
    const agent = this.agents.get(info.name);
    if (agent === undefined) {
      const created: AgentState = {
        info: frozen,
        images: new Set(frozen.images),
        ready: true,
        portsBySandbox: new Map(),
        sandboxByPort: new Map(),
      };
      this.agents.set(info.name, created);
      this.attach(created);
      return;
    }
    this.change(agent, () => {
      agent.info = frozen;
      if (!sameImages(agent.images, frozen.images)) agent.images = new Set(frozen.images);
    });
  }

  /**
   * Removes the agent and returns the placements it held; their slots are gone with it and those
   * sandbox keys are no longer allocated. An unknown agent returns [].
   */
  removeAgent(name: string): Placement[] {
    const agent = this.agents.get(name);
    if (agent === undefined) return [];
    this.detach(agent);
    this.agents.delete(name);
    const removed: Placement[] = [];
    for (const [sandboxKey, ports] of agent.portsBySandbox) {
      this.placements.delete(sandboxKey);
      this.releaseHostPorts(agent, ports);
      removed.push({ sandboxKey, agent: agent.info, ports });
    }
    return removed;
  }

  /** An unready agent receives no placements but keeps its allocations. NotFoundError if unknown. */
  setAgentReady(name: string, ready: boolean): void {
    const agent = this.requireAgent(name);
    if (agent.ready === ready) return;
    this.change(agent, () => {
      agent.ready = ready;
    });
  }

  /** Replaces the images present on the agent's node. NotFoundError if unknown. */
  setImages(name: string, images: readonly string[]): void {
    const agent = this.requireAgent(name);
    if (sameImages(agent.images, images)) return;
    this.change(agent, () => {
      agent.info = freezeInfo({ ...agent.info, images });
      agent.images = new Set(images);
    });
  }

  /**
   * Picks an agent of the request's namespace and pool and takes a slot and the ports on it.
   * Candidates are ready, have a free slot and use none of `request.ports`. Agents that already hold
   * `request.image` go first, then the one with the most free slots; among equals, the one that has
   * had that many free slots the longest. The same sandboxKey gets its existing placement back.
   * Throws NoCapacityError saying why: no ready agents, all slots in use, or ports taken.
   */
  place(request: PlacementRequest): Placement {
    this.inspected = 0;
    const existing = this.placementOf(request.sandboxKey);
    if (existing !== undefined) return existing;
    validatePorts(request.ports, `sandbox ${request.sandboxKey}`);
    const pool = this.pools.get(poolKey(request.namespace, request.pool));
    if (request.agents !== undefined) return this.placeOnOneOf(request, request.agents);
    const pick = (avoid?: ReadonlySet<string>) =>
      pool === undefined
        ? undefined
        : (this.firstAgentWithPortsFree(pool.byImage.get(request.image), request.ports, avoid) ??
          this.firstAgentWithPortsFree(pool.bySlots, request.ports, avoid));
    const agent = (request.avoid?.size ? pick(request.avoid) : undefined) ?? pick();
    if (agent === undefined) {
      const hostConflict = this.hostConflict(pool, request.ports);
      if (hostConflict) throw hostConflict;
      throw noCapacityError(request, pool);
    }
    const ports = Object.freeze([...request.ports]);
    this.allocate(agent, request.sandboxKey, ports);
    return { sandboxKey: request.sandboxKey, agent: agent.info, ports };
  }

  /** `place` restricted to `names` (see PlacementRequest.agents). */
  private placeOnOneOf(request: PlacementRequest, names: readonly string[]): Placement {
    const avoid = request.avoid;
    const preferred = avoid?.size ? names.filter((name) => !avoid.has(name)) : names;
    const best = this.bestOf(request, preferred) ?? (preferred.length < names.length ? this.bestOf(request, names) : undefined);
    if (best === undefined) {
      throw new NoCapacityError(
        `none of the agents of pool ${request.namespace}/${request.pool} that can take sandbox ${request.sandboxKey} ` +
          `(${names.join(", ") || "none"}) is ready with a free slot${request.ports.length > 0 ? " and its ports free" : ""}`,
      );
    }
    const ports = Object.freeze([...request.ports]);
    this.allocate(best, request.sandboxKey, ports);
    return { sandboxKey: request.sandboxKey, agent: best.info, ports };
  }

  /** The agent of `names` that can take the request with the most free slots, if any. */
  private bestOf(request: PlacementRequest, names: readonly string[]): AgentState | undefined {
    let best: AgentState | undefined;
    for (const name of names) {
      this.inspected += 1;
      const agent = this.agents.get(name);
      if (agent === undefined || agent.info.namespace !== request.namespace || agent.info.pool !== request.pool) continue;
      const free = schedulableFree(agent);
      const hostPorts = request.ports.length > 0 ? this.hostPorts.get(agent.info.hostIP) : undefined;
      if (free === 0 || request.ports.some((port) => agent.sandboxByPort.has(port) || hostPorts?.has(port))) continue;
      if (best === undefined || free > schedulableFree(best)) best = agent;
    }
    return best;
  }

  /**
   * Records a placement that already exists (control-plane crash recovery, agent restart) without
   * scheduling: it may over-commit the agent and never throws for capacity or readiness. Idempotent
   * for the same key on the same agent. NotFoundError if the agent is unknown; FsbError "conflict"
   * if the key is placed on another agent or a port is held by another sandbox of this agent.
   */
  restore(placement: RestoredPlacement): Placement {
    const agent = this.agents.get(placement.agentName);
    if (agent === undefined) {
      throw new NotFoundError(`cannot restore sandbox ${placement.sandboxKey}: agent ${placement.agentName} is not registered`);
    }
    const existing = this.placements.get(placement.sandboxKey);
    if (existing !== undefined) {
      if (existing.agentName === placement.agentName) return this.toPlacement(placement.sandboxKey, existing);
      throw new FsbError(
        "conflict",
        `cannot restore sandbox ${placement.sandboxKey} on agent ${placement.agentName}: ` + `it is placed on agent ${existing.agentName}; release it first`,
      );
    }
    validatePorts(placement.ports, `sandbox ${placement.sandboxKey}`);
    for (const port of placement.ports) {
      const holder = agent.sandboxByPort.get(port) ?? this.hostPorts.get(agent.info.hostIP)?.get(port);
      if (holder !== undefined) {
        throw new FsbError(
          "conflict",
          `cannot restore sandbox ${placement.sandboxKey} on agent ${placement.agentName}: ` + `port ${port} is held by sandbox ${holder}`,
        );
      }
    }
    const ports = Object.freeze([...placement.ports]);
    this.allocate(agent, placement.sandboxKey, ports);
    return { sandboxKey: placement.sandboxKey, agent: agent.info, ports };
  }

  /** Frees the sandbox's slot and ports exactly once; returns undefined (and changes nothing) if not placed. */
  release(sandboxKey: string): Placement | undefined {
    const record = this.placements.get(sandboxKey);
    if (record === undefined) return undefined;
    const agent = this.agents.get(record.agentName);
    if (agent === undefined) throw new Error(`registry corrupt: ${sandboxKey} points to missing agent`);
    this.placements.delete(sandboxKey);
    this.change(
      agent,
      () => {
        agent.portsBySandbox.delete(sandboxKey);
        for (const port of record.ports) agent.sandboxByPort.delete(port);
      },
      { added: [], removed: record.ports },
    );
    this.releaseHostPorts(agent, record.ports);
    return { sandboxKey, agent: agent.info, ports: record.ports };
  }

  placementOf(sandboxKey: string): Placement | undefined {
    const record = this.placements.get(sandboxKey);
    return record === undefined ? undefined : this.toPlacement(sandboxKey, record);
  }

  getAgent(name: string): AgentSnapshot | undefined {
    const agent = this.agents.get(name);
    return agent === undefined ? undefined : snapshot(agent);
  }

  /** Agents matching the filter, sorted by name. */
  listAgents(filter: AgentFilter = {}): AgentSnapshot[] {
    let candidates: Iterable<AgentState>;
    if (filter.namespace !== undefined && filter.pool !== undefined) {
      const pool = this.pools.get(poolKey(filter.namespace, filter.pool));
      candidates = pool === undefined ? [] : [...pool.agentNames].map((name) => this.requireAgent(name));
    } else {
      candidates = this.agents.values();
    }
    const result: AgentSnapshot[] = [];
    for (const agent of candidates) {
      if (filter.namespace !== undefined && agent.info.namespace !== filter.namespace) continue;
      if (filter.pool !== undefined && agent.info.pool !== filter.pool) continue;
      result.push(snapshot(agent));
    }
    return result.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Totals of a pool in O(1); an unknown pool is all zeros. */
  poolUsage(namespace: string, pool: string): PoolUsage {
    const state = this.pools.get(poolKey(namespace, pool));
    if (state === undefined) return { agents: 0, readyAgents: 0, capacity: 0, allocated: 0, free: 0 };
    return {
      agents: state.agentNames.size,
      readyAgents: state.readyAgents,
      capacity: state.capacity,
      allocated: state.allocated,
      free: state.free,
    };
  }

  /**
   * @internal For tests: recomputes every total and index from the agents by brute force and throws
   * if anything disagrees. O(agents × images).
   */
  verifyIndexes(): void {
    const fail = (message: string): never => {
      throw new Error(`registry indexes disagree: ${message}`);
    };
    let allocatedTotal = 0;
    const expectedPools = new Map<string, AgentState[]>();
    for (const [name, agent] of this.agents) {
      if (agent.info.name !== name) fail(`agent ${name} registered as ${agent.info.name}`);
      allocatedTotal += agent.portsBySandbox.size;
      let portCount = 0;
      for (const [sandboxKey, ports] of agent.portsBySandbox) {
        if (this.placements.get(sandboxKey)?.agentName !== name) fail(`${sandboxKey} not placed on ${name}`);
        for (const port of ports) {
          portCount += 1;
          if (agent.sandboxByPort.get(port) !== sandboxKey) fail(`port ${port} of ${name} not held by ${sandboxKey}`);
        }
      }
      if (portCount !== agent.sandboxByPort.size) fail(`agent ${name} holds stray ports`);
      const key = poolKey(agent.info.namespace, agent.info.pool);
      const members = expectedPools.get(key);
      if (members === undefined) expectedPools.set(key, [agent]);
      else members.push(agent);
    }
    if (allocatedTotal !== this.placements.size) fail(`${allocatedTotal} allocations, ${this.placements.size} placements`);
    if (expectedPools.size !== this.pools.size) fail(`${this.pools.size} pools indexed, ${expectedPools.size} expected`);
    for (const [key, agents] of expectedPools) {
      const pool = this.pools.get(key) ?? fail(`pool ${key} missing`);
      const sum = (value: (agent: AgentState) => number) => agents.reduce((total, agent) => total + value(agent), 0);
      const expected = {
        agents: agents.length,
        readyAgents: sum((agent) => (agent.ready ? 1 : 0)),
        capacity: sum((agent) => agent.info.capacity),
        readyCapacity: sum((agent) => (agent.ready ? agent.info.capacity : 0)),
        allocated: sum((agent) => agent.portsBySandbox.size),
        free: sum(schedulableFree),
      };
      const actual = { ...pool, agents: pool.agentNames.size };
      for (const [field, value] of Object.entries(expected)) {
        if (actual[field as keyof typeof expected] !== value) fail(`pool ${key} ${field} is not ${value}`);
      }
      const expectedImages = new Set<string>();
      let indexed = 0;
      for (const agent of agents) {
        if (!pool.agentNames.has(agent.info.name)) fail(`pool ${key} misses ${agent.info.name}`);
        const free = schedulableFree(agent);
        if (pool.bySlots.slots.freeSlotsOf(agent.info.name) !== free) fail(`${agent.info.name} indexed with wrong free slots`);
        if (free > 0) indexed += 1;
        for (const image of agent.images) {
          if (free > 0) expectedImages.add(image);
          if ((pool.byImage.get(image)?.slots.freeSlotsOf(agent.info.name) ?? 0) !== free) {
            fail(`${agent.info.name} indexed with wrong free slots for ${image}`);
          }
        }
      }
      if (pool.bySlots.slots.size !== indexed) fail(`pool ${key} indexes stray agents`);
      if (pool.byImage.size !== expectedImages.size) fail(`pool ${key} keeps stray image indexes`);
      const checkPortCounts = (index: CandidateIndex, members: AgentState[], label: string) => {
        if (index.slots.size !== members.length) fail(`${label} holds stray agents`);
        const expectedCounts = new Map<number, number>();
        for (const member of members) {
          for (const port of member.sandboxByPort.keys()) expectedCounts.set(port, (expectedCounts.get(port) ?? 0) + 1);
        }
        if (expectedCounts.size !== index.agentsUsingPort.size) fail(`${label} counts stray ports`);
        for (const [port, count] of expectedCounts) {
          if (index.agentsUsingPort.get(port) !== count) fail(`${label} counts port ${port} wrong`);
        }
      };
      const candidates = agents.filter((agent) => schedulableFree(agent) > 0);
      checkPortCounts(pool.bySlots, candidates, `pool ${key}`);
      for (const [image, index] of pool.byImage) {
        const holders = candidates.filter((agent) => agent.images.has(image));
        checkPortCounts(index, holders, `image index ${key} ${image}`);
      }
    }
  }

  private firstAgentWithPortsFree(index: CandidateIndex | undefined, ports: readonly number[], avoid?: ReadonlySet<string>): AgentState | undefined {
    if (index === undefined) return undefined;
    if (ports.some((port) => index.agentsUsingPort.get(port) === index.slots.size)) return undefined;
    for (const name of index.slots.byFreeSlotsDescending()) {
      this.inspected += 1;
      if (avoid?.has(name)) continue;
      const agent = this.requireAgent(name);
      const hostPorts = ports.length > 0 ? this.hostPorts.get(agent.info.hostIP) : undefined;
      if (ports.every((port) => !agent.sandboxByPort.has(port) && !hostPorts?.has(port))) return agent;
    }
    return undefined;
  }

  private allocate(agent: AgentState, sandboxKey: string, ports: readonly number[]): void {
    this.placements.set(sandboxKey, { agentName: agent.info.name, ports });
    if (ports.length > 0) {
      let used = this.hostPorts.get(agent.info.hostIP);
      if (used === undefined) this.hostPorts.set(agent.info.hostIP, (used = new Map<number, string>()));
      for (const port of ports) used.set(port, sandboxKey);
    }
    this.change(
      agent,
      () => {
        agent.portsBySandbox.set(sandboxKey, ports);
        for (const port of ports) agent.sandboxByPort.set(port, sandboxKey);
      },
      { added: ports, removed: [] },
    );
  }

  /**
   * Applies `mutate` to the agent and brings the pool totals and indexes up to date. `portDelta`
   * marks a slot change (allocate/release: same pool, same images) and keeps port counting
   * incremental; without it everything about the agent is re-indexed.
   */
  private change(agent: AgentState, mutate: () => void, portDelta?: { added: readonly number[]; removed: readonly number[] }): void {
    const pool = this.requirePool(agent);
    const imagesBefore = agent.images;
    const freeBefore = schedulableFree(agent);
    addTotals(pool, agent, -1);
    if (portDelta === undefined && freeBefore > 0) countPorts(pool, imagesBefore, agent.sandboxByPort.keys(), -1);
    mutate();
    const freeAfter = schedulableFree(agent);

    if (portDelta !== undefined) {
      addTotals(pool, agent, +1);
      if (freeBefore > 0 && freeAfter > 0) {
        this.index(pool, agent.info.name, agent.images, freeAfter);
        countPorts(pool, agent.images, portDelta.added, +1);
        countPorts(pool, agent.images, portDelta.removed, -1);
      } else if (freeBefore > 0) {
        // Lost its last free slot: it stops being a candidate, with the ports it had before.
        const portsBefore = new Set(agent.sandboxByPort.keys());
        for (const port of portDelta.added) portsBefore.delete(port);
        for (const port of portDelta.removed) portsBefore.add(port);
        countPorts(pool, agent.images, portsBefore, -1);
        this.index(pool, agent.info.name, agent.images, freeAfter);
      } else if (freeAfter > 0) {
        this.index(pool, agent.info.name, agent.images, freeAfter);
        countPorts(pool, agent.images, agent.sandboxByPort.keys(), +1);
      }
      return;
    }

    if (pool === this.pools.get(poolKey(agent.info.namespace, agent.info.pool)) && agent.images === imagesBefore) {
      addTotals(pool, agent, +1);
      this.index(pool, agent.info.name, agent.images, freeAfter);
      if (freeAfter > 0) countPorts(pool, agent.images, agent.sandboxByPort.keys(), +1);
      return;
    }
    // Moved to another pool or changed images: leave the old indexes, join the new ones.
    this.index(pool, agent.info.name, imagesBefore, 0);
    pool.agentNames.delete(agent.info.name);
    if (pool.agentNames.size === 0) this.pools.delete(poolKey(pool.namespace, pool.pool));
    this.attach(agent);
  }

  private attach(agent: AgentState): void {
    const key = poolKey(agent.info.namespace, agent.info.pool);
    let pool = this.pools.get(key);
    if (pool === undefined) {
      pool = {
        namespace: agent.info.namespace,
        pool: agent.info.pool,
        agentNames: new Set(),
        readyAgents: 0,
        capacity: 0,
        readyCapacity: 0,
        allocated: 0,
        free: 0,
        bySlots: newCandidateIndex(),
        byImage: new Map(),
      };
      this.pools.set(key, pool);
    }
    pool.agentNames.add(agent.info.name);
    addTotals(pool, agent, +1);
    const free = schedulableFree(agent);
    this.index(pool, agent.info.name, agent.images, free);
    if (free > 0) countPorts(pool, agent.images, agent.sandboxByPort.keys(), +1);
  }

  private detach(agent: AgentState): void {
    const pool = this.requirePool(agent);
    if (schedulableFree(agent) > 0) countPorts(pool, agent.images, agent.sandboxByPort.keys(), -1);
    addTotals(pool, agent, -1);
    this.index(pool, agent.info.name, agent.images, 0);
    pool.agentNames.delete(agent.info.name);
    if (pool.agentNames.size === 0) this.pools.delete(poolKey(pool.namespace, pool.pool));
  }

  /**
   * Puts the agent in its pool's and images' candidate indexes with `freeSlots` (0 removes it).
   * Port counts are the caller's job: after joining, before leaving.
   */
  private index(pool: PoolState, name: string, images: ReadonlySet<string>, freeSlots: number): void {
    pool.bySlots.slots.set(name, freeSlots);
    for (const image of images) {
      let index = pool.byImage.get(image);
      if (freeSlots > 0) {
        if (index === undefined) {
          index = newCandidateIndex();
          pool.byImage.set(image, index);
        }
        index.slots.set(name, freeSlots);
      } else if (index !== undefined) {
        index.slots.delete(name);
        if (index.slots.size === 0) pool.byImage.delete(image);
      }
    }
  }

  private releaseHostPorts(agent: AgentState, ports: readonly number[]): void {
    const used = this.hostPorts.get(agent.info.hostIP);
    if (used === undefined) return;
    for (const port of ports) used.delete(port);
    if (used.size === 0) this.hostPorts.delete(agent.info.hostIP);
  }

  /** The error for a placement that failed because its ports are taken on the agents' shared host. */
  private hostConflict(pool: PoolState | undefined, ports: readonly number[]): NoCapacityError | undefined {
    if (pool === undefined || ports.length === 0) return undefined;
    for (const name of pool.agentNames) {
      const agent = this.agents.get(name);
      const used = agent ? this.hostPorts.get(agent.info.hostIP) : undefined;
      for (const port of ports) {
        const holder = used?.get(port);
        if (holder !== undefined && agent !== undefined && !agent.sandboxByPort.has(port)) {
          return new NoCapacityError(`port ${port} is in use on host ${agent.info.hostIP} by sandbox ${holder}; every agent there shares that address`);
        }
      }
    }
    return undefined;
  }

  private requireAgent(name: string): AgentState {
    const agent = this.agents.get(name);
    if (agent === undefined) throw new NotFoundError(`agent ${name} is not registered`);
    return agent;
  }

  private requirePool(agent: AgentState): PoolState {
    const pool = this.pools.get(poolKey(agent.info.namespace, agent.info.pool));
    if (pool === undefined) throw new Error(`registry corrupt: no pool for agent ${agent.info.name}`);
    return pool;
  }

  private toPlacement(sandboxKey: string, record: PlacementRecord): Placement {
    return {
      sandboxKey,
      agent: this.requireAgent(record.agentName).info,
      ports: record.ports,
    };
  }
}

function poolKey(namespace: string, pool: string): string {
  // Kubernetes names cannot contain "/", so the key is unambiguous.
  return `${namespace}/${pool}`;
}

function newCandidateIndex(): CandidateIndex {
  return {
    slots: new FreeSlotIndex(MAX_SLOTS_PER_AGENT),
    agentsUsingPort: new Map(),
  };
}

/** Adds (+1) or removes (-1) an agent's ports to the port counts of its pool's and images' candidate indexes. */
function countPorts(pool: PoolState, images: ReadonlySet<string>, ports: Iterable<number>, sign: 1 | -1): void {
  const portList = [...ports];
  if (portList.length === 0) return;
  const indexes = [pool.bySlots];
  for (const image of images) {
    const index = pool.byImage.get(image);
    if (index !== undefined) indexes.push(index);
  }
  for (const { agentsUsingPort } of indexes) {
    for (const port of portList) {
      const count = (agentsUsingPort.get(port) ?? 0) + sign;
      if (count === 0) agentsUsingPort.delete(port);
      else agentsUsingPort.set(port, count);
    }
  }
}

/** Slots `place` may use on this agent: none when unready or at/over capacity. */
function schedulableFree(agent: AgentState): number {
  return agent.ready ? Math.max(0, agent.info.capacity - agent.portsBySandbox.size) : 0;
}

function addTotals(pool: PoolState, agent: AgentState, sign: 1 | -1): void {
  pool.readyAgents += sign * (agent.ready ? 1 : 0);
  pool.capacity += sign * agent.info.capacity;
  pool.readyCapacity += sign * (agent.ready ? agent.info.capacity : 0);
  pool.allocated += sign * agent.portsBySandbox.size;
  pool.free += sign * schedulableFree(agent);
}

function noCapacityError(request: PlacementRequest, pool: PoolState | undefined): NoCapacityError {
  const name = `${request.namespace}/${request.pool}`;
  if (pool === undefined) return new NoCapacityError(`pool ${name} has no ready agents (none registered)`);
  if (pool.readyAgents === 0) {
    return new NoCapacityError(`pool ${name} has no ready agents (${pool.agentNames.size} registered, none ready)`);
  }
  if (pool.free === 0) {
    return new NoCapacityError(`no capacity: all ${pool.readyCapacity} slots of pool ${name} are in use`);
  }
  // Some ready agent has a free slot, so only ports can have excluded it.
  const ports = request.ports.join(", ");
  return new NoCapacityError(
    request.ports.length === 1
      ? `no agent in pool ${name} has port ${ports} free (${pool.free} free slots are on agents already using it)`
      : `no agent in pool ${name} has ports ${ports} all free (${pool.free} free slots are on agents using some of them)`,
  );
}

function validateAgentInfo(info: AgentInfo): void {
  if (info.name === "") throw new FsbError("invalid_argument", "agent name must not be empty");
  if (!Number.isInteger(info.capacity) || info.capacity < 0 || info.capacity > MAX_SLOTS_PER_AGENT) {
    throw new FsbError("invalid_argument", `agent ${info.name}: capacity must be an integer from 0 to ${MAX_SLOTS_PER_AGENT}, got ${info.capacity}`);
  }
}

function validatePorts(ports: readonly number[], owner: string): void {
  const seen = new Set<number>();
  for (const port of ports) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new FsbError("invalid_argument", `${owner}: port ${port} is not an integer from 1 to 65535`);
    }
    if (seen.has(port)) throw new FsbError("invalid_argument", `${owner}: port ${port} is declared twice`);
    seen.add(port);
  }
}

function freezeInfo(info: AgentInfo): Readonly<AgentInfo> {
  return Object.freeze({ ...info, images: Object.freeze([...info.images]) });
}

function sameImages(current: ReadonlySet<string>, next: readonly string[]): boolean {
  const nextSet = new Set(next);
  if (nextSet.size !== current.size) return false;
  for (const image of nextSet) if (!current.has(image)) return false;
  return true;
}

function snapshot(agent: AgentState): AgentSnapshot {
  return {
    ...agent.info,
    images: [...agent.info.images],
    allocated: agent.portsBySandbox.size,
    usedPorts: [...agent.sandboxByPort.keys()].sort((a, b) => a - b),
    ready: agent.ready,
  };
}
