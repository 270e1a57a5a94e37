/**
 * Self-healing on real agents, containerd and runc: a `kill -9` of a sandbox's agent is reported in
 * the sandbox's conditions within seconds; after recoveryTimeoutSeconds, AutoRecreate runs a new
 * instance on a healthy agent and Manual leaves the sandbox Lost (slot released); an agent back
 * inside the timeout changes nothing; a container removed behind its live agent's back, or its
 * process 1 killed (while the agent answers, or while it was away, as a host restart does), makes the
 * sandbox Lost (AutoRecreate replaces it); a changed resetRevision replaces the instance.
 * Everything is asserted through the public API and containerd's own state.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Sandbox } from "@fast-sandbox/api";
import { containerIds, containerKind, sandboxesInContainerd } from "../../support/containerd-contents.js";
import { ctr } from "../../support/containerd.js";
import { BASE_IMAGE, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

/** A killed agent stays away this long before its supervisor restarts it. */
const AGENT_RESTART_DELAY_MS = 6000;

describe("an agent's loss is handled by the sandbox's failure policy", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({
      name: "failpolicy",
      pools: [pool("heal", { capacity: { poolMin: 2, poolMax: 2 }, maxSandboxesPerPod: 4 })],
      heartbeatIntervalMs: 300,
      agentRestartDelayMs: AGENT_RESTART_DELAY_MS,
    });
  });

  after(async () => {
    await embedded?.stop();
  });

  const sleeper = { pool: "heal", image: BASE_IMAGE, command: ["sleep", "3600"] };
  const condition = (sandbox: Sandbox, type: string) => sandbox.status?.conditions?.find((c) => c.type === type);
  const get = (name: string) => embedded.client.sandboxes.get(name);

  async function agentOf(sandbox: Sandbox) {
    const agents = await embedded.client.pools.agents({ pool: "heal" });
    const agent = agents.find((a) => a.name === sandbox.status?.assignedPod);
    assert.ok(agent?.pid && agent.pid > 0, `agent of ${sandbox.metadata.name} has a pid`);
    return agent;
  }

  /** kill -9 of the agent process that runs the sandbox; its supervisor restarts it after AGENT_RESTART_DELAY_MS. */
  async function killAgentOf(sandbox: Sandbox): Promise<string> {
    const agent = await agentOf(sandbox);
    process.kill(agent.pid ?? 0, "SIGKILL");
    return agent.name;
  }

  async function waitForAgentsReady(): Promise<void> {
    await waitFor(async () => (await embedded.client.pools.agents({ pool: "heal" })).filter((a) => a.ready).length === 2, 30_000, "both agents ready");
  }

  it("AutoRecreate: the sandbox gets a condition at once, then a new instance on the healthy agent", async () => {
    const original = await embedded.client.sandboxes.create({ ...sleeper, name: "auto", failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 2 });
    const oldId = original.status?.sandboxID ?? "";
    const lostAgent = await killAgentOf(original);

    await waitFor(async () => condition(await get("auto"), "AgentConnected")?.status === "False", 10_000, "the AgentConnected=False condition");
    await waitFor(async () => (await get("auto")).status?.recreations === 1, 30_000, "the recreation");
    const recreated = await get("auto");
    assert.equal(recreated.status?.phase, "Running");
    assert.notEqual(recreated.status?.sandboxID, oldId, "a new instance has a new sandbox id");
    assert.notEqual(recreated.status?.assignedPod, lostAgent, "it runs on the healthy agent");
    assert.equal(condition(recreated, "Recreated")?.status, "True");
    assert.equal(condition(recreated, "Recreated")?.reason, "AgentLost");
    assert.match(condition(recreated, "Recreated")?.message ?? "", /recreated 1 time/);
    assert.deepEqual(recreated.spec, original.spec, "same spec");
    const result = await embedded.client.sandboxes.exec("auto", ["sh", "-c", "echo new"]);
    assert.equal(result.stdout, "new\n");

    // The lost agent comes back: the old instance, owned by no record any more, is removed.
    await waitForAgentsReady();
    await waitFor(() => !sandboxesInContainerd(embedded.containerdNamespace).includes(oldId), 15_000, "the old instance removed");
    assert.equal((await get("auto")).status?.sandboxID, recreated.status?.sandboxID, "the new instance stays");
  });

  it("Manual: the sandbox becomes Lost with its slot released, stays deletable, and runs again when its agent returns", async () => {
    const kept = await embedded.client.sandboxes.create({ ...sleeper, name: "manual", recoveryTimeoutSeconds: 2 });
    const agentName = await killAgentOf(kept);
    await waitFor(async () => (await get("manual")).status?.phase === "Lost", 15_000, "phase Lost");
    const lost = await get("manual");
    assert.equal(condition(lost, "Ready")?.reason, "AgentLost");
    assert.match(condition(lost, "Ready")?.message ?? "", /failurePolicy Manual/);
    assert.equal(lost.status?.sandboxID, kept.status?.sandboxID, "Manual keeps the instance's identity");
    const agent = (await embedded.client.pools.agents({ pool: "heal" })).find((a) => a.name === agentName);
    assert.equal(agent?.allocated, 0, "the Lost sandbox's slot is released");

    // The agent returns and still runs the container: the sandbox is Running again, nothing recreated.
    await waitForAgentsReady();
    await waitFor(async () => (await get("manual")).status?.phase === "Running", 15_000, "Running again");
    const back = await get("manual");
    assert.equal(back.status?.sandboxID, kept.status?.sandboxID);
    assert.equal(back.status?.recreations, undefined);
    assert.equal((await embedded.client.sandboxes.exec("manual", ["true"])).exitCode, 0);
  });

  it("Manual: a Lost sandbox can be deleted while its agent is away; the agent removes the container when it returns", async () => {
    const doomed = await embedded.client.sandboxes.create({ ...sleeper, name: "doomed", recoveryTimeoutSeconds: 1 });
    const id = doomed.status?.sandboxID ?? "";
    await killAgentOf(doomed);
    await waitFor(async () => (await get("doomed")).status?.phase === "Lost", 15_000, "phase Lost");
    await embedded.client.sandboxes.delete("doomed");
    assert.equal(
      (await embedded.client.sandboxes.list()).some((s) => s.metadata.name === "doomed"),
      false,
    );
    await waitForAgentsReady();
    await waitFor(() => !sandboxesInContainerd(embedded.containerdNamespace).includes(id), 15_000, "the container removed");
  });

  it("an agent back inside recoveryTimeoutSeconds changes nothing: same instance, still running", async () => {
    const steady = await embedded.client.sandboxes.create({ ...sleeper, name: "steady", failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 60 });
    await embedded.client.sandboxes.exec("steady", ["sh", "-c", "echo marker > /tmp/marker"]);
    await killAgentOf(steady);
    await waitFor(async () => condition(await get("steady"), "AgentConnected")?.status === "False", 10_000, "AgentConnected=False");
    await waitForAgentsReady();
    await waitFor(async () => condition(await get("steady"), "AgentConnected")?.status === "True", 10_000, "AgentConnected=True again");
    const after = await get("steady");
    assert.equal(after.status?.phase, "Running");
    assert.equal(after.status?.sandboxID, steady.status?.sandboxID);
    assert.equal(after.status?.assignedPod, steady.status?.assignedPod);
    assert.equal(after.status?.recreations, undefined);
    assert.equal((await embedded.client.sandboxes.exec("steady", ["cat", "/tmp/marker"])).stdout, "marker\n", "the same process tree, state intact");
  });

  /** The id of the sandbox's container in containerd (a prepared instance's differs from the sandbox id). */
  function containerOf(sandbox: Sandbox): string {
    const namespace = embedded.containerdNamespace;
    const containerId = containerIds(namespace).find((candidate) => {
      const kind = containerKind(namespace, candidate);
      return kind?.kind === "sandbox" && kind.sandboxId === sandbox.status?.sandboxID;
    });
    assert.ok(containerId, `the container of ${sandbox.metadata.name} in containerd`);
    return containerId;
  }

  it("a container removed behind its answering agent's back: the sandbox becomes Lost (SandboxMissing), its slot released, and stays deletable", async () => {
    const victim = await embedded.client.sandboxes.create({ ...sleeper, name: "vanish" });
    const namespace = embedded.containerdNamespace;
    const containerId = containerOf(victim);
    // As someone with `ctr` on the node would: the agent is not told.
    ctr(namespace, "tasks", "rm", "-f", containerId);
    ctr(namespace, "containers", "rm", containerId);
    await waitFor(async () => (await get("vanish")).status?.phase === "Lost", 30_000, "phase Lost");
    const lost = await get("vanish");
    assert.equal(condition(lost, "Ready")?.reason, "SandboxMissing");
    assert.match(condition(lost, "Ready")?.message ?? "", /answers but does not run it/);
    const agent = (await embedded.client.pools.agents({ pool: "heal" })).find((a) => a.name === victim.status?.assignedPod);
    assert.equal(
      agent?.allocated,
      (await embedded.client.sandboxes.list()).filter((s) => s.status?.assignedPod === agent?.name && s.status?.phase === "Running").length,
      "its slot is released",
    );
    await embedded.client.sandboxes.delete("vanish");
    assert.equal(
      (await embedded.client.sandboxes.list()).some((s) => s.metadata.name === "vanish"),
      false,
    );
  });

  it("a sandbox whose process 1 is killed behind its answering agent's back becomes Lost (SandboxStopped); AutoRecreate runs a new instance", async () => {
    const manual = await embedded.client.sandboxes.create({ ...sleeper, name: "killed" });
    const auto = await embedded.client.sandboxes.create({ ...sleeper, name: "killed-auto", failurePolicy: "AutoRecreate", recoveryTimeoutSeconds: 2 });
    // As an OOM kill of process 1, or someone with `ctr` on the node, would: the container stays, its task stopped.
    for (const sandbox of [manual, auto]) ctr(embedded.containerdNamespace, "tasks", "kill", "-s", "SIGKILL", containerOf(sandbox));

    await waitFor(async () => (await get("killed")).status?.phase === "Lost", 30_000, "phase Lost");
    const lost = await get("killed");
    assert.equal(condition(lost, "Ready")?.reason, "SandboxStopped");
    assert.match(condition(lost, "Ready")?.message ?? "", /process 1 is gone/);
    assert.equal(condition(lost, "CommandExited"), undefined, "process 1's death is not the command's exit");
    // The stopped instance held a slot on its agent, which the registry gave back: it goes, the record stays.
    await waitFor(() => !sandboxesInContainerd(embedded.containerdNamespace).includes(manual.status?.sandboxID ?? "?"), 15_000, "the stopped instance removed");
    assert.equal(lost.status?.sandboxID, manual.status?.sandboxID, "the record keeps its identity");
    const agent = (await embedded.client.pools.agents({ pool: "heal" })).find((a) => a.name === manual.status?.assignedPod);
    assert.equal(
      agent?.allocated,
      (await embedded.client.sandboxes.list()).filter((s) => s.status?.assignedPod === agent?.name && s.status?.phase === "Running").length,
      "its slot is released",
    );

    await waitFor(async () => (await get("killed-auto")).status?.recreations === 1, 30_000, "the recreation");
    const recreated = await get("killed-auto");
    assert.equal(recreated.status?.phase, "Running");
    assert.notEqual(recreated.status?.sandboxID, auto.status?.sandboxID, "a new instance");
    assert.equal(condition(recreated, "Recreated")?.reason, "InstanceLost");
    assert.equal((await embedded.client.sandboxes.exec("killed-auto", ["echo", "new"])).stdout, "new\n");
    await waitFor(() => !sandboxesInContainerd(embedded.containerdNamespace).includes(auto.status?.sandboxID ?? "?"), 15_000, "the stopped instance removed");

    await embedded.client.sandboxes.delete("killed");
    assert.equal(
      (await embedded.client.sandboxes.list()).some((s) => s.metadata.name === "killed"),
      false,
    );
    await embedded.client.sandboxes.delete("killed-auto");
  });

  it("a sandbox whose process 1 died while its agent was away (a host restart) is Lost once the agent is back, not Running", async () => {
    const sandbox = await embedded.client.sandboxes.create({ ...sleeper, name: "rebooted", recoveryTimeoutSeconds: 60 });
    const containerId = containerOf(sandbox);
    await killAgentOf(sandbox);
    ctr(embedded.containerdNamespace, "tasks", "kill", "-s", "SIGKILL", containerId);
    await waitForAgentsReady();
    await waitFor(async () => (await get("rebooted")).status?.phase === "Lost", 30_000, "phase Lost");
    const lost = await get("rebooted");
    assert.equal(condition(lost, "Ready")?.reason, "SandboxStopped");
    assert.equal(lost.status?.sandboxID, sandbox.status?.sandboxID);
    await waitFor(
      () => !sandboxesInContainerd(embedded.containerdNamespace).includes(sandbox.status?.sandboxID ?? "?"),
      15_000,
      "the stopped instance removed",
    );
    await embedded.client.sandboxes.delete("rebooted");
  });

  it("a changed resetRevision replaces the running instance and is accepted", async () => {
    const first = await embedded.client.sandboxes.create({ ...sleeper, name: "reset-me", resetRevision: "r1" });
    assert.equal(first.status?.acceptedResetRevision, "r1");
    await embedded.client.sandboxes.exec("reset-me", ["sh", "-c", "echo old > /tmp/state"]);
    await embedded.client.sandboxes.update("reset-me", { ...first.spec, resetRevision: "r2" });
    await waitFor(async () => (await get("reset-me")).status?.acceptedResetRevision === "r2", 20_000, "reset accepted");
    const reset = await get("reset-me");
    assert.equal(reset.status?.phase, "Running");
    assert.notEqual(reset.status?.sandboxID, first.status?.sandboxID);
    assert.equal(condition(reset, "Recreated")?.reason, "Reset");
    assert.equal(reset.status?.recreations, 1);
    const fresh = await embedded.client.sandboxes.exec("reset-me", ["sh", "-c", "cat /tmp/state 2>/dev/null || echo fresh"]);
    assert.equal(fresh.stdout, "fresh\n", "the new instance starts from the image, not the old state");
    assert.equal(sandboxesInContainerd(embedded.containerdNamespace).includes(first.status?.sandboxID ?? "?"), false, "the old instance is gone");
    const slots = (await embedded.client.pools.agents({ pool: "heal" })).reduce((sum, a) => sum + a.allocated, 0);
    const sandboxes = (await embedded.client.sandboxes.list()).filter((s) => s.status?.phase === "Running").length;
    assert.equal(slots, sandboxes, "one slot per running sandbox: the replaced instance's slot was released");
  });
});
