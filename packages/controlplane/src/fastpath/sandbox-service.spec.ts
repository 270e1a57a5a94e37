import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { pb } from "@fast-sandbox/api";
import { createPoolService } from "./pool-service.js";
import { SandboxManagerFixture, poolOf, sandboxSpec, type FakeAgentClient } from "./sandbox-manager.fixture.js";
import { createSandboxService } from "./sandbox-service.js";

const bytes = (text: string) => new TextEncoder().encode(text);

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

describe("the fast-path API translates the agents' streams into its wire messages", () => {
  let fixture: SandboxManagerFixture;
  let agent: FakeAgentClient;
  let sandboxes: Client<typeof pb.SandboxService>;
  let pools: Client<typeof pb.PoolService>;

  beforeEach(() => {
    fixture = new SandboxManagerFixture();
    agent = fixture.addAgent("default-0");
    const { store, registry, manager, agents } = fixture;
    const transport = createRouterTransport((router) => {
      router.service(pb.SandboxService, createSandboxService(manager));
      router.service(pb.PoolService, createPoolService({ store, registry, manager, agents }));
    });
    sandboxes = createClient(pb.SandboxService, transport);
    pools = createClient(pb.PoolService, transport);
  });

  afterEach(() => fixture.close());

  it("Exec: each output chunk and the exit code as ExecResponse events, in order", async () => {
    await fixture.manager.create({ name: "web", spec: sandboxSpec() });
    agent.execEvents = [
      { type: "stdout", data: bytes("out") },
      { type: "stderr", data: bytes("err") },
      { type: "exit", exitCode: 7 },
    ];
    const responses = await collect(sandboxes.exec({ namespace: "default", name: "web", command: ["sh", "-c", "work"], workingDir: "/srv" }));
    assert.deepEqual(
      responses.map((response) => response.event),
      [
        { case: "stdout", value: bytes("out") },
        { case: "stderr", value: bytes("err") },
        { case: "exitCode", value: 7 },
      ],
    );
    assert.equal(agent.execRequests[0]?.workingDir, "/srv");
  });

  it("GetSandboxProxy: the proxy's public base URL, where clients reach the sandboxes' daemons", async () => {
    // The fixture's manager has the default address (DEFAULT_PROXY_BASE_URL).
    assert.deepEqual((await sandboxes.getSandboxProxy({})).url, "http://localhost:7072");
  });

  it("PullImage: the progress of each of the pool's agents, naming it, with its byte counts", async () => {
    await fixture.store.create("SandboxPool", poolOf("default"));
    agent.pullProgress = [
      {
        image: "docker.io/library/busybox:latest",
        phase: "downloading",
        layersTotal: 1,
        layersDone: 0,
        bytesTotal: 3_000_000_000,
        bytesDone: 1024,
        digest: "",
      },
      {
        image: "docker.io/library/busybox:latest",
        phase: "done",
        layersTotal: 1,
        layersDone: 1,
        bytesTotal: 3_000_000_000,
        bytesDone: 3_000_000_000,
        digest: "sha256:abc",
      },
    ];
    const progress = await collect(pools.pullImage({ namespace: "default", pool: "default", image: "busybox" }));
    assert.deepEqual(agent.pulls, ["busybox"]);
    assert.deepEqual(
      progress.map((p) => [p.agent, p.phase, p.layersDone, p.bytesDone, p.bytesTotal, p.digest]),
      [
        ["default-0", "downloading", 0, 1024n, 3_000_000_000n, ""],
        ["default-0", "done", 1, 3_000_000_000n, 3_000_000_000n, "sha256:abc"],
      ],
    );
  });
});
