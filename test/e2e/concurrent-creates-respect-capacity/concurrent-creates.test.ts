import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { NoCapacityError } from "@fast-sandbox/sdk";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";

describe("concurrent creates against a pool with room for 3", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({ name: "capacity", pools: [pool("tiny", { maxSandboxesPerPod: 3, capacity: { poolMin: 1, poolMax: 1 } })] });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("lets exactly 3 of 40 succeed, refuses the rest with a clear no-capacity error, and leaks nothing", async () => {
    const { client, containerdNamespace, controlPlane } = embedded;
    const results = await Promise.allSettled(
      Array.from({ length: 40 }, (_, i) => client.sandboxes.create({ name: `c-${i}`, pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"] })),
    );
    const created = results.filter((r) => r.status === "fulfilled").map((r) => r.value);
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason as Error);
    assert.equal(created.length, 3);
    assert.equal(refused.length, 37);
    for (const error of refused) {
      assert.ok(error instanceof NoCapacityError, `expected NoCapacityError, got ${String(error)}`);
      assert.match(error.message, /no capacity: all 3 slots of pool default\/tiny are in use/);
    }

    // Exactly the 3 winners exist everywhere: API, store, registry, containerd.
    const listed = (await client.sandboxes.list()).map((s) => s.metadata.name).sort();
    assert.deepEqual(listed, created.map((s) => s.metadata.name).sort());
    assert.equal(controlPlane.registry.poolUsage("default", "tiny").allocated, 3);
    assert.deepEqual(containerdLeftovers(containerdNamespace).containers.sort(), created.map((s) => s.status?.sandboxID ?? "").sort());

    // Slots come back exactly once: delete one, one more create fits, and then the pool is full again.
    const [first] = created;
    assert.ok(first);
    await client.sandboxes.delete(first.metadata.name);
    await client.sandboxes.delete(first.metadata.name).catch(() => undefined);
    assert.equal(controlPlane.registry.poolUsage("default", "tiny").allocated, 2);
    const again = await client.sandboxes.create({ name: "after-delete", pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"] });
    await assert.rejects(client.sandboxes.create({ pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"] }), NoCapacityError);

    for (const sandbox of [...created.slice(1), again]) await client.sandboxes.delete(sandbox.metadata.name);
    assert.equal(controlPlane.registry.poolUsage("default", "tiny").allocated, 0);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });

  it("keeps declared ports exclusive on an agent", async () => {
    const { client } = embedded;
    const first = await client.sandboxes.create({ pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [19090] });
    await assert.rejects(client.sandboxes.create({ pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [19090] }), (error: Error) => {
      assert.ok(error instanceof NoCapacityError);
      assert.match(error.message, /port 19090/);
      return true;
    });
    const other = await client.sandboxes.create({ pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [19091] });
    await client.sandboxes.delete(first.metadata.name);
    const reuse = await client.sandboxes.create({ pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [19090] });
    await client.sandboxes.delete(other.metadata.name);
    await client.sandboxes.delete(reuse.metadata.name);
  });
});
