import assert from "node:assert/strict";
import { beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import { FsbError, NotFoundError, UnavailableError } from "@fast-sandbox/api";
import type { AgentClient, AgentStatus, PullProgress } from "../agent-client/agent-client.js";
import { FakeClock } from "../controller/clock.js";
import { ImagePrewarmer } from "./image-prewarmer.js";

/** An AgentClient whose pullImage plays a script per image: fail with these errors first, then succeed. */
class FakeAgent implements Partial<AgentClient> {
  readonly pulls: string[] = [];
  /** What status() reports as present. */
  images: string[] = [];

  async status(): Promise<AgentStatus> {
    return { name: "agent-0", namespace: "default", pool: "default", nodeName: "node-0", images: this.images, sandboxes: [], pid: 1 };
  }
  failures = new Map<string, Error[]>();
  gate: Promise<void> | undefined;

  async *pullImage(image: string): AsyncIterable<PullProgress> {
    this.pulls.push(image);
    if (this.gate) await this.gate;
    yield { image, phase: "resolving", layersTotal: 0, layersDone: 0, bytesTotal: 0, bytesDone: 0, digest: "" };
    const error = this.failures.get(image)?.shift();
    if (error) throw error;
    yield { image, phase: "done", layersTotal: 1, layersDone: 1, bytesTotal: 10, bytesDone: 10, digest: "sha256:0" };
  }
}

const logger = pino({ level: "silent" });

describe("ImagePrewarmer", () => {
  let agent: FakeAgent;
  let clock: FakeClock;
  let prewarmer: ImagePrewarmer;
  const client = () => agent as unknown as AgentClient;

  beforeEach(() => {
    agent = new FakeAgent();
    clock = new FakeClock();
    prewarmer = new ImagePrewarmer({ logger, retryDelayMs: 1000, clock });
  });

  it("pulls the images the agent lacks, by normalized name, once each", async () => {
    const result = await prewarmer.prewarm("a-0", client(), ["busybox", "docker.io/library/busybox:latest", "python:3.12", "r.io/app:v1"], ["r.io/app:v1"]);
    assert.deepEqual(agent.pulls, ["docker.io/library/busybox:latest", "docker.io/library/python:3.12"]);
    assert.deepEqual(result, { pulled: ["docker.io/library/busybox:latest", "docker.io/library/python:3.12"], failed: [] });
  });

  it("retries a failure that may pass, up to three attempts, pausing retryDelayMs and then twice that", async () => {
    agent.failures.set("r.io/app:v1", [new UnavailableError("registry down"), new UnavailableError("registry down")]);
    const prewarming = prewarmer.prewarm("a-0", client(), ["r.io/app:v1"], []);
    await clock.advanceAsync(999);
    assert.equal(agent.pulls.length, 1);
    await clock.advanceAsync(1);
    assert.equal(agent.pulls.length, 2);
    await clock.advanceAsync(1999);
    assert.equal(agent.pulls.length, 2);
    await clock.advanceAsync(1);
    const result = await prewarming;
    assert.equal(agent.pulls.length, 3);
    assert.deepEqual(result.pulled, ["r.io/app:v1"]);

    agent.pulls.length = 0;
    agent.failures.set(
      "r.io/app:v2",
      [1, 2, 3].map(() => new UnavailableError("registry down")),
    );
    const failing = prewarmer.prewarm("a-0", client(), ["r.io/app:v2"], []);
    await clock.advanceAsync(3000);
    const failed = await failing;
    assert.equal(agent.pulls.length, 3);
    assert.equal(failed.failed[0]?.error.code, "unavailable");
    assert.equal(clock.pendingTimers, 0, "no pause after the last attempt");
  });

  it("does not retry an unknown image or refused credentials, and goes on with the next image", async () => {
    agent.failures.set("r.io/app:nope", [new NotFoundError("image r.io/app:nope not found")]);
    agent.failures.set("r.io/private:v1", [new FsbError("unauthenticated", "run fsb login r.io")]);
    const result = await prewarmer.prewarm("a-0", client(), ["r.io/app:nope", "r.io/private:v1", "r.io/app:v1"], []);
    assert.deepEqual(agent.pulls, ["r.io/app:nope", "r.io/private:v1", "r.io/app:v1"]);
    assert.deepEqual(
      result.failed.map((f) => [f.image, f.error.code]),
      [
        ["r.io/app:nope", "not_found"],
        ["r.io/private:v1", "unauthenticated"],
      ],
    );
    assert.deepEqual(result.pulled, ["r.io/app:v1"]);
  });

  it("runs one background pull per agent at a time", async () => {
    let open!: () => void;
    agent.gate = new Promise((resolve) => (open = resolve));
    assert.equal(prewarmer.pullInBackground("a-0", client(), "busybox"), true);
    assert.equal(prewarmer.backgroundPull("a-0"), "docker.io/library/busybox:latest");
    assert.equal(prewarmer.pullInBackground("a-0", client(), "python:3.12"), false);
    assert.equal(prewarmer.pullInBackground("a-1", client(), "python:3.12"), true);
    open();
    await waitUntil(() => prewarmer.backgroundPull("a-0") === undefined && prewarmer.backgroundPull("a-1") === undefined);
    assert.deepEqual(agent.pulls.sort(), ["docker.io/library/busybox:latest", "docker.io/library/python:3.12"]);
  });

  it("skips a background pull when the agent's fresh status shows the image (the caller's list was a heartbeat old)", async () => {
    agent.images = ["docker.io/library/busybox:latest"];
    assert.equal(prewarmer.pullInBackground("a-0", client(), "busybox"), true);
    await waitUntil(() => prewarmer.backgroundPull("a-0") === undefined);
    assert.deepEqual(agent.pulls, []);
  });

  it("does not try a background pull on that agent again for a minute, failed or not", async () => {
    agent.failures.set("r.io/app:v1", [new UnavailableError("down")]);
    assert.equal(prewarmer.pullInBackground("a-0", client(), "r.io/app:v1"), true);
    await waitUntil(() => prewarmer.backgroundPull("a-0") === undefined);
    clock.advance(59_000);
    assert.equal(prewarmer.pullInBackground("a-0", client(), "r.io/app:v1"), false);
    assert.equal(prewarmer.pullInBackground("a-1", client(), "r.io/app:v1"), true);
    clock.advance(1_000);
    assert.equal(prewarmer.pullInBackground("a-0", client(), "r.io/app:v1"), true);
    await waitUntil(() => prewarmer.backgroundPull("a-0") === undefined);
    // It succeeded: the agent's image list shows it once a heartbeat reports it; no second pull meanwhile.
    assert.equal(prewarmer.pullInBackground("a-0", client(), "r.io/app:v1"), false);
  });
});

async function waitUntil(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(condition(), "condition never held");
}
