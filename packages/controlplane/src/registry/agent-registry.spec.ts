import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FsbError, NoCapacityError, NotFoundError } from "@fast-sandbox/api";
import { AgentRegistry, type AgentInfo, type PlacementRequest } from "./agent-registry.js";

function agent(name: string, overrides: Partial<AgentInfo> = {}): AgentInfo {
  return {
    name,
    namespace: "default",
    pool: "p",
    endpoint: `${name}:7000`,
    capacity: 4,
    // Each agent Pod has its own address, as in Kubernetes.
    hostIP: `ip-${name}`,
    images: [],
    ...overrides,
  };
}

function request(sandboxKey: string, overrides: Partial<PlacementRequest> = {}): PlacementRequest {
  return {
    sandboxKey,
    namespace: "default",
    pool: "p",
    image: "python:3.12",
    ports: [],
    ...overrides,
  };
}

function registryWith(...agents: AgentInfo[]): AgentRegistry {
  const registry = new AgentRegistry();
  for (const info of agents) registry.upsertAgent(info);
  return registry;
}

function assertNoCapacity(action: () => unknown, message: RegExp): void {
  assert.throws(action, (error: unknown) => {
    assert.ok(error instanceof NoCapacityError, `expected NoCapacityError, got ${String(error)}`);
    assert.equal(error.code, "no_capacity");
    assert.match(error.message, message);
    return true;
  });
}

describe("AgentRegistry", () => {
  it("takes the slot at placement and releases it exactly once", () => {
    const registry = registryWith(agent("a", { capacity: 2 }));
    const placement = registry.place(request("default/s1", { ports: [8080] }));
    assert.equal(placement.agent.name, "a");
    assert.deepEqual(placement.ports, [8080]);
    assert.equal(registry.getAgent("a")?.allocated, 1);
    assert.deepEqual(registry.getAgent("a")?.usedPorts, [8080]);
    assert.deepEqual(registry.poolUsage("default", "p"), {
      agents: 1,
      readyAgents: 1,
      capacity: 2,
      allocated: 1,
      free: 1,
    });

    assert.equal(registry.release("default/s1")?.agent.name, "a");
    assert.equal(registry.release("default/s1"), undefined);
    assert.equal(registry.getAgent("a")?.allocated, 0);
    assert.deepEqual(registry.getAgent("a")?.usedPorts, []);
    assert.equal(registry.poolUsage("default", "p").free, 2);
    assert.equal(registry.placementOf("default/s1"), undefined);
    registry.verifyIndexes();
  });

  it("grants exactly 3 of 40 placement attempts on 3 slots", () => {
    const registry = registryWith(agent("a", { capacity: 2 }), agent("b", { capacity: 1 }));
    let placed = 0;
    let refused = 0;
    for (let attempt = 0; attempt < 40; attempt += 1) {
      try {
        registry.place(request(`default/s${attempt}`));
        placed += 1;
      } catch (error) {
        assert.ok(error instanceof NoCapacityError);
        assert.match(error.message, /^no capacity: all 3 slots of pool default\/p are in use$/);
        refused += 1;
      }
    }
    assert.deepEqual([placed, refused], [3, 37]);
    assert.equal(registry.placementCount, 3);
    assert.equal(registry.lastPlacementInspected, 0, "a full pool is refused without looking at agents");
  });

  it("keeps declared ports exclusive per agent but allows the same port on another agent", () => {
    const registry = registryWith(agent("big", { capacity: 5 }), agent("small", { capacity: 2 }));
    assert.equal(registry.place(request("default/s1", { ports: [8080] })).agent.name, "big");
    // big still has more free slots (4 vs 2) but already uses 8080.
    assert.equal(registry.place(request("default/s2", { ports: [8080, 9000] })).agent.name, "small");
    assert.equal(registry.lastPlacementInspected, 2, "only the conflicting agent is skipped");
    assertNoCapacity(() => registry.place(request("default/s3", { ports: [8080] })), /^no agent in pool default\/p has port 8080 free/);
    assertNoCapacity(() => registry.place(request("default/s3", { ports: [9000, 8080] })), /^no agent in pool default\/p has ports 9000, 8080 all free/);
    assert.equal(registry.place(request("default/s3", { ports: [9000] })).agent.name, "big");
    assert.deepEqual(registry.getAgent("big")?.usedPorts, [8080, 9000]);

    registry.release("default/s1");
    assert.equal(registry.place(request("default/s4", { ports: [8080] })).agent.name, "big");
    registry.verifyIndexes();
  });

  it("prefers an agent holding the image over one with more free slots", () => {
    const registry = registryWith(agent("roomy", { capacity: 10 }), agent("warm", { capacity: 2, images: ["python:3.12"] }));
    assert.equal(registry.place(request("default/s1")).agent.name, "warm");
    assert.equal(registry.place(request("default/s2")).agent.name, "warm");
    assert.equal(registry.place(request("default/s3")).agent.name, "roomy", "falls back once the warm agent is full");
    assert.equal(registry.place(request("default/s4", { image: "node:22" })).agent.name, "roomy");
  });

  it("balances by free slots among agents equally (un)warm, breaking ties deterministically", () => {
    const run = () => {
      const registry = registryWith(agent("a", { capacity: 3 }), agent("b", { capacity: 3 }), agent("c", { capacity: 1 }));
      return Array.from({ length: 7 }, (_, index) => registry.place(request(`default/s${index}`)).agent.name);
    };
    const first = run();
    assert.deepEqual(first, run());
    assert.deepEqual(first.slice(0, 2).toSorted(), ["a", "b"]);
    const count = (name: string) => first.filter((chosen) => chosen === name).length;
    assert.deepEqual([count("a"), count("b"), count("c")], [3, 3, 1]);
  });

  it("never places a sandbox of one namespace on an agent of another", () => {
    const registry = registryWith(agent("a-1", { namespace: "a", capacity: 8 }));
    assertNoCapacity(() => registry.place(request("b/s1", { namespace: "b" })), /^pool b\/p has no ready agents/);
    registry.upsertAgent(agent("b-1", { namespace: "b", capacity: 1 }));
    assert.equal(registry.place(request("b/s1", { namespace: "b" })).agent.name, "b-1");
    assertNoCapacity(() => registry.place(request("b/s2", { namespace: "b" })), /all 1 slots of pool b\/p/);
    assert.equal(registry.getAgent("a-1")?.allocated, 0);
    assertNoCapacity(() => registry.place(request("a/s1", { namespace: "a", pool: "other" })), /pool a\/other/);
  });

  it("skips unready agents, which keep their allocations", () => {
    const registry = registryWith(agent("a", { capacity: 8 }), agent("b", { capacity: 2 }));
    registry.place(request("default/s1"));
    registry.setAgentReady("a", false);
    assert.equal(registry.getAgent("a")?.ready, false);
    assert.equal(registry.getAgent("a")?.allocated, 1);
    assert.equal(registry.place(request("default/s2")).agent.name, "b");
    assert.deepEqual(registry.poolUsage("default", "p"), {
      agents: 2,
      readyAgents: 1,
      capacity: 10,
      allocated: 2,
      free: 1,
    });
    registry.setAgentReady("b", false);
    assertNoCapacity(() => registry.place(request("default/s3")), /^pool default\/p has no ready agents \(2 registered, none ready\)$/);
    registry.setAgentReady("a", true);
    assert.equal(registry.place(request("default/s3")).agent.name, "a");
    assert.throws(() => registry.setAgentReady("ghost", true), NotFoundError);
    registry.verifyIndexes();
  });

  it("returns the placements of a removed agent and frees their keys", () => {
    const registry = registryWith(agent("a", { capacity: 2 }), agent("b", { capacity: 1 }));
    registry.place(request("default/s1", { ports: [80] }));
    registry.place(request("default/s2"));
    registry.place(request("default/s3"));
    const onA = ["default/s1", "default/s2", "default/s3"].filter((key) => registry.placementOf(key)?.agent.name === "a");

    const removed = registry.removeAgent("a");
    assert.deepEqual(removed.map((placement) => placement.sandboxKey).toSorted(), onA.toSorted());
    assert.ok(removed.every((placement) => placement.agent.name === "a"));
    for (const key of onA) {
      assert.equal(registry.placementOf(key), undefined);
      assert.equal(registry.release(key), undefined);
    }
    assert.equal(registry.getAgent("a"), undefined);
    assert.deepEqual(registry.removeAgent("a"), []);
    assert.equal(registry.placementCount, 1);
    assert.equal(registry.poolUsage("default", "p").agents, 1);
    registry.verifyIndexes();
  });

  it("restores existing placements without scheduling, even over capacity", () => {
    const registry = registryWith(agent("a", { capacity: 1 }));
    registry.setAgentReady("a", false);
    registry.restore({
      sandboxKey: "default/s1",
      agentName: "a",
      ports: [8080],
    });
    const again = registry.restore({
      sandboxKey: "default/s1",
      agentName: "a",
      ports: [8080],
    });
    assert.equal(again.agent.name, "a");
    registry.restore({ sandboxKey: "default/s2", agentName: "a", ports: [] });
    assert.equal(registry.getAgent("a")?.allocated, 2, "over-committed, idempotent for the same key");
    assert.equal(registry.poolUsage("default", "p").free, 0);

    assert.throws(
      () =>
        registry.restore({
          sandboxKey: "default/s3",
          agentName: "ghost",
          ports: [],
        }),
      NotFoundError,
    );
    registry.upsertAgent(agent("b"));
    assert.throws(
      () =>
        registry.restore({
          sandboxKey: "default/s1",
          agentName: "b",
          ports: [],
        }),
      (error: unknown) => error instanceof FsbError && error.code === "conflict" && /placed on agent a/.test(error.message),
    );
    assert.throws(
      () =>
        registry.restore({
          sandboxKey: "default/s3",
          agentName: "a",
          ports: [8080],
        }),
      (error: unknown) => error instanceof FsbError && error.code === "conflict" && /held by sandbox default\/s1/.test(error.message),
    );

    registry.setAgentReady("a", true);
    assert.equal(registry.place(request("default/s4")).agent.name, "b", "the over-committed agent gets nothing");
    registry.release("default/s1");
    registry.release("default/s2");
    assert.equal(registry.getAgent("a")?.allocated, 0);
    registry.verifyIndexes();
  });

  it("returns the existing placement for a sandbox key that is already placed", () => {
    const registry = registryWith(agent("a", { capacity: 1 }));
    const first = registry.place(request("default/s1", { ports: [8080] }));
    const second = registry.place(request("default/s1", { ports: [8080] }));
    assert.deepEqual(second, first);
    assert.equal(registry.getAgent("a")?.allocated, 1);
  });

  it("keeps allocations when an agent's registration changes", () => {
    const registry = registryWith(agent("a", { capacity: 3 }));
    registry.place(request("default/s1"));
    registry.place(request("default/s2"));
    registry.upsertAgent(agent("a", { capacity: 1, endpoint: "moved:7000" }));
    assert.equal(registry.getAgent("a")?.allocated, 2);
    assert.equal(registry.placementOf("default/s1")?.agent.endpoint, "moved:7000");
    assertNoCapacity(() => registry.place(request("default/s3")), /all 1 slots/);
    registry.upsertAgent(agent("a", { capacity: 4 }));
    assert.equal(registry.place(request("default/s3")).agent.name, "a");
    assert.equal(registry.poolUsage("default", "p").free, 1);
    registry.verifyIndexes();
  });

  it("takes an agent registered under a name of another namespace's for another agent: the earlier one goes with its placements", () => {
    const registry = registryWith(agent("a", { capacity: 3 }));
    registry.place(request("default/s1"));
    registry.upsertAgent(agent("a", { namespace: "other", endpoint: "elsewhere:7000" }));
    assert.equal(registry.placementOf("default/s1"), undefined, "the sandbox of default is not on the agent of other");
    assert.deepEqual([registry.getAgent("a")?.namespace, registry.getAgent("a")?.allocated], ["other", 0]);
    assert.deepEqual(registry.poolUsage("default", "p"), { agents: 0, readyAgents: 0, capacity: 0, allocated: 0, free: 0 });
    assert.equal(registry.poolUsage("other", "p").agents, 1);
    registry.verifyIndexes();
  });

  it("follows image changes for affinity", () => {
    const registry = registryWith(agent("a", { capacity: 8 }), agent("b", { capacity: 2 }));
    registry.setImages("b", ["python:3.12"]);
    assert.deepEqual(registry.getAgent("b")?.images, ["python:3.12"]);
    assert.equal(registry.place(request("default/s1")).agent.name, "b");
    registry.setImages("b", []);
    assert.equal(registry.place(request("default/s2")).agent.name, "a");
    assert.throws(() => registry.setImages("ghost", []), NotFoundError);
    registry.verifyIndexes();
  });

  it("lists agents by namespace and pool as copies", () => {
    const registry = registryWith(
      agent("c", { namespace: "x", pool: "p" }),
      agent("a", { namespace: "x", pool: "q" }),
      agent("b", { namespace: "y", pool: "p" }),
    );
    assert.deepEqual(
      registry.listAgents().map((snapshot) => snapshot.name),
      ["a", "b", "c"],
    );
    assert.deepEqual(
      registry.listAgents({ namespace: "x" }).map((snapshot) => snapshot.name),
      ["a", "c"],
    );
    assert.deepEqual(
      registry.listAgents({ pool: "p" }).map((snapshot) => snapshot.name),
      ["b", "c"],
    );
    assert.deepEqual(
      registry.listAgents({ namespace: "x", pool: "p" }).map((snapshot) => snapshot.name),
      ["c"],
    );
    const [listed] = registry.listAgents({ namespace: "y" });
    assert.ok(listed);
    listed.usedPorts.push(1);
    listed.capacity = 0;
    assert.deepEqual(registry.getAgent("b")?.usedPorts, []);
    assert.equal(registry.getAgent("b")?.capacity, 4);
  });

  it("rejects invalid capacities and ports", () => {
    const registry = new AgentRegistry();
    assert.throws(() => registry.upsertAgent(agent("a", { capacity: 1025 })), /capacity must be an integer from 0 to 1024/);
    assert.throws(() => registry.upsertAgent(agent("a", { capacity: -1 })), FsbError);
    registry.upsertAgent(agent("a"));
    assert.throws(() => registry.place(request("default/s1", { ports: [80, 80] })), /declared twice/);
    assert.throws(() => registry.place(request("default/s1", { ports: [0] })), /not an integer from 1 to 65535/);
    assert.equal(registry.placementCount, 0);
  });

  it("looks at a handful of agents per placement among 10,000", () => {
    const registry = new AgentRegistry();
    for (let index = 0; index < 10_000; index += 1) {
      registry.upsertAgent(
        agent(`agent-${index}`, {
          capacity: 2,
          images: index % 100 === 0 ? ["python:3.12"] : [],
        }),
      );
    }
    let maxInspected = 0;
    for (let index = 0; index < 10_000; index += 1) {
      registry.place(
        request(`default/s${index}`, {
          ports: [8080],
          image: index % 2 === 0 ? "python:3.12" : "node:22",
        }),
      );
      maxInspected = Math.max(maxInspected, registry.lastPlacementInspected);
    }
    // Warm agents fill first; each placement then lands on an agent that still has both slots and no 8080.
    assert.ok(maxInspected <= 2, `inspected up to ${maxInspected} agents`);
    for (let index = 0; index < 2_000; index += 1) {
      registry.place(request(`default/t${index}`, { ports: [9000] }));
      assert.ok(registry.lastPlacementInspected <= 2, `inspected ${registry.lastPlacementInspected} agents`);
    }
    assert.equal(registry.poolUsage("default", "p").allocated, 12_000);
    registry.verifyIndexes();
  });

  it("refuses a port every candidate among 10,000 already uses without walking them", () => {
    const registry = new AgentRegistry();
    for (let index = 0; index < 10_000; index += 1) {
      registry.upsertAgent(agent(`agent-${index}`, { capacity: 2, images: ["python:3.12"] }));
    }
    for (let index = 0; index < 10_000; index += 1) registry.place(request(`default/s${index}`, { ports: [8080] }));
    assert.equal(registry.poolUsage("default", "p").free, 10_000);
    assertNoCapacity(
      () => registry.place(request("default/extra", { ports: [8080] })),
      /^no agent in pool default\/p has port 8080 free \(10000 free slots are on agents already using it\)$/,
    );
    assert.equal(registry.lastPlacementInspected, 0);
    registry.release("default/s1234");
    assert.equal(registry.place(request("default/extra", { ports: [8080] })).agent.name, "agent-1234");
    assert.ok(registry.lastPlacementInspected <= 2, `inspected ${registry.lastPlacementInspected} agents`);
  });
  it("keeps declared ports exclusive across agents that share one host address (embedded mode)", () => {
    const registry = new AgentRegistry();
    registry.upsertAgent(agent("a", { hostIP: "127.0.0.1" }));
    registry.upsertAgent(agent("b", { hostIP: "127.0.0.1" }));
    registry.upsertAgent(agent("c", { hostIP: "127.0.0.1", pool: "other" }));
    const first = registry.place(request("s1", { ports: [8080] }));
    assert.throws(
      () => registry.place(request("s2", { ports: [8080] })),
      (error: Error) => {
        assert.ok(error instanceof NoCapacityError);
        assert.match(error.message, /port 8080 is in use on host 127\.0\.0\.1 by sandbox s1/);
        return true;
      },
    );
    // Another pool on the same host is refused too, and a restore cannot take the port either.
    assert.throws(() => registry.place(request("s3", { pool: "other", ports: [8080] })), NoCapacityError);
    assert.throws(
      () => registry.restore({ sandboxKey: "s4", agentName: first.agent.name === "a" ? "b" : "a", ports: [8080] }),
      /port 8080 is held by sandbox s1/,
    );
    registry.release("s1");
    assert.equal(registry.place(request("s2", { ports: [8080] })).ports[0], 8080);
    registry.verifyIndexes();
  });
});

describe("AgentRegistry placement restricted to some agents (restores from a checkpoint)", () => {
  it("places only on the listed agents, the one with the most free slots first", () => {
    const registry = registryWith(agent("a", { capacity: 8 }), agent("b", { capacity: 2 }), agent("c", { capacity: 3 }));
    assert.equal(registry.place(request("s1", { agents: ["b", "c"] })).agent.name, "c");
    assert.equal(registry.place(request("s2", { agents: ["b", "c"] })).agent.name, "b");
    registry.verifyIndexes();
  });

  it("skips listed agents that are unready, full, of another pool or unknown, and says so when none is left", () => {
    const registry = registryWith(agent("a", { capacity: 1 }), agent("b"), agent("other", { pool: "q" }));
    registry.setAgentReady("b", false);
    assert.equal(registry.place(request("s1", { agents: ["a", "b", "other", "gone"] })).agent.name, "a");
    assertNoCapacity(
      () => registry.place(request("s2", { agents: ["a", "b", "other", "gone"] })),
      /none of the agents of pool default\/p .*\(a, b, other, gone\)/,
    );
    assertNoCapacity(() => registry.place(request("s3", { agents: [] })), /\(none\)/);
    registry.verifyIndexes();
  });

  it("keeps the ports rule: a listed agent whose address uses a requested port is skipped", () => {
    const registry = registryWith(agent("a"), agent("b"));
    registry.place(request("s1", { ports: [8080], agents: ["a"] }));
    assert.equal(registry.place(request("s2", { ports: [8080], agents: ["a", "b"] })).agent.name, "b");
    assertNoCapacity(() => registry.place(request("s3", { ports: [8080], agents: ["a", "b"] })), /ports free/);
    registry.verifyIndexes();
  });
});

describe("AgentRegistry placement passing over agents to avoid (one that just failed this create)", () => {
  it("takes another agent while one can take the sandbox, image affinity and free slots included", () => {
    const registry = registryWith(agent("a", { capacity: 8, images: ["python:3.12"] }), agent("b", { capacity: 2 }), agent("c", { capacity: 3 }));
    assert.equal(registry.place(request("s1")).agent.name, "a");
    registry.release("s1");
    assert.equal(registry.place(request("s1", { avoid: new Set(["a"]) })).agent.name, "c");
    assert.equal(registry.place(request("s2", { avoid: new Set(["a", "c"]) })).agent.name, "b");
    registry.verifyIndexes();
  });

  it("falls back to an avoided agent when no other can take it, and never to an unready one", () => {
    const registry = registryWith(agent("a", { capacity: 1 }), agent("b", { capacity: 1 }));
    registry.place(request("s1", { avoid: new Set(["a"]) }));
    assert.equal(registry.placementOf("s1")?.agent.name, "b");
    assert.equal(registry.place(request("s2", { avoid: new Set(["a"]) })).agent.name, "a");
    registry.release("s2");
    registry.setAgentReady("a", false);
    assertNoCapacity(() => registry.place(request("s2", { avoid: new Set(["a"]) })), /./);
    registry.verifyIndexes();
  });

  it("prefers the listed agents it need not avoid (a restore placed again)", () => {
    const registry = registryWith(agent("a", { capacity: 8 }), agent("b", { capacity: 2 }));
    assert.equal(registry.place(request("s1", { agents: ["a", "b"], avoid: new Set(["a"]) })).agent.name, "b");
    assert.equal(registry.place(request("s2", { agents: ["a", "b"], avoid: new Set(["a"]) })).agent.name, "b");
    assert.equal(registry.place(request("s3", { agents: ["a", "b"], avoid: new Set(["a"]) })).agent.name, "a");
    registry.verifyIndexes();
  });
});
