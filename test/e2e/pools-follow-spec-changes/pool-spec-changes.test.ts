/**
 * A pool's agents follow a change of what they take only when they start (embedded mode, real
 * agent processes, containerd and runc): a pool of two one-slot agents without prepared instances,
 * one agent holding a sandbox, is applied again with one prepared instance per agent. The idle
 * agent is replaced by a new process that keeps a prepared instance; the busy one runs on, the
 * same process, its sandbox answering, until the sandbox is deleted — then it is replaced too.
 * `status.updatedAgents` counts the agents of the current spec all along.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { AgentSummary } from "@fast-sandbox/sdk";
import { BASE_IMAGE, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";
import { agentContainers, containerIds, CONTAINER_LABELS, PREPARED_INSTANCE_ROLE } from "../../support/containerd-contents.js";

const spec = (preparedInstances: number) =>
  pool("follows", { capacity: { poolMin: 2, poolMax: 2, bufferMin: 0, wakeTimeoutSeconds: 30 }, maxSandboxesPerPod: 1, preparedInstances });

describe("a pool's agents follow a change of its spec", () => {
  let embedded: EmbeddedCase;
  let before2: AgentSummary[] = [];
  let busy: AgentSummary | undefined;

  before(async () => {
    embedded = await startEmbedded({ name: "follows", pools: [spec(0)], heartbeatIntervalMs: 300 });
  });

  after(async () => {
    await embedded?.stop();
  });

  const agents = async () => (await embedded.client.pools.agents({ pool: "follows" })).sort((a, b) => a.name.localeCompare(b.name));
  const status = async () => (await embedded.client.pools.get("follows")).status;
  const preparedOf = (agent: string) =>
    containerIds(embedded.containerdNamespace, { [CONTAINER_LABELS.agent]: agent, [CONTAINER_LABELS.role]: PREPARED_INSTANCE_ROLE });
  /** Agents are told apart by name and process: a replacement may take a freed name. */
  const key = (agent: AgentSummary) => `${agent.name}/${agent.pid ?? 0}`;

  it("runs two agents without prepared instances, one holding a sandbox", async () => {
    await waitFor(async () => (await agents()).filter((a) => a.ready).length === 2 && (await status())?.updatedAgents === 2, 30_000, "two ready agents");
    before2 = await agents();
    for (const agent of before2) assert.deepEqual(preparedOf(agent.name), [], `${agent.name} keeps no prepared instance`);
    const sandbox = await embedded.client.sandboxes.create({ name: "busy", pool: "follows", image: BASE_IMAGE, command: ["sleep", "3600"] });
    assert.equal(sandbox.status?.phase, "Running");
    busy = before2.find((agent) => agent.name === sandbox.status?.assignedPod);
    assert.ok(busy, `the sandbox runs on one of ${before2.map((a) => a.name).join(", ")}`);
  });

  it("replaces the idle agent by one that keeps a prepared instance; the busy agent serves on, the same process", async () => {
    assert.ok(busy);
    const idle = before2.find((agent) => agent !== busy);
    assert.ok(idle);
    await embedded.client.pools.apply(spec(1));
    await waitFor(
      async () => {
        const now = await agents();
        const fresh = now.filter((agent) => !before2.some((old) => key(old) === key(agent)));
        return now.length === 2 && fresh.length === 1 && fresh[0]!.ready && now.some((a) => key(a) === key(busy!)) && (await status())?.updatedAgents === 1;
      },
      60_000,
      `${idle.name} replaced, ${busy.name} kept`,
    );
    const fresh = (await agents()).find((agent) => !before2.some((old) => key(old) === key(agent)));
    assert.ok(fresh);
    await waitFor(async () => preparedOf(fresh.name).length === 1, 30_000, `${fresh.name} to keep one prepared instance`);
    assert.deepEqual(preparedOf(busy.name), [], "the busy agent runs as it was started");
    const result = await embedded.client.sandboxes.exec("busy", ["sh", "-c", "echo alive"]);
    assert.deepEqual({ exitCode: result.exitCode, stdout: result.stdout.trim() }, { exitCode: 0, stdout: "alive" });
    // The idle agent removes its shim anchors while it stops, after it has left the pool's agents.
    if (fresh.name !== idle.name)
      await waitFor(() => agentContainers(embedded.containerdNamespace, idle.name).length === 0, 30_000, `${idle.name}'s containers to be gone`);
  });

  it("replaces the busy agent once its sandbox is deleted", async () => {
    assert.ok(busy);
    await embedded.client.sandboxes.delete("busy");
    await waitFor(
      async () => {
        const now = await agents();
        return now.length === 2 && now.every((a) => a.ready && !before2.some((old) => key(old) === key(a))) && (await status())?.updatedAgents === 2;
      },
      60_000,
      "two agents of the new spec",
    );
    for (const agent of await agents()) await waitFor(async () => preparedOf(agent.name).length === 1, 30_000, `${agent.name} to keep one prepared instance`);
  });
});
