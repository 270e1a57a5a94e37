import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { AlreadyExistsError, FastSandboxClient, NotFoundError, UnauthenticatedError, UnavailableError, ValidationError } from "@fast-sandbox/sdk";
import type { CreateSandboxOptions } from "@fast-sandbox/sdk";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pb, sendBearerToken } from "@fast-sandbox/api";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";
import { slotsHeld } from "../../support/pool-agents.js";

describe("bad input gets a clear error and creates nothing", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    // Besides `default`, two pools that never start an agent (poolMin 0): refused creates must not need one.
    const idle = { maxSandboxesPerPod: 1, capacity: { poolMin: 0, poolMax: 1 } };
    const lockedEgress = { policy: "allowList" as const, allow: [{ cidr: "10.0.0.0/8", ports: [443], protocol: "tcp" as const }] };
    embedded = await startEmbedded({
      name: "bad-input",
      pools: [
        pool("default", { maxSandboxesPerPod: 4 }),
        pool("locked", { ...idle, network: { mode: "Isolated", egress: lockedEgress } }),
        pool("shared", { ...idle, network: { mode: "Shared" } }),
      ],
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  async function assertNothingCreated(): Promise<void> {
    assert.deepEqual(await embedded.client.sandboxes.list({ namespace: "*" }), []);
    assert.equal(await slotsHeld(embedded.client, "default"), 0);
    assert.deepEqual(containerdLeftovers(embedded.containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  }

  const base: CreateSandboxOptions = { pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"] };
  const cases: { what: string; options: CreateSandboxOptions; error: new (...args: never[]) => Error; message: RegExp }[] = [
    { what: "an empty image", options: { ...base, image: "" }, error: ValidationError, message: /spec\.image: must not be empty/ },
    {
      what: "an image that is no image reference",
      options: { ...base, image: "Not A//Valid:Image!!" },
      error: ValidationError,
      message: /spec\.image: "Not A\/\/Valid:Image!!" is not a valid image reference/,
    },
    {
      what: "an expire time that has passed",
      options: { ...base, expireTime: "2001-01-01T00:00:00Z" },
      error: ValidationError,
      message: /spec\.expireTime: 2001-01-01T00:00:00Z has passed; give a time in the future/,
    },
    {
      what: "port 0",
      options: { ...base, exposedPorts: [0] },
      error: ValidationError,
      message: /spec\.exposedPorts\[0\]: 0 is out of range; allowed: 1\.\.65535/,
    },
    {
      what: "port 65536",
      options: { ...base, exposedPorts: [80, 65536] },
      error: ValidationError,
      message: /spec\.exposedPorts\[1\]: 65536 is out of range; allowed: 1\.\.65535/,
    },
    {
      what: "an unknown pool",
      options: { ...base, pool: "nope" },
      error: NotFoundError,
      message: /pool default\/nope does not exist \(pools in default: default, locked, shared\)/,
    },
    {
      what: "an invalid name",
      options: { ...base, name: "Not_Valid" },
      error: ValidationError,
      message: /metadata\.name: invalid name "Not_Valid": use lower-case letters/,
    },
    { what: "an invalid pool name", options: { ...base, pool: "UPPER" }, error: ValidationError, message: /spec\.poolRef: invalid name/ },
    {
      what: "an image whose registry does not answer",
      // Nothing listens on port 2 of loopback: the agent's pull of the missing image finds no registry.
      options: { ...base, image: "127.0.0.1:2/missing:1" },
      error: UnavailableError,
      message: /registry 127\.0\.0\.1:2 is unreachable at http:\/\/127\.0\.0\.1:2 \(ECONNREFUSED\)/,
    },
    {
      what: "an unknown failure policy",
      options: { ...base, failurePolicy: "Sometimes" as never },
      error: ValidationError,
      message: /spec\.failurePolicy: "Sometimes" is not allowed; allowed: Manual, AutoRecreate/,
    },
    {
      what: "an invalid expire time",
      options: { ...base, expireTime: "tomorrow" },
      error: ValidationError,
      message: /spec\.expireTime: "tomorrow" is not a valid date-time/,
    },
    { what: "a relative working directory", options: { ...base, workingDir: "tmp" }, error: ValidationError, message: /spec\.workingDir/ },
    {
      what: "an egress CIDR with bits set after its prefix",
      options: { ...base, egress: { policy: "allowList", allow: [{ cidr: "10.0.0.1/8" }] } },
      error: ValidationError,
      message: /spec\.egress\.allow\[0\]\.cidr: "10\.0\.0\.1\/8" is not a valid CIDR: bits are set after the \/8 prefix; the network is 10\.0\.0\.0\/8/,
    },
    {
      what: "an egress port out of range",
      options: { ...base, egress: { policy: "allowList", allow: [{ cidr: "10.0.0.0/8", ports: [70000] }] } },
      error: ValidationError,
      message: /spec\.egress\.allow\[0\]\.ports\[0\]: 70000 is out of range; allowed: 1\.\.65535/,
    },
    {
      what: "an egress policy wider than the pool's",
      options: { ...base, pool: "locked", egress: { policy: "allowAll" } },
      error: ValidationError,
      message:
        /spec\.egress\.policy: allowAll allows more than the pool does: the egress policy of pool default\/locked is allowList \(10\.0\.0\.0\/8 tcp port 443\); allowed here: denyAll, or an allowList/,
    },
    {
      what: "an allow-list entry outside the pool's",
      options: { ...base, pool: "locked", egress: { policy: "allowList", allow: [{ cidr: "10.1.0.0/16", ports: [443, 80], protocol: "tcp" }] } },
      error: ValidationError,
      message: /spec\.egress\.allow\[0\]: 10\.1\.0\.0\/16 tcp ports 443,80 is not within the pool's allowList/,
    },
    {
      what: "an egress policy in a pool with a Shared network",
      options: { ...base, pool: "shared", egress: { policy: "denyAll" } },
      error: ValidationError,
      message: /spec\.egress: pool default\/shared has a Shared network .*where egress cannot be restricted/,
    },
  ];

  for (const { what, options, error, message } of cases) {
    it(`refuses ${what}`, async () => {
      await assert.rejects(embedded.client.sandboxes.create(options), (thrown: Error) => {
        assert.ok(thrown instanceof error, `expected ${error.name}, got ${thrown.constructor.name}: ${thrown.message}`);
        assert.match(thrown.message, message);
        return true;
      });
      await assertNothingCreated();
    });
  }

  it("refuses pool names that cannot name agents and their containers", async () => {
    await assert.rejects(embedded.client.pools.apply(pool("two--dashes", { maxSandboxesPerPod: 1 })), (thrown: Error) => {
      assert.ok(thrown instanceof ValidationError);
      assert.match(thrown.message, /metadata\.name: "two--dashes" must not contain "--"/);
      return true;
    });
    assert.deepEqual(
      (await embedded.client.pools.list()).map((p) => p.metadata.name),
      ["default", "locked", "shared"],
    );
  });

  it("refuses a pool that restricts egress on a Shared network, saying what to change", async () => {
    const shared = pool("leaky", { maxSandboxesPerPod: 1, capacity: { poolMin: 0, poolMax: 1 }, network: { mode: "Shared", egress: { policy: "denyAll" } } });
    await assert.rejects(embedded.client.pools.apply(shared), (thrown: Error) => {
      assert.ok(thrown instanceof ValidationError);
      assert.match(
        thrown.message,
        /spec\.network\.egress: applies to an Isolated network only, and this pool's is Shared: .*set network\.mode: Isolated, or remove egress/,
      );
      return true;
    });
    assert.equal(
      (await embedded.client.pools.list()).some((p) => p.metadata.name === "leaky"),
      false,
    );
  });

  it("refuses a pool whose agent template's limits are not quantities, naming the field", async () => {
    const bad = pool("badlimits", {
      maxSandboxesPerPod: 1,
      capacity: { poolMin: 0, poolMax: 1 },
      agentTemplate: { spec: { containers: [{ name: "agent", resources: { limits: { cpu: "1.5", memory: "lots" } } }] } },
    });
    await assert.rejects(embedded.client.pools.apply(bad), (thrown: Error) => {
      assert.ok(thrown instanceof ValidationError);
      assert.match(thrown.message, /spec\.agentTemplate\.spec\.containers\[0\]\.resources\.limits\.memory: "lots" is not a Kubernetes quantity/);
      return true;
    });
    assert.equal(
      (await embedded.client.pools.list()).some((p) => p.metadata.name === "badlimits"),
      false,
    );
  });

  it("accepts any valid sandbox name, even one containerd would not take as an id", async () => {
    const sandbox = await embedded.client.sandboxes.create({ ...base, name: "a--b", command: ["sh", "-c", "echo started; sleep 3600"] });
    // The sandbox id is a DNS label of its own, whatever the name: the proxy routes by it.
    const sandboxId = sandbox.status?.sandboxID ?? "";
    assert.match(sandboxId, /^[a-z0-9]{20}$/);
    assert.equal((await embedded.client.sandboxes.exec("a--b", ["echo", "hi"])).stdout, "hi\n");
    let logs = "";
    for await (const chunk of embedded.client.sandboxes.logs("a--b")) logs += new TextDecoder().decode(chunk);
    assert.equal(logs, "started\n");
    assert.equal((await embedded.client.sandboxes.get("a--b")).status?.phase, "Running");
    await embedded.client.sandboxes.delete("a--b");
    await assertNothingCreated();
  });

  it("refuses a name that is already taken and keeps the first sandbox", async () => {
    const first = await embedded.client.sandboxes.create({ ...base, name: "taken" });
    await assert.rejects(embedded.client.sandboxes.create({ ...base, name: "taken" }), AlreadyExistsError);
    const still = await embedded.client.sandboxes.get("taken");
    assert.equal(still.status?.sandboxID, first.status?.sandboxID);
    await embedded.client.sandboxes.delete("taken");
    await assertNothingCreated();
  });

  it("refuses requests without a token or with a wrong one", async () => {
    const url = embedded.controlPlane.url;
    const wrong = new FastSandboxClient({ url, token: "x".repeat(32) });
    await assert.rejects(wrong.sandboxes.create(base), (thrown: Error) => {
      assert.ok(thrown instanceof UnauthenticatedError);
      assert.match(thrown.message, /invalid bearer token/);
      return true;
    });
    wrong.close();
    // Without any token, over plain HTTP/1.1 JSON as curl would send it.
    const response = await fetch(`${url}/fastsandbox.v1alpha1.SandboxService/ListSandboxes`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(response.status, 401);
    assert.match(await response.text(), /missing bearer token/);
    await assertNothingCreated();
  });

  it("authenticates the agents' API too: the control plane's token is not the agent's", async () => {
    const [agent] = await embedded.client.pools.agents({ pool: "default" });
    assert.ok(agent);
    for (const authorization of [undefined, `Bearer ${embedded.token}`]) {
      const response = await fetch(`http://${agent.endpoint}/fastsandbox.v1alpha1.AgentService/CreateSandbox`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(authorization ? { authorization } : {}) },
        body: JSON.stringify({ sandboxId: "sneaky", namespace: "default", name: "sneaky", image: BASE_IMAGE }),
      });
      assert.equal(response.status, 401);
    }
    await assertNothingCreated();
  });

  it("serves real gRPC on the same port, authenticated the same way", async () => {
    const call = (token: string) => {
      const transport = createGrpcTransport({ baseUrl: embedded.controlPlane.url, interceptors: [sendBearerToken(token)] });
      return createClient(pb.SandboxService, transport).listSandboxes({ namespace: "*" });
    };
    assert.deepEqual((await call(embedded.token)).sandboxes, []);
    await assert.rejects(call("y".repeat(32)), (thrown: Error) => {
      assert.ok(thrown instanceof ConnectError);
      assert.equal(thrown.code, Code.Unauthenticated);
      return true;
    });
  });

  it("serves the JSON API over HTTP/1.1 for a client with the token (curl-able)", async () => {
    const response = await fetch(`${embedded.controlPlane.url}/fastsandbox.v1alpha1.SandboxService/CreateSandbox`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${embedded.token}` },
      body: JSON.stringify({ name: "via-json", spec: { image: BASE_IMAGE, poolRef: "default", command: ["sleep", "3600"], exposedPorts: [0] } }),
    });
    assert.equal(response.status, 400);
    const body = (await response.json()) as { code: string; message: string };
    assert.equal(body.code, "invalid_argument");
    assert.match(body.message, /spec\.exposedPorts\[0\]/);
    await assertNothingCreated();
  });
});
