import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type PoolCapacity, type SandboxPool } from "@fast-sandbox/api";
import { desiredAgents, planPoolSize, poolBuffer, type PoolAgentState } from "./pool-sizer.js";

function pool(capacity: PoolCapacity, maxSandboxesPerPod: number): SandboxPool {
  return { apiVersion: API_VERSION, kind: "SandboxPool", metadata: { name: "p", namespace: "default" }, spec: { capacity, maxSandboxesPerPod } };
}

const agent = (name: string, allocated: number): PoolAgentState => ({ name, allocated, ready: true });
const t0 = new Date("2026-01-01T00:00:00Z");
const after = (seconds: number) => new Date(t0.getTime() + seconds * 1000);

describe("desiredAgents", () => {
  it("counts creates waiting for capacity as demand, so a pool at zero wakes", () => {
    const p = pool({ poolMin: 0, poolMax: 3 }, 4);
    assert.equal(desiredAgents(p, 0, 0), 0);
    assert.equal(desiredAgents(p, 0, 1), 1);
    assert.equal(desiredAgents(p, 4, 1), 2);
    assert.equal(desiredAgents(p, 100, 100), 3);
  });

  it("keeps poolMin agents when nothing is allocated and no buffer is asked for", () => {
    assert.equal(desiredAgents(pool({ poolMin: 2, poolMax: 5 }, 4), 0), 2);
    assert.equal(desiredAgents(pool({ poolMin: 0, poolMax: 5 }, 4), 0), 0);
  });

  it("adds agents as allocations fill their slots, rounding up", () => {
    const p = pool({ poolMin: 1, poolMax: 10 }, 4);
    assert.equal(desiredAgents(p, 4), 1);
    assert.equal(desiredAgents(p, 5), 2);
    assert.equal(desiredAgents(p, 8), 2);
    assert.equal(desiredAgents(p, 9), 3);
  });

  it("counts bufferMin free slots on top of the allocated ones", () => {
    const p = pool({ poolMin: 0, poolMax: 10, bufferMin: 3 }, 4);
    assert.equal(desiredAgents(p, 0), 1);
    assert.equal(desiredAgents(p, 1), 1);
    assert.equal(desiredAgents(p, 2), 2);
    assert.equal(desiredAgents(p, 6), 3);
  });

  it("never exceeds poolMax, however full the pool is", () => {
    const p = pool({ poolMin: 1, poolMax: 3, bufferMin: 2 }, 2);
    assert.equal(desiredAgents(p, 4), 3);
    assert.equal(desiredAgents(p, 100), 3);
  });

  it("never goes below poolMin, even when the buffer alone needs fewer", () => {
    assert.equal(desiredAgents(pool({ poolMin: 3, poolMax: 5, bufferMin: 1 }, 8), 0), 3);
  });

  it("is zero for a pool sized to nothing", () => {
    assert.equal(desiredAgents(pool({ poolMin: 0, poolMax: 0, bufferMin: 5 }, 4), 10), 0);
  });

  it("with one slot per agent, needs one agent per sandbox plus one per buffered slot", () => {
    const p = pool({ poolMin: 0, poolMax: 50, bufferMin: 2 }, 1);
    assert.equal(desiredAgents(p, 7), 9);
  });
});

describe("planPoolSize", () => {
  it("grows at once to the desired count", () => {
    const plan = planPoolSize({ pool: pool({ poolMin: 0, poolMax: 4 }, 2), agents: [agent("p-0", 2)], waiting: 3, now: t0, spareSince: undefined });
    assert.deepEqual(plan, { desired: 3, buffer: 0, add: 2, remove: [], spareSince: undefined });
  });

  it("releases idle agents only after the spare capacity lasted scaleDownDelaySeconds", () => {
    const p = pool({ poolMin: 0, poolMax: 4, scaleDownDelaySeconds: 60 }, 2);
    const agents = [agent("p-0", 0), agent("p-1", 0)];
    const first = planPoolSize({ pool: p, agents, waiting: 0, now: t0, spareSince: undefined });
    assert.deepEqual(first.remove, []);
    assert.deepEqual(first.spareSince, t0);
    const early = planPoolSize({ pool: p, agents, waiting: 0, now: after(59), spareSince: first.spareSince });
    assert.deepEqual(early.remove, []);
    const late = planPoolSize({ pool: p, agents, waiting: 0, now: after(60), spareSince: early.spareSince });
    assert.deepEqual(late.remove, ["p-1", "p-0"], "scale to zero: poolMin 0, bufferMin 0");
    assert.equal(late.desired, 0);
  });

  it("restarts the idle clock when the spare capacity disappears meanwhile", () => {
    const p = pool({ poolMin: 0, poolMax: 4, scaleDownDelaySeconds: 60 }, 1);
    const busy = planPoolSize({ pool: p, agents: [agent("p-0", 1)], waiting: 0, now: after(30), spareSince: t0 });
    assert.equal(busy.spareSince, undefined);
    const idleAgain = planPoolSize({ pool: p, agents: [agent("p-0", 0)], waiting: 0, now: after(61), spareSince: busy.spareSince });
    assert.deepEqual(idleAgain.remove, []);
    assert.deepEqual(idleAgain.spareSince, after(61));
  });

  it("never removes an agent that holds sandboxes, whatever the surplus", () => {
    const p = pool({ poolMin: 0, poolMax: 5, scaleDownDelaySeconds: 0 }, 4);
    const plan = planPoolSize({ pool: p, agents: [agent("p-0", 1), agent("p-1", 0), agent("p-2", 1)], waiting: 0, now: t0, spareSince: undefined });
    assert.deepEqual(plan.remove, ["p-1"]);
  });

  it("keeps up to bufferMax free slots: spare capacity within it is not released", () => {
    const p = pool({ poolMin: 1, poolMax: 5, bufferMin: 1, bufferMax: 8, scaleDownDelaySeconds: 0 }, 4);
    // 3 agents, 1 sandbox: desired 1, free 11 > 8 → one idle agent goes (free 7 ≤ 8 then).
    const plan = planPoolSize({ pool: p, agents: [agent("p-0", 1), agent("p-1", 0), agent("p-2", 0)], waiting: 0, now: t0, spareSince: undefined });
    assert.deepEqual(plan.remove, ["p-2"]);
  });

  it("does not shrink while creates wait for capacity", () => {
    const p = pool({ poolMin: 0, poolMax: 5, scaleDownDelaySeconds: 0 }, 4);
    const plan = planPoolSize({ pool: p, agents: [agent("p-0", 0), agent("p-1", 0)], waiting: 1, now: t0, spareSince: undefined });
    assert.deepEqual(plan.remove, []);
  });

  it("holds its rules over random pools and loads (model check)", () => {
    let seed = 42;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 5000; round++) {
      const perAgent = 1 + random(8);
      const poolMin = random(3);
      const poolMax = poolMin + random(5);
      const bufferMin = random(6);
      const bufferMax = bufferMin + random(10);
      const p = pool({ poolMin, poolMax, bufferMin, bufferMax, scaleDownDelaySeconds: random(3) }, perAgent);
      const agents = Array.from({ length: random(7) }, (_, i) => agent(`p-${i}`, random(perAgent + 2)));
      const waiting = random(3);
      const spareSince = random(2) ? t0 : undefined;
      const now = after(random(4));
      const plan = planPoolSize({ pool: p, agents, waiting, now, spareSince });
      const allocated = agents.reduce((sum, a) => sum + a.allocated, 0);
      assert.equal(plan.desired, desiredAgents(p, allocated, waiting));
      assert.ok(plan.desired >= poolMin && plan.desired <= Math.max(poolMin, poolMax));
      if (agents.length < plan.desired) {
        assert.equal(plan.add, plan.desired - agents.length);
        assert.deepEqual(plan.remove, []);
      } else {
        assert.equal(plan.add, 0);
      }
      assert.ok(agents.length - plan.remove.length >= Math.min(agents.length, plan.desired), "never below desired");
      for (const name of plan.remove) assert.equal(agents.find((a) => a.name === name)?.allocated, 0, "only idle agents go");
      if (plan.remove.length > 0) {
        assert.equal(waiting, 0);
        const idleSince = spareSince ?? now;
        assert.ok(now.getTime() - idleSince.getTime() >= (p.spec.capacity.scaleDownDelaySeconds ?? 0) * 1000, "only after the delay");
      }
    }
  });
});

describe("poolBuffer and the flow-aware buffer (capacity.dynamicBuffer)", () => {
  it("is bufferMin and bufferMax (default bufferMin) without dynamicBuffer, whatever the flow", () => {
    assert.deepEqual(poolBuffer(pool({ poolMin: 0, poolMax: 4, bufferMin: 1 }, 2), 5), { min: 1, max: 1 });
    assert.deepEqual(poolBuffer(pool({ poolMin: 0, poolMax: 4, bufferMin: 1, bufferMax: 3 }, 2), undefined), { min: 1, max: 3 });
  });

  it("follows the flow within [bufferMin, bufferMax], and raises max to it so it is not released as spare", () => {
    const dynamic = (capacity: Omit<PoolCapacity, "poolMin" | "poolMax">) => pool({ poolMin: 0, poolMax: 9, dynamicBuffer: true, ...capacity }, 2);
    assert.deepEqual(poolBuffer(dynamic({}), 0), { min: 0, max: 0 });
    assert.deepEqual(poolBuffer(dynamic({}), 5), { min: 5, max: 5 }, "no bufferMax: the flow alone (poolMax bounds the agents)");
    assert.deepEqual(poolBuffer(dynamic({ bufferMin: 2 }), 1), { min: 2, max: 2 }, "never below bufferMin");
    assert.deepEqual(poolBuffer(dynamic({ bufferMin: 1, bufferMax: 4 }), 3), { min: 3, max: 4 });
    assert.deepEqual(poolBuffer(dynamic({ bufferMin: 1, bufferMax: 4 }), 10), { min: 4, max: 4 }, "never above bufferMax");
  });

  it("sizes the pool for the flow's free slots, and keeps them while it lasts", () => {
    const p = pool({ poolMin: 0, poolMax: 10, dynamicBuffer: true, scaleDownDelaySeconds: 0 }, 2);
    const grown = planPoolSize({ pool: p, agents: [agent("p-0", 2)], waiting: 0, now: t0, spareSince: undefined, flowBuffer: 3 });
    assert.deepEqual({ desired: grown.desired, buffer: grown.buffer, add: grown.add }, { desired: 3, buffer: 3, add: 2 });
    const three = [agent("p-0", 2), agent("p-1", 0), agent("p-2", 0)];
    const withFlow = (flowBuffer: number) => planPoolSize({ pool: p, agents: three, waiting: 0, now: after(1), spareSince: undefined, flowBuffer });
    assert.deepEqual(withFlow(3).remove, [], "4 free slots against a buffer of 3: nothing is spare");
    const quiet = withFlow(0);
    assert.deepEqual({ buffer: quiet.buffer, remove: quiet.remove }, { buffer: 0, remove: ["p-2", "p-1"] }, "a quiet window gives the agents back");
  });
});
