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
});
