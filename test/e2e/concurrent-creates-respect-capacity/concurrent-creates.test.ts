import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { AlreadyExistsError, NoCapacityError } from "@fast-sandbox/sdk";
import { BASE_IMAGE, containerdLeftovers, pool, startEmbedded, type EmbeddedCase } from "../../support/embedded.js";
import { recordedContainerOfSandbox } from "../../support/containerd-contents.js";
import { portsHeld, slotsHeld } from "../../support/pool-agents.js";

describe("concurrent creates against a pool with room for 3", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "capacity",
      // Shared: declared ports are exclusive on the agent's address (what the port case checks).
      pools: [
        pool("tiny", { maxSandboxesPerPod: 3, capacity: { poolMin: 1, poolMax: 1 }, network: { mode: "Shared" } }),
        pool("neighbour", { maxSandboxesPerPod: 2, network: { mode: "Shared" } }),
      ],
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("lets exactly 3 of 40 succeed, refuses the rest with a clear no-capacity error, and leaks nothing", async () => {
    const { client, containerdNamespace } = embedded;
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

    // Exactly the 3 winners exist everywhere: API, store, the agents' slots, containerd.
    const listed = (await client.sandboxes.list()).map((s) => s.metadata.name).sort();
    assert.deepEqual(listed, created.map((s) => s.metadata.name).sort());
    assert.equal(await slotsHeld(client, "tiny"), 3);
    // A claimed prepared instance is relabelled with the sandbox id just after the create answered.
    await Promise.all(created.map((s) => recordedContainerOfSandbox(containerdNamespace, s.status?.sandboxID ?? "")));
    assert.deepEqual(containerdLeftovers(containerdNamespace).containers.sort(), created.map((s) => s.status?.sandboxID ?? "").sort());

    // Slots come back exactly once: delete one, one more create fits, and then the pool is full again.
    const [first] = created;
    assert.ok(first);
    await client.sandboxes.delete(first.metadata.name);
    await client.sandboxes.delete(first.metadata.name).catch(() => undefined);
    assert.equal(await slotsHeld(client, "tiny"), 2);
    const again = await client.sandboxes.create({ name: "after-delete", pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"] });
    await assert.rejects(client.sandboxes.create({ pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"] }), NoCapacityError);

    for (const sandbox of [...created.slice(1), again]) await client.sandboxes.delete(sandbox.metadata.name);
    assert.equal(await slotsHeld(client, "tiny"), 0);
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
  it("lets one of two concurrent creates of the same name win and keeps the winner's slot and ports", async () => {
    const { client } = embedded;
    const results = await Promise.allSettled(
      [0, 1, 2].map(() => client.sandboxes.create({ name: "same", pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [19500] })),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
    for (const r of results) if (r.status === "rejected") assert.ok(r.reason instanceof AlreadyExistsError, String(r.reason));
    assert.equal(await slotsHeld(client, "tiny"), 1);
    assert.deepEqual(await portsHeld(client, { pool: "tiny" }), [19500]);
    await client.sandboxes.delete("same");
    assert.equal(await slotsHeld(client, "tiny"), 0);
  });

  it("finishes a create before a delete of the same name, leaving nothing behind", async () => {
    const { client, containerdNamespace } = embedded;
    const creating = client.sandboxes.create({ name: "short-lived", pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"] });
    // The delete is sent while the create is in flight; it waits for it instead of missing the container.
    await new Promise((resolve) => setImmediate(resolve));
    const deleting = client.sandboxes.delete("short-lived");
    const [created, deleted] = await Promise.allSettled([creating, deleting]);
    assert.equal(created.status, "fulfilled");
    assert.equal(deleted.status, "fulfilled", deleted.status === "rejected" ? String(deleted.reason) : "");
    assert.deepEqual(await client.sandboxes.list(), []);
    assert.equal(await slotsHeld(client, "tiny"), 0);
    assert.deepEqual(containerdLeftovers(containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });

  it("keeps a declared port exclusive across pools whose agents share the host's network", async () => {
    const { client } = embedded;
    const first = await client.sandboxes.create({ pool: "tiny", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [19600] });
    await assert.rejects(
      client.sandboxes.create({ pool: "neighbour", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [19600] }),
      (error: Error) => {
        assert.ok(error instanceof NoCapacityError);
        assert.match(error.message, /port 19600 is in use on host 127\.0\.0\.1/);
        return true;
      },
    );
    await client.sandboxes.delete(first.metadata.name);
    const moved = await client.sandboxes.create({ pool: "neighbour", image: BASE_IMAGE, command: ["sleep", "3600"], exposedPorts: [19600] });
    await client.sandboxes.delete(moved.metadata.name);
  });
});
