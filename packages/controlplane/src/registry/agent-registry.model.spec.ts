/**
 * Randomized cross-check: thousands of random operations against AgentRegistry and against a naive
 * model that recomputes everything by brute force. Seeded, so a failure replays exactly.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FsbError, NoCapacityError, NotFoundError } from "@fast-sandbox/api";
import { AgentRegistry, type AgentInfo, type PlacementRequest } from "./agent-registry.js";

/** mulberry32: small, fast, good enough to drive a test. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

interface ModelAgent {
  info: AgentInfo;
  ready: boolean;
  sandboxes: Map<string, readonly number[]>;
}

/** The registry's rules, written as plainly as possible. */
class NaiveModel {
  readonly agents = new Map<string, ModelAgent>();

  agentOf(sandboxKey: string): ModelAgent | undefined {
    for (const agent of this.agents.values()) if (agent.sandboxes.has(sandboxKey)) return agent;
    return undefined;
  }

  usedPorts(agent: ModelAgent): number[] {
    return [...agent.sandboxes.values()].flat().sort((a, b) => a - b);
  }

  poolAgents(namespace: string, pool: string): ModelAgent[] {
    return [...this.agents.values()].filter((agent) => agent.info.namespace === namespace && agent.info.pool === pool);
  }

  free(agent: ModelAgent): number {
    return agent.ready ? Math.max(0, agent.info.capacity - agent.sandboxes.size) : 0;
  }

  feasible(request: PlacementRequest): ModelAgent[] {
    return this.poolAgents(request.namespace, request.pool).filter(
      (agent) => this.free(agent) > 0 && !request.ports.some((port) => this.usedPorts(agent).includes(port)),
    );
  }

  /** Preference as a comparable number: image holders first, then more free slots. */
  rank(agent: ModelAgent, image: string): number {
    return (agent.info.images.includes(image) ? 10_000 : 0) + this.free(agent);
  }

  /** Which NoCapacityError message the registry must give when nothing is feasible. */
  refusal(request: PlacementRequest): RegExp {
    const agents = this.poolAgents(request.namespace, request.pool);
    const name = `${request.namespace}/${request.pool}`;
    const ready = agents.filter((agent) => agent.ready);
    if (ready.length === 0) return new RegExp(`^pool ${name} has no ready agents`);
    if (ready.every((agent) => this.free(agent) === 0)) {
      const slots = ready.reduce((total, agent) => total + agent.info.capacity, 0);
      return new RegExp(`^no capacity: all ${slots} slots of pool ${name} are in use$`);
    }
    return new RegExp(`^no agent in pool ${name} has ports? ${request.ports.join(", ")}`);
  }
}

const NAMESPACES = ["a", "b"];
const POOLS = ["p", "q"];
const IMAGES = ["python", "node", "go"];
const PORTS = [80, 8080, 9000];
const AGENT_NAMES = Array.from({ length: 10 }, (_, index) => `agent-${index}`);
const SANDBOX_KEYS = Array.from({ length: 40 }, (_, index) => `sandbox-${index}`);

function runRandomOperations(seed: number, steps: number): { placed: number; refused: number } {
  const random = seededRandom(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const subset = <T>(items: readonly T[], maxSize: number): T[] => items.filter(() => random() < maxSize / items.length).slice(0, maxSize);

  const registry = new AgentRegistry();
  const model = new NaiveModel();
  let placed = 0;
  let refused = 0;

  const randomInfo = (name: string): AgentInfo => ({
    name,
    // Agents mostly stay in the pool they were created in; sometimes they move.
    namespace: model.agents.get(name)?.info.namespace ?? pick(NAMESPACES),
    pool: random() < 0.1 ? pick(POOLS) : (model.agents.get(name)?.info.pool ?? pick(POOLS)),
    endpoint: `${name}:${Math.floor(random() * 1000)}`,
    capacity: Math.floor(random() * 5),
    // One address per agent (Kubernetes): the host rule then equals the per-agent rule the model checks.
    hostIP: `ip-${name}`,
    images: subset(IMAGES, 2),
  });

  for (let step = 0; step < steps; step += 1) {
    const context = `seed ${seed} step ${step}`;
    const roll = random();
    if (roll < 0.4) {
      const request: PlacementRequest = {
        sandboxKey: pick(SANDBOX_KEYS),
        namespace: pick(NAMESPACES),
        pool: pick(POOLS),
        image: pick(IMAGES),
        ports: subset(PORTS, 2),
      };
      const existing = model.agentOf(request.sandboxKey);
      const feasible = model.feasible(request);
      let chosenName: string | undefined;
      try {
        chosenName = registry.place(request).agent.name;
      } catch (error) {
        assert.ok(error instanceof NoCapacityError, `${context}: ${String(error)}`);
        assert.equal(existing, undefined, `${context}: an existing placement must be returned`);
        assert.equal(feasible.length, 0, `${context}: refused although ${feasible[0]?.info.name} was feasible`);
        assert.match(error.message, model.refusal(request), context);
        refused += 1;
      }
      if (chosenName !== undefined) {
        if (existing !== undefined) {
          assert.equal(chosenName, existing.info.name, `${context}: not idempotent`);
        } else {
          const chosen = feasible.find((agent) => agent.info.name === chosenName);
          assert.ok(chosen, `${context}: chose infeasible agent ${chosenName}`);
          const best = Math.max(...feasible.map((agent) => model.rank(agent, request.image)));
          assert.equal(model.rank(chosen, request.image), best, `${context}: ${chosenName} is not ranked first`);
          chosen.sandboxes.set(request.sandboxKey, request.ports);
          placed += 1;
        }
      }
    } else if (roll < 0.65) {
      const key = pick(SANDBOX_KEYS);
      const holder = model.agentOf(key);
      const released = registry.release(key);
      assert.equal(released?.agent.name, holder?.info.name, context);
      if (holder !== undefined) {
        assert.deepEqual(released?.ports, holder.sandboxes.get(key), context);
        holder.sandboxes.delete(key);
      }
    } else if (roll < 0.75) {
      const key = pick(SANDBOX_KEYS);
      const agentName = random() < 0.1 ? "ghost" : pick(AGENT_NAMES);
      const ports = subset(PORTS, 2);
      const target = model.agents.get(agentName);
      const holder = model.agentOf(key);
      const run = () => registry.restore({ sandboxKey: key, agentName, ports });
      if (target === undefined) {
        assert.throws(run, NotFoundError, context);
      } else if (holder !== undefined) {
        if (holder === target) assert.equal(run().agent.name, agentName, context);
        else assert.throws(run, (error: unknown) => error instanceof FsbError && error.code === "conflict", context);
      } else if (ports.some((port) => model.usedPorts(target).includes(port))) {
        assert.throws(run, (error: unknown) => error instanceof FsbError && error.code === "conflict", context);
      } else {
        assert.equal(run().agent.name, agentName, context);
        target.sandboxes.set(key, ports);
      }
    } else if (roll < 0.85) {
      const name = pick(AGENT_NAMES);
      const info = randomInfo(name);
      registry.upsertAgent(info);
      const existing = model.agents.get(name);
      if (existing === undefined) model.agents.set(name, { info, ready: true, sandboxes: new Map() });
      else existing.info = info;
    } else if (roll < 0.92) {
      const name = pick(AGENT_NAMES);
      const ready = random() < 0.6;
      const agent = model.agents.get(name);
      if (agent === undefined) {
        assert.throws(() => registry.setAgentReady(name, ready), NotFoundError, context);
      } else {
        registry.setAgentReady(name, ready);
        agent.ready = ready;
      }
    } else if (roll < 0.97) {
      const name = pick(AGENT_NAMES);
      const images = subset(IMAGES, 3);
      const agent = model.agents.get(name);
      if (agent === undefined) {
        assert.throws(() => registry.setImages(name, images), NotFoundError, context);
      } else {
        registry.setImages(name, images);
        agent.info = { ...agent.info, images };
      }
    } else {
      const name = pick(AGENT_NAMES);
      const agent = model.agents.get(name);
      const removed = registry.removeAgent(name);
      assert.deepEqual(removed.map((placement) => placement.sandboxKey).sort(), [...(agent?.sandboxes.keys() ?? [])].sort(), context);
      model.agents.delete(name);
    }

    registry.verifyIndexes();
    let placements = 0;
    for (const agent of model.agents.values()) {
      const snapshot = registry.getAgent(agent.info.name);
      assert.ok(snapshot, context);
      assert.equal(snapshot.allocated, agent.sandboxes.size, context);
      assert.equal(snapshot.ready, agent.ready, context);
      assert.deepEqual(snapshot.usedPorts, model.usedPorts(agent), context);
      placements += agent.sandboxes.size;
      for (const key of agent.sandboxes.keys()) assert.equal(registry.placementOf(key)?.agent.name, agent.info.name, context);
    }
    assert.equal(registry.placementCount, placements, context);
    assert.equal(registry.listAgents().length, model.agents.size, context);
    for (const namespace of NAMESPACES) {
      for (const pool of POOLS) {
        const agents = model.poolAgents(namespace, pool);
        const sum = (value: (agent: ModelAgent) => number) => agents.reduce((total, agent) => total + value(agent), 0);
        assert.deepEqual(
          registry.poolUsage(namespace, pool),
          {
            agents: agents.length,
            readyAgents: sum((agent) => (agent.ready ? 1 : 0)),
            capacity: sum((agent) => agent.info.capacity),
            allocated: sum((agent) => agent.sandboxes.size),
            free: sum((agent) => model.free(agent)),
          },
          context,
        );
      }
    }
  }
  return { placed, refused };
}

describe("AgentRegistry against a naive model", () => {
  for (const seed of [1, 2, 3, 42, 2024]) {
    it(`agrees on every operation of 4,000 random ones (seed ${seed})`, () => {
      const { placed, refused } = runRandomOperations(seed, 4_000);
      // Guard against a generator that never exercises one of the outcomes.
      assert.ok(placed > 200, `only ${placed} placements succeeded`);
      assert.ok(refused > 200, `only ${refused} placements were refused`);
    });
  }
});
