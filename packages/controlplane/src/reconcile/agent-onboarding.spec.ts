import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import type { SandboxPool } from "@fast-sandbox/api";
import type { AgentStatus } from "../agent-client/agent-client.js";
import { SandboxManagerFixture, poolOf } from "../fastpath/sandbox-manager.fixture.js";
import { AgentAdoption } from "./agent-adoption.js";
import { AgentOnboarding } from "./agent-onboarding.js";
import { ImagePrewarmer } from "./image-prewarmer.js";

const logger = pino({ level: "silent" });

function status(images: string[] = []): AgentStatus {
  return { name: "agent-a", namespace: "default", pool: "default", nodeName: "node-1", images, sandboxes: [], pid: 1 };
}

describe("AgentOnboarding", () => {
  let fixture: SandboxManagerFixture;
  let adopted: string[];
  let leader: boolean;
  let pool: SandboxPool | undefined;

  function onboarding(): AgentOnboarding {
    const adoption = new AgentAdoption({ store: fixture.store, registry: fixture.registry, manager: fixture.manager, agents: fixture.agents, logger });
    const adopt = adoption.adopt.bind(adoption);
    adoption.adopt = (name, reported) => {
      adopted.push(name);
      return adopt(name, reported);
    };
    return new AgentOnboarding({
      adoption,
      clock: fixture.clock,
      registry: fixture.registry,
      agents: fixture.agents,
      logger,
      isLeader: () => leader,
      poolOf: () => pool,
      prewarmer: new ImagePrewarmer({ logger, clock: fixture.clock }),
    });
  }

  beforeEach(() => {
    fixture = new SandboxManagerFixture();
    // Every pull ends done (a pull that does not is retried after a pause of the fixture's clock).
    fixture.addAgent("agent-a").pullProgress = [{ image: "", phase: "done", layersTotal: 1, layersDone: 1, bytesTotal: 1, bytesDone: 1, digest: "sha256:0" }];
    adopted = [];
    leader = true;
    pool = poolOf("default", { prewarmImages: ["python:3.12", "busybox"] });
  });

  afterEach(() => fixture.close());

  it("adopts on the leader, then pulls the pool's prewarm images the agent lacks and shows them to placement at once", async () => {
    await onboarding().onConnected("agent-a", status(["docker.io/library/python:3.12"]));

    assert.deepEqual(adopted, ["agent-a"]);
    assert.deepEqual(fixture.client("agent-a").pulls, ["docker.io/library/busybox:latest"], "only the image it lacks");
    assert.ok(fixture.registry.getAgent("agent-a")?.images.includes("docker.io/library/busybox:latest"));
  });

  it("does not adopt on a replica that is not the leader, but still prewarms (any replica may place on the agent)", async () => {
    leader = false;

    await onboarding().onConnected("agent-a", status());

    assert.deepEqual(adopted, []);
    assert.equal(fixture.client("agent-a").pulls.length, 2);
  });

  it("pulls nothing for an agent whose pool is unknown or names no prewarm images", async () => {
    pool = undefined;
    await onboarding().onConnected("agent-a", status());
    pool = poolOf("default");
    await onboarding().onConnected("agent-a", status());

    assert.deepEqual(fixture.client("agent-a").pulls, []);
    assert.deepEqual(adopted, ["agent-a", "agent-a"]);
  });

  it("never throws: an adoption that fails still lets the agent be warmed and used", async () => {
    const onboard = onboarding();
    const failing = fixture.store.list.bind(fixture.store);
    fixture.store.list = () => Promise.reject(new Error("store unavailable"));
    try {
      await onboard.onConnected("agent-a", status());
    } finally {
      fixture.store.list = failing;
    }

    assert.equal(fixture.client("agent-a").pulls.length, 2);
  });

  it("adopts again after a failure, with the agent's status as it is then, doubling the pause, until it succeeds", async () => {
    const onboard = onboarding();
    // A record Running on agent-a whose container vanished: adoption marks it Lost.
    await fixture.storeRecord("vanished", { phase: "Running", assignedPod: "agent-a", sandboxID: "sb-vanished" });
    const list = fixture.store.list.bind(fixture.store);
    let failures = 2;
    fixture.store.list = ((...args: Parameters<typeof list>) =>
      failures-- > 0 ? Promise.reject(new Error("store unavailable")) : list(...args)) as typeof fixture.store.list;
    const settle = () => new Promise((resolve) => setImmediate(resolve));

    await onboard.onConnected("agent-a", status());
    assert.deepEqual(adopted, ["agent-a"]);
    assert.equal((await fixture.stored("vanished"))?.status?.phase, "Running", "not adopted yet");

    fixture.clock.advance(999);
    await settle();
    assert.equal(adopted.length, 1, "not before the first pause (1 s)");
    fixture.clock.advance(1);
    await settle();
    assert.equal(adopted.length, 2, "tried again: failed again");
    fixture.clock.advance(1999);
    await settle();
    assert.equal(adopted.length, 2, "the pause doubled (2 s)");
    fixture.clock.advance(1);
    for (let i = 0; i < 10 && (await fixture.stored("vanished"))?.status?.phase !== "Lost"; i++) await settle();
    assert.equal(adopted.length, 3);
    assert.equal((await fixture.stored("vanished"))?.status?.phase, "Lost", "adopted: the vanished sandbox is Lost");

    fixture.clock.advance(60_000);
    await settle();
    assert.equal(adopted.length, 3, "no more tries once it succeeded");
  });

  it("stops trying again once this instance no longer leads, or is stopped", async () => {
    const onboard = onboarding();
    fixture.store.list = () => Promise.reject(new Error("store unavailable"));
    const settle = () => new Promise((resolve) => setImmediate(resolve));
    await onboard.onConnected("agent-a", status());
    leader = false;
    fixture.clock.advance(60_000);
    await settle();
    assert.deepEqual(adopted, ["agent-a"], "a follower does not adopt");

    leader = true;
    await onboard.onConnected("agent-a", status());
    onboard.stop();
    fixture.clock.advance(60_000);
    await settle();
    assert.deepEqual(adopted, ["agent-a", "agent-a"]);
  });
});
