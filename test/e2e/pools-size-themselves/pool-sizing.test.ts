/**
 * Pools that size themselves, on real agent processes, containerd and runc: a pool at zero wakes on
 * its first create (which waits, with the wait shown in the sandbox's conditions), grows with demand
 * up to poolMax, refuses at once with "no capacity" when full at poolMax, releases only idle agents
 * after scaleDownDelaySeconds (busy ones are spared), and goes back to zero when idle.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { NoCapacityError } from "@fast-sandbox/sdk";
import type { Sandbox } from "@fast-sandbox/api";
import { BASE_IMAGE, ctr, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

describe("a pool sizes itself between poolMin and poolMax", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "sizing",
      pools: [
        pool("elastic", {
          capacity: { poolMin: 0, poolMax: 2, bufferMin: 0, scaleDownDelaySeconds: 2, wakeTimeoutSeconds: 30 },
          maxSandboxesPerPod: 1,
        }),
      ],
      heartbeatIntervalMs: 300,
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  const sleeper = { pool: "elastic", image: BASE_IMAGE, command: ["sleep", "3600"] };
  const agents = () => embedded.client.pools.agents({ pool: "elastic" });

  it("starts with no agent at poolMin 0", async () => {
    await waitFor(async () => (await embedded.client.pools.get("elastic")).status?.desiredAgents === 0, 10_000, "the pool's status");
    assert.deepEqual(await agents(), []);
  });

  it("wakes on the first create, which waits for the agent with the wait shown in its conditions", async () => {
    const seen: Sandbox[] = [];
    const creating = embedded.client.sandboxes.create({ ...sleeper, name: "first" });
    // While it waits, the record is Pending with a condition that says why.
    const watching = (async () => {
      for (let i = 0; i < 400; i++) {
        const listed = (await embedded.client.sandboxes.list()).find((s) => s.metadata.name === "first");
        if (listed) seen.push(listed);
        if (listed?.status?.phase === "Running") return;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const first = await creating;
    await watching;
    assert.equal(first.status?.phase, "Running");
    const waiting = seen.find((s) => s.status?.phase === "Pending");
    assert.ok(waiting, `the create was seen Pending while the pool woke (phases seen: ${seen.map((s) => s.status?.phase).join(",")})`);
    const scheduled = waiting.status?.conditions?.find((c) => c.type === "Scheduled");
    assert.equal(scheduled?.status, "False");
    assert.equal(scheduled?.reason, "WaitingForCapacity");
    assert.match(scheduled?.message ?? "", /waiting up to 30s/);
    const placed = (await embedded.client.sandboxes.get("first")).status?.conditions?.find((c) => c.type === "Scheduled");
    assert.equal(placed?.status, "True");
    assert.equal((await agents()).length, 1);
  });

  it("grows with demand up to poolMax, then refuses at once with a clear no-capacity error and stores nothing", async () => {
    const second = await embedded.client.sandboxes.create({ ...sleeper, name: "second" });
    assert.equal(second.status?.phase, "Running");
    assert.equal((await agents()).length, 2);
    const error = await embedded.client.sandboxes.create({ ...sleeper, name: "third" }).then(
      () => assert.fail("a third create must fail"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof NoCapacityError, `NoCapacityError, got ${String(error)}`);
    assert.match(error.message, /no capacity: all 2 slots of pool default\/elastic are in use/);
    assert.match(error.message, /poolMax of 2/);
    assert.deepEqual((await embedded.client.sandboxes.list()).map((s) => s.metadata.name).sort(), ["first", "second"]);
    await waitFor(async () => (await embedded.client.pools.get("elastic")).status?.desiredAgents === 2, 10_000, "pool status wants 2 agents");
  });

  it("after scaleDownDelaySeconds releases the idle agent and spares the busy one", async () => {
    const first = await embedded.client.sandboxes.get("first");
    const second = await embedded.client.sandboxes.get("second");
    await embedded.client.sandboxes.delete("first");
    await waitFor(async () => (await agents()).length === 1, 20_000, "the idle agent released");
    const [left] = await agents();
    assert.equal(left?.name, second.status?.assignedPod, "the busy agent stays");
    assert.notEqual(left?.name, first.status?.assignedPod);
    // The released agent left no shim anchors (and so no shims) behind.
    await waitFor(
      () => !ctr(embedded.containerdNamespace, "containers", "ls", "-q").includes(`fsb-anchor.${first.status?.assignedPod ?? "?"}.`),
      10_000,
      "the released agent's shim anchors removed",
    );
    assert.match(
      ctr(embedded.containerdNamespace, "containers", "ls", "-q"),
      new RegExp(`fsb-anchor\\.${left?.name ?? "?"}\\.`),
      "the busy agent keeps its anchors",
    );
    assert.equal((await embedded.client.sandboxes.exec("second", ["sh", "-c", "echo still here"])).stdout, "still here\n");
  });

  it("goes back to zero agents once idle for the delay, and wakes again on the next create", async () => {
    await embedded.client.sandboxes.delete("second");
    await waitFor(async () => (await agents()).length === 0, 20_000, "scale to zero");
    await waitFor(() => ctr(embedded.containerdNamespace, "containers", "ls", "-q").trim() === "", 10_000, "no container at all: no sandbox, no anchor");
    await waitFor(async () => (await embedded.client.pools.get("elastic")).status?.desiredAgents === 0, 10_000, "pool status wants zero agents");
    const again = await embedded.client.sandboxes.create({ ...sleeper, name: "again" });
    assert.equal(again.status?.phase, "Running");
    assert.equal((await embedded.client.sandboxes.exec("again", ["true"])).exitCode, 0);
    await embedded.client.sandboxes.delete("again");
  });
});
