/**
 * The flow-aware buffer (capacity.dynamicBuffer, roadmap 2.4) on real agent processes, containerd and
 * runc: a pool at zero with one slot per agent and no bufferMin keeps, after two creates, one more
 * agent than its sandboxes need — the creates expected while an agent starts (the rate over the
 * window, here 6 s, times the agents' start time the pool measured) — and gives it back once the
 * window has passed without creates. A pool without dynamicBuffer sizes to its sandboxes alone
 * (pools-size-themselves).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { BASE_IMAGE, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const WINDOW_MS = 6_000;

describe("a pool's buffer follows its create rate (dynamicBuffer)", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "flowbuffer",
      pools: [
        pool("flow", {
          capacity: { poolMin: 0, poolMax: 4, bufferMin: 0, dynamicBuffer: true, scaleDownDelaySeconds: 1, wakeTimeoutSeconds: 30 },
          maxSandboxesPerPod: 1,
        }),
      ],
      heartbeatIntervalMs: 300,
      createRateWindowMs: WINDOW_MS,
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  const status = async () => (await embedded.client.pools.get("flow")).status;
  const agents = () => embedded.client.pools.agents({ pool: "flow" });

  it("keeps no agent and no buffer before any create", async () => {
    await waitFor(async () => (await status())?.desiredAgents === 0, 10_000, "the pool's status");
    assert.equal((await status())?.buffer, 0);
    assert.deepEqual(await agents(), []);
  });

  it("after two creates keeps a free slot beyond its sandboxes: one more agent, idle and ready", async () => {
    for (const name of ["first", "second"]) {
      const sandbox = await embedded.client.sandboxes.create({ name, pool: "flow", image: BASE_IMAGE, command: ["sleep", "3600"] });
      assert.equal(sandbox.status?.phase, "Running");
    }
    await waitFor(
      async () => {
        const now = await status();
        const ready = (await agents()).filter((agent) => agent.ready);
        return (now?.buffer ?? 0) >= 1 && now?.sandboxes === 2 && ready.length === 2 + (now?.buffer ?? 0) && (now?.freeSlots ?? 0) >= 1;
      },
      20_000,
      "a ready agent with a free slot beyond the two sandboxes",
    );
    const idle = (await agents()).filter((agent) => agent.allocated === 0);
    assert.ok(idle.length >= 1, "the buffer's agent holds no sandbox");
  });

  it("gives the buffer back once the window passes without creates; the busy agents stay", async () => {
    await waitFor(
      async () => {
        const now = await status();
        return now?.buffer === 0 && (await agents()).length === 2 && now.sandboxes === 2;
      },
      WINDOW_MS + 20_000,
      "the buffer back to 0 and only the two busy agents",
    );
    assert.ok((await agents()).every((agent) => agent.allocated === 1));
    for (const name of ["first", "second"]) await embedded.client.sandboxes.delete(name, { gracePeriodMs: 0 });
  });
});
