import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { API_VERSION, UnavailableError, ValidationError, fromConnectError, pb, sandboxSpecToMessage } from "@fast-sandbox/api";
import { createPoolService } from "./pool-service.js";
import { DELETE_RETRY_MS } from "./sandbox-manager.js";
import { SandboxManagerFixture, poolOf, sandboxSpec, type FakeAgentClient } from "./sandbox-manager.fixture.js";
import { MAX_LIST_PAGE_SIZE, createSandboxService } from "./sandbox-service.js";

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

  it("GetSandboxStatsHistory: the agent's samples within the range, and InvalidArgument for a range that ends before it starts", async () => {
    await fixture.manager.create({ name: "web", spec: sandboxSpec() });
    agent.statsHistoryAnswer = [1000, 2000, 3000].map((timestampMs) => ({ ...agent.statsAnswer, timestampMs, cpuUsedMillis: timestampMs / 10 }));
    const all = await sandboxes.getSandboxStatsHistory({ namespace: "default", name: "web" });
    assert.deepEqual(
      all.samples.map((sample) => [sample.timestampMs, sample.cpuUsedMillis]),
      [
        [1000n, 100n],
        [2000n, 200n],
        [3000n, 300n],
      ],
    );
    const ranged = await sandboxes.getSandboxStatsHistory({ namespace: "default", name: "web", sinceMs: 1500n, untilMs: 3000n });
    assert.deepEqual(
      ranged.samples.map((sample) => sample.timestampMs),
      [2000n, 3000n],
    );
    await assert.rejects(
      sandboxes.getSandboxStatsHistory({ namespace: "default", name: "web", sinceMs: 3000n, untilMs: 1000n }),
      /untilMs: must not be before sinceMs \(3000\)/,
    );
    await assert.rejects(sandboxes.getSandboxStatsHistory({ namespace: "default", name: "nosuch" }), /not found/);
  });

  it("DeleteSandbox waits while the sandbox's agent does not answer, and answers once the agent removed it (fsb rm does not fail for a delete that finishes later)", async () => {
    await fixture.manager.create({ name: "web", spec: sandboxSpec() });
    const remove = agent.deleteSandbox.bind(agent);
    let refused = 0;
    agent.deleteSandbox = () => {
      refused += 1;
      return Promise.reject(new UnavailableError("connect ECONNREFUSED"));
    };
    let done = false;
    const deleting = sandboxes.deleteSandbox({ namespace: "default", name: "web", gracePeriodMs: 0 }).then(() => (done = true));
    for (let tick = 0; tick < 20 && refused < 3; tick++) await fixture.clock.advanceAsync(DELETE_RETRY_MS);
    assert.ok(refused >= 3, `the cleanup was tried again (${refused} tries)`);
    assert.equal(done, false, "no answer while the agent refuses");
    agent.deleteSandbox = remove;
    for (let tick = 0; tick < 20 && !done; tick++) await fixture.clock.advanceAsync(DELETE_RETRY_MS);
    await deleting;
    assert.equal(await fixture.stored("web"), undefined);
  });

  it("refuses bad input with InvalidArgument naming the field, acting on nothing", async () => {
    const invalid = (field: string, message: RegExp) => (error: unknown) => {
      const translated = fromConnectError(error);
      return translated instanceof ValidationError && translated.field === field && message.test(translated.message);
    };
    // A create whose expiry has passed: it would run only to be deleted.
    const past = sandboxSpecToMessage({ ...sandboxSpec(), expireTime: "2001-01-01T00:00:00Z" });
    await assert.rejects(
      sandboxes.createSandbox({ namespace: "default", name: "late", spec: past }),
      invalid("spec.expireTime", /has passed; give a time in the future/),
    );
    assert.deepEqual(agent.calls, []);
    assert.equal(await fixture.stored("late"), undefined);
    await fixture.manager.create({ name: "web", spec: sandboxSpec() });
    // A grace period out of range (a negative one, or past 32-bit timers, would fail the agent call at once).
    for (const gracePeriodMs of [-60_000, 2_147_483_000]) {
      await assert.rejects(sandboxes.deleteSandbox({ namespace: "default", name: "web", gracePeriodMs }), invalid("grace_period_ms", /out of range: from 0/));
    }
    assert.equal((await fixture.stored("web"))?.metadata.deletionTimestamp, undefined);
    // An exec's user that names no account.
    await assert.rejects(collect(sandboxes.exec({ namespace: "default", name: "web", command: ["id"], user: "a:b:c" })), invalid("user", /is not a user/));
    // An apply without a pool.
    await assert.rejects(pools.applySandboxPool({}), invalid("pool", /is required/));
    // A tail of a negative number of lines.
    await assert.rejects(
      collect(sandboxes.logs({ namespace: "default", name: "web", tailLines: -1 })),
      invalid("tail_lines", /^tail_lines: must be a whole number of lines ≥ 0 \(at most 2147483647\), got -1$/),
    );
    assert.deepEqual(agent.logsRequests, [], "the agent was not asked");
  });

  it("Logs: relays follow and tail_lines to the agent, leaving tail_lines out when the request does (all of the log)", async () => {
    await fixture.manager.create({ name: "web", spec: sandboxSpec() });
    agent.logChunks = [bytes("last line\n")];
    const sandboxId = (await fixture.stored("web"))?.status?.sandboxID ?? "";
    const tailed = await collect(sandboxes.logs({ namespace: "default", name: "web", tailLines: 3 }));
    assert.deepEqual(
      tailed.map((response) => response.data),
      [bytes("last line\n")],
    );
    await collect(sandboxes.logs({ namespace: "default", name: "web", follow: true, tailLines: 0 }));
    await collect(sandboxes.logs({ namespace: "default", name: "web" }));
    assert.deepEqual(agent.logsRequests, [
      { sandboxId, options: { follow: false, tailLines: 3 } },
      { sandboxId, options: { follow: true, tailLines: 0 } },
      { sandboxId, options: { follow: false } },
    ]);
  });

  it("UpdateSandbox: replace_labels replaces the labels, an empty map removing them; without it an empty map keeps them (older clients)", async () => {
    await fixture.manager.create({ name: "web", labels: { team: "a", tier: "x" }, spec: sandboxSpec() });
    const spec = sandboxSpecToMessage(sandboxSpec());
    await sandboxes.updateSandbox({ namespace: "default", name: "web", spec, labels: {} });
    assert.deepEqual((await fixture.stored("web"))?.metadata.labels, { team: "a", tier: "x" });
    await sandboxes.updateSandbox({ namespace: "default", name: "web", spec, labels: { team: "b" }, replaceLabels: true });
    assert.deepEqual((await fixture.stored("web"))?.metadata.labels, { team: "b" });
    await sandboxes.updateSandbox({ namespace: "default", name: "web", spec, labels: {}, replaceLabels: true });
    assert.deepEqual((await fixture.stored("web"))?.metadata.labels ?? {}, {});
  });

  it("UpdateSandbox: refuses a request without a spec, saying to send the current one, and changes nothing", async () => {
    await fixture.manager.create({ name: "web", labels: { team: "a" }, spec: sandboxSpec() });
    const before = await fixture.stored("web");
    await assert.rejects(sandboxes.updateSandbox({ namespace: "default", name: "web", labels: { team: "b" }, replaceLabels: true }), (error: unknown) => {
      const translated = fromConnectError(error);
      return (
        translated instanceof ValidationError &&
        translated.field === "spec" &&
        /is required \(send the current spec, changing only expireTime/.test(translated.message)
      );
    });
    assert.deepEqual(await fixture.stored("web"), before);
  });

  it("ListAgents: also the fleet's agents the registry does not know yet (starting, or failing to start), not ready and without slots", async () => {
    const { store, registry, manager } = fixture;
    const agents = {
      ...fixture.agents,
      fleetAgents: () => [
        { name: "default-0", namespace: "default", pool: "default", ready: true, endpoint: "127.0.0.1:1" },
        { name: "default-1", namespace: "default", pool: "default", ready: false, pid: 42 },
        { name: "other-0", namespace: "team", pool: "other", ready: false },
      ],
    };
    const withFleet = createClient(
      pb.PoolService,
      createRouterTransport((router) => router.service(pb.PoolService, createPoolService({ store, registry, manager, agents }))),
    );
    const all = await withFleet.listAgents({ namespace: "*" });
    assert.deepEqual(
      all.agents.map((a) => [a.name, a.ready, a.capacity]),
      [
        ["default-0", true, registry.getAgent("default-0")?.capacity],
        ["default-1", false, 0],
        ["other-0", false, 0],
      ],
    );
    assert.deepEqual(
      (await withFleet.listAgents({ namespace: "team" })).agents.map((a) => a.name),
      ["other-0"],
    );
    assert.deepEqual(
      (await withFleet.listAgents({ namespace: "*", pool: "default" })).agents.map((a) => a.name),
      ["default-0", "default-1"],
    );
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

describe("ListSandboxes in pages", () => {
  let fixture: SandboxManagerFixture;
  let sandboxes: Client<typeof pb.SandboxService>;

  beforeEach(async () => {
    fixture = new SandboxManagerFixture();
    sandboxes = createClient(
      pb.SandboxService,
      createRouterTransport((router) => router.service(pb.SandboxService, createSandboxService(fixture.manager))),
    );
    // 7 sandboxes: s0…s6, the even ones in pool "even", in the default namespace; one elsewhere.
    for (let i = 0; i < 7; i++) {
      await fixture.store.create("Sandbox", {
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: { name: `s${i}`, namespace: "default" },
        spec: { image: "img", poolRef: i % 2 === 0 ? "even" : "odd" },
      });
    }
    await fixture.store.create("Sandbox", {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name: "s9", namespace: "team" },
      spec: { image: "img", poolRef: "even" },
    });
  });

  afterEach(() => fixture.close());

  /** The names of each page of a list that follows the tokens, as a client does. */
  async function pages(request: { namespace?: string; pool?: string; pageSize: number }): Promise<string[][]> {
    const result: string[][] = [];
    let pageToken = "";
    do {
      const response = await sandboxes.listSandboxes({ namespace: request.namespace ?? "", pool: request.pool ?? "", pageSize: request.pageSize, pageToken });
      result.push(response.sandboxes.map((s) => s.metadata?.name ?? "?"));
      pageToken = response.nextPageToken;
    } while (pageToken);
    return result;
  }

  it("answers at most page_size sandboxes with the token of the next page, until the last page", async () => {
    assert.deepEqual(await pages({ pageSize: 3 }), [["s0", "s1", "s2"], ["s3", "s4", "s5"], ["s6"]]);
    assert.deepEqual(await pages({ namespace: "*", pageSize: 4 }), [
      ["s0", "s1", "s2", "s3"],
      ["s4", "s5", "s6", "s9"],
    ]);
  });

  it("fills a page of one pool's sandboxes from as many records as it takes", async () => {
    assert.deepEqual(await pages({ pool: "even", pageSize: 2 }), [
      ["s0", "s2"],
      ["s4", "s6"],
    ]);
    assert.deepEqual(await pages({ pool: "odd", pageSize: 5 }), [["s1", "s3", "s5"]]);
  });

  it("answers every sandbox at once to a client from before pages (no page_size, no token)", async () => {
    const response = await sandboxes.listSandboxes({ namespace: "", pool: "" });
    assert.equal(response.sandboxes.length, 7);
    assert.equal(response.nextPageToken, "");
  });

  it("refuses a negative page_size and a page_token it did not make, naming the field", async () => {
    await assert.rejects(sandboxes.listSandboxes({ pageSize: -1 }), /page_size: -1 is negative/);
    await assert.rejects(sandboxes.listSandboxes({ pageSize: 2, pageToken: "forged" }), /page_token: is not a token of this list/);
  });

  it("caps a page at MAX_LIST_PAGE_SIZE", async () => {
    for (let i = 0; i < MAX_LIST_PAGE_SIZE; i++) {
      await fixture.store.create("Sandbox", {
        apiVersion: API_VERSION,
        kind: "Sandbox",
        metadata: { name: `x${i}`, namespace: "default" },
        spec: { image: "img", poolRef: "odd" },
      });
    }
    const first = await sandboxes.listSandboxes({ pageSize: MAX_LIST_PAGE_SIZE * 10 });
    assert.equal(first.sandboxes.length, MAX_LIST_PAGE_SIZE);
    assert.notEqual(first.nextPageToken, "");
    const second = await sandboxes.listSandboxes({ pageSize: 0, pageToken: first.nextPageToken });
    assert.equal(second.sandboxes.length, 7);
    assert.equal(second.nextPageToken, "");
  });
});
