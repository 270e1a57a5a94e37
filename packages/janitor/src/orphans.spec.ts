import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LABEL_AGENT, LABEL_AGENT_UID, LABEL_MANAGED, LABEL_ROLE, LABEL_SANDBOX_ID, ROLE_PREPARED_INSTANCE, ROLE_SHIM_ANCHOR } from "@fast-sandbox/agent";
import type { NetworkAttachmentFacts } from "./node-networks.js";
import {
  AgentAbsence,
  Sightings,
  judge,
  judgeAttachment,
  sandboxCgroupOrphanReason,
  type JudgeContext,
  type ManagedObjectFacts,
  type SandboxCgroupFacts,
} from "./orphans.js";

const WINDOW = 120_000;
const NOW = 1_000_000_000;

function sandbox(id: string, agent: string, ageMs: number, extra: Record<string, string> = {}): ManagedObjectFacts {
  return { id, labels: { [LABEL_MANAGED]: "true", [LABEL_AGENT]: agent, [LABEL_SANDBOX_ID]: id, ...extra }, changedAtMs: NOW - ageMs };
}

function anchor(agent: string, ageMs: number, extra: Record<string, string> = {}): ManagedObjectFacts {
  return {
    id: `fsb-anchor.${agent}.0`,
    labels: { [LABEL_MANAGED]: "true", [LABEL_AGENT]: agent, [LABEL_ROLE]: ROLE_SHIM_ANCHOR, ...extra },
    changedAtMs: NOW - ageMs,
  };
}

function context(
  options: { agents?: string[]; sandboxIds?: string[]; gone?: string[]; protectionMs?: number; agentPodUids?: Record<string, string> } = {},
): JudgeContext {
  return {
    inventory: {
      agents: new Set(options.agents ?? ["live-0"]),
      sandboxIds: new Set(options.sandboxIds ?? []),
      ...(options.agentPodUids ? { agentPodUids: new Map(Object.entries(options.agentPodUids)) } : {}),
    },
    goneAgents: new Set(options.gone ?? []),
    nowMs: NOW,
    protectionMs: options.protectionMs ?? WINDOW,
  };
}

describe("judge", () => {
  it("never removes a container without the managed label, whatever else it carries", () => {
    const unlabelled = { id: "user-app", labels: { [LABEL_AGENT]: "dead-0", [LABEL_SANDBOX_ID]: "user-app" }, changedAtMs: 0 };
    assert.deepEqual(judge(unlabelled, context({ gone: ["dead-0"] })), { action: "keep", why: "unmanaged" });
    const falseLabel = { ...unlabelled, labels: { ...unlabelled.labels, [LABEL_MANAGED]: "false" } };
    assert.deepEqual(judge(falseLabel, context({ gone: ["dead-0"] })), { action: "keep", why: "unmanaged" });
  });

  it("keeps a sandbox whose agent exists and whose record holds its id", () => {
    assert.deepEqual(judge(sandbox("a", "live-0", WINDOW * 10), context({ sandboxIds: ["a"] })), { action: "keep", why: "in_use" });
  });

  it("removes a sandbox whose record is gone, once it is older than the window", () => {
    assert.deepEqual(judge(sandbox("a", "live-0", WINDOW), context()), { action: "remove", reason: "record_gone" });
  });

  it("protects a record-less sandbox younger than the window (a create in flight)", () => {
    assert.deepEqual(judge(sandbox("a", "live-0", WINDOW - 1), context()), { action: "keep", why: "protected", orphanReason: "record_gone" });
  });

  it("removes a sandbox of a gone agent even when its record still exists, and says the agent is why", () => {
    assert.deepEqual(judge(sandbox("a", "dead-0", WINDOW), context({ sandboxIds: ["a"], gone: ["dead-0"] })), { action: "remove", reason: "agent_gone" });
  });

  it("does not treat an agent missing from the inventory as gone until the absence tracker says so", () => {
    // Missing now (e.g. the control plane has just restarted) but not yet for a whole window.
    assert.deepEqual(judge(sandbox("a", "starting-0", WINDOW * 10), context({ agents: [], sandboxIds: ["a"] })), { action: "keep", why: "in_use" });
  });

  it("removes the shim anchors of gone agents only", () => {
    assert.deepEqual(judge(anchor("dead-0", WINDOW), context({ gone: ["dead-0"] })), { action: "remove", reason: "anchor_orphaned" });
    // An anchor has no record: that alone never makes it an orphan.
    assert.deepEqual(judge(anchor("live-0", WINDOW * 10), context()), { action: "keep", why: "in_use" });
    assert.deepEqual(judge(anchor("dead-0", 0), context({ gone: ["dead-0"] })), { action: "keep", why: "protected", orphanReason: "anchor_orphaned" });
  });

  it("removes the unclaimed prepared instances of gone agents only: no record ever names them", () => {
    const prepared = (agent: string, ageMs: number): ManagedObjectFacts => ({
      id: "fsb-prepared-0123456789abcdef",
      labels: { [LABEL_MANAGED]: "true", [LABEL_AGENT]: agent, [LABEL_ROLE]: ROLE_PREPARED_INSTANCE },
      changedAtMs: NOW - ageMs,
    });
    assert.deepEqual(judge(prepared("dead-0", WINDOW), context({ gone: ["dead-0"] })), { action: "remove", reason: "prepared_orphaned" });
    assert.deepEqual(judge(prepared("live-0", WINDOW * 10), context()), { action: "keep", why: "in_use" });
  });

  it("removes a live agent's prepared snapshot whose container is gone (a prepare cut short), after the window", () => {
    const bare = (ageMs: number): ManagedObjectFacts => ({
      id: "fsb-prepared-0123456789abcdef",
      labels: { [LABEL_MANAGED]: "true", [LABEL_AGENT]: "live-0", [LABEL_ROLE]: ROLE_PREPARED_INSTANCE },
      changedAtMs: NOW - ageMs,
      bare: true,
    });
    assert.deepEqual(judge(bare(WINDOW), context()), { action: "remove", reason: "prepared_orphaned" });
    assert.deepEqual(judge(bare(0), context()), { action: "keep", why: "protected", orphanReason: "prepared_orphaned" });
  });

  it("keeps managed objects it cannot attribute: no agent label, or a role it does not know", () => {
    const ownerless = { id: "x", labels: { [LABEL_MANAGED]: "true" }, changedAtMs: 0 };
    assert.deepEqual(judge(ownerless, context()), { action: "keep", why: "no_agent_label" });
    assert.deepEqual(judge(sandbox("y", "dead-0", WINDOW, { [LABEL_ROLE]: "something-new" }), context({ gone: ["dead-0"] })), {
      action: "keep",
      why: "unknown_role",
    });
  });

  it("falls back to the object's id when the sandbox-id label is missing", () => {
    const labels = { [LABEL_MANAGED]: "true", [LABEL_AGENT]: "live-0" };
    assert.deepEqual(judge({ id: "b", labels, changedAtMs: 0 }, context({ sandboxIds: ["b"] })), { action: "keep", why: "in_use" });
    assert.deepEqual(judge({ id: "c", labels, changedAtMs: 0 }, context({ sandboxIds: ["b"] })), { action: "remove", reason: "record_gone" });
  });

  it("with a zero window removes at once (the sweep after fsb down)", () => {
    assert.deepEqual(judge(sandbox("a", "dead-0", 0), context({ gone: ["dead-0"], protectionMs: 0 })), { action: "remove", reason: "agent_gone" });
  });
});

describe("judge with agent Pod UIDs (Kubernetes mode)", () => {
  const pods = { agentPodUids: { "live-0": "uid-new" }, sandboxIds: ["a"] };

  it("keeps a sandbox whose agent-uid label matches the Pod of its agent name", () => {
    assert.deepEqual(judge(sandbox("a", "live-0", WINDOW * 10, { [LABEL_AGENT_UID]: "uid-new" }), context(pods)), { action: "keep", why: "in_use" });
  });

  it("treats a sandbox of a replaced Pod of the same name as agent_gone, once it is older than the window", () => {
    const stale = (ageMs: number) => sandbox("a", "live-0", ageMs, { [LABEL_AGENT_UID]: "uid-old" });
    // Its record still exists: the agent, not the record, is why.
    assert.deepEqual(judge(stale(WINDOW - 1), context(pods)), { action: "keep", why: "protected", orphanReason: "agent_gone" });
    assert.deepEqual(judge(stale(WINDOW), context(pods)), { action: "remove", reason: "agent_gone" });
  });

  it("treats the shim anchor of a replaced Pod as orphaned, and keeps the current Pod's", () => {
    assert.deepEqual(judge(anchor("live-0", WINDOW, { [LABEL_AGENT_UID]: "uid-old" }), context(pods)), { action: "remove", reason: "anchor_orphaned" });
    assert.deepEqual(judge(anchor("live-0", WINDOW, { [LABEL_AGENT_UID]: "uid-new" }), context(pods)), { action: "keep", why: "in_use" });
  });

  it("judges a container without the agent-uid label by its agent name alone", () => {
    assert.deepEqual(judge(sandbox("a", "live-0", WINDOW * 10), context(pods)), { action: "keep", why: "in_use" });
    assert.deepEqual(judge(sandbox("b", "live-0", WINDOW), context(pods)), { action: "remove", reason: "record_gone" });
    assert.deepEqual(judge(anchor("live-0", WINDOW * 10), context(pods)), { action: "keep", why: "in_use" });
  });

  it("judges by name alone when the inventory knows no UIDs (embedded mode) or not this agent's", () => {
    const labelled = sandbox("a", "live-0", WINDOW * 10, { [LABEL_AGENT_UID]: "uid-old" });
    assert.deepEqual(judge(labelled, context({ sandboxIds: ["a"] })), { action: "keep", why: "in_use" });
    // An empty UID: two Pods of the node share the name, so the inventory cannot say which is the agent.
    assert.deepEqual(judge(labelled, context({ sandboxIds: ["a"], agentPodUids: { "live-0": "" } })), { action: "keep", why: "in_use" });
    // The name is missing altogether: the absence window decides, as for any agent.
    assert.deepEqual(judge(labelled, context({ agents: [], sandboxIds: ["a"], agentPodUids: {} })), { action: "keep", why: "in_use" });
    assert.deepEqual(judge(labelled, context({ agents: [], sandboxIds: ["a"], agentPodUids: {}, gone: ["live-0"] })), {
      action: "remove",
      reason: "agent_gone",
    });
  });
});

describe("AgentAbsence", () => {
  it("reports an agent gone only after it has been missing for a whole window of successful reads", () => {
    const absence = new AgentAbsence();
    assert.deepEqual([...absence.observe(["a", "b"], new Set(["a"]), 0, 100)], []);
    assert.deepEqual([...absence.observe(["a", "b"], new Set(["a"]), 99, 100)], []);
    assert.deepEqual([...absence.observe(["a", "b"], new Set(["a"]), 100, 100)], ["b"]);
  });

  it("starts over when the agent shows up again", () => {
    const absence = new AgentAbsence();
    absence.observe(["b"], new Set(), 0, 100);
    absence.observe(["b"], new Set(["b"]), 50, 100);
    assert.deepEqual([...absence.observe(["b"], new Set(), 120, 100)], []);
    assert.deepEqual([...absence.observe(["b"], new Set(), 220, 100)], ["b"]);
  });

  it("forgets agents that own nothing any more, so a later appearance starts a new window", () => {
    const absence = new AgentAbsence();
    absence.observe(["b"], new Set(), 0, 100);
    absence.observe([], new Set(), 50, 100);
    assert.deepEqual([...absence.observe(["b"], new Set(), 120, 100)], []);
  });

  it("with a zero window, an absent agent is gone at first sight", () => {
    assert.deepEqual([...new AgentAbsence().observe(["x", "x"], new Set(), 5, 0)], ["x"]);
  });

  it("starts over after clear(): reads that failed in between do not count towards the window", () => {
    const absence = new AgentAbsence();
    absence.observe(["b"], new Set(), 0, 100);
    // The passes in between could not read the inventory.
    absence.clear();
    assert.deepEqual([...absence.observe(["b"], new Set(), 300, 100)], []);
    assert.deepEqual([...absence.observe(["b"], new Set(), 400, 100)], ["b"]);
  });
});

describe("Sightings", () => {
  it("remembers since when each key has been seen, and forgets one a pass did not see", () => {
    const sightings = new Sightings();
    assert.deepEqual(
      [...sightings.observe(["a", "b"], 10)],
      [
        ["a", 10],
        ["b", 10],
      ],
    );
    assert.deepEqual([...sightings.observe(["a"], 20)], [["a", 10]]);
    assert.deepEqual(
      [...sightings.observe(["a", "b"], 30)],
      [
        ["a", 10],
        ["b", 30],
      ],
    );
    sightings.clear();
    assert.deepEqual([...sightings.observe(["a"], 40)], [["a", 40]]);
  });
});

describe("sandboxCgroupOrphanReason", () => {
  const cgroup = (agent: string, name: string): SandboxCgroupFacts => ({ agent, name, cgroupsPath: `/fsb/${agent}/sandboxes/${name}` });
  const context = (options: { gone?: string[]; containers?: string[] } = {}) => ({
    goneAgents: new Set(options.gone ?? []),
    containerIds: new Set(options.containers ?? []),
  });

  it("keeps a sandbox's cgroup while its container exists, whatever its agent", () => {
    assert.equal(sandboxCgroupOrphanReason(cgroup("live-0", "a"), context({ containers: ["a"] })), undefined);
    assert.equal(sandboxCgroupOrphanReason(cgroup("dead-0", "a"), context({ gone: ["dead-0"], containers: ["a"] })), undefined);
  });

  it("takes a sandbox's cgroup without its container for an orphan, of a live agent (its delete left it) as of a gone one", () => {
    assert.equal(sandboxCgroupOrphanReason(cgroup("live-0", "a"), context()), "record_gone");
    assert.equal(sandboxCgroupOrphanReason(cgroup("dead-0", "a"), context({ gone: ["dead-0"] })), "agent_gone");
  });

  it("never takes a live agent's anchor cgroup, and a gone agent's only without its anchor container", () => {
    assert.equal(sandboxCgroupOrphanReason(cgroup("live-0", "fsb-anchor-0"), context()), undefined);
    assert.equal(sandboxCgroupOrphanReason(cgroup("dead-0", "fsb-anchor-1"), context({ gone: ["dead-0"], containers: ["fsb-anchor.dead-0.1"] })), undefined);
    // Another agent's anchor of the same number is not this cgroup's.
    assert.equal(
      sandboxCgroupOrphanReason(cgroup("dead-0", "fsb-anchor-1"), context({ gone: ["dead-0"], containers: ["fsb-anchor.live-0.1"] })),
      "anchor_orphaned",
    );
  });
});

describe("judgeAttachment", () => {
  const attachment = (overrides: Partial<NetworkAttachmentFacts> = {}): NetworkAttachmentFacts => ({
    id: "0123456789ab",
    network: "fsb0",
    agent: "live-0",
    containerdNamespace: "fast-sandbox",
    state: "claimed",
    sandboxId: "a",
    changedAtMs: NOW - WINDOW,
    ...overrides,
  });
  const attachmentContext = (options: Parameters<typeof context>[0] & { stillThere?: string[] } = {}) => ({
    ...context(options),
    containerdNamespaces: new Set(["fast-sandbox"]),
    sandboxStillThere: (_namespace: string, _agent: string, sandboxId: string) => (options.stillThere ?? []).includes(sandboxId),
  });

  it("removes any namespace of a gone agent, and of a Pod replaced under the same name", () => {
    for (const state of ["preparing", "prepared", "claimed"] as const) {
      assert.deepEqual(judgeAttachment(attachment({ agent: "dead-0", state }), attachmentContext({ gone: ["dead-0"], sandboxIds: ["a"] })), {
        action: "remove",
        reason: "agent_gone",
      });
    }
    assert.deepEqual(judgeAttachment(attachment({ agentUid: "uid-old" }), attachmentContext({ sandboxIds: ["a"], agentPodUids: { "live-0": "uid-new" } })), {
      action: "remove",
      reason: "agent_gone",
    });
  });

  it("keeps a live agent's namespace while its sandbox has a record or a container, and its prepared ones always", () => {
    assert.deepEqual(judgeAttachment(attachment(), attachmentContext({ sandboxIds: ["a"] })), { action: "keep", why: "in_use" });
    assert.deepEqual(judgeAttachment(attachment(), attachmentContext({ stillThere: ["a"] })), { action: "keep", why: "in_use" });
    assert.deepEqual(judgeAttachment(attachment({ state: "prepared", sandboxId: undefined }), attachmentContext()), { action: "keep", why: "in_use" });
    assert.deepEqual(judgeAttachment(attachment(), attachmentContext()), { action: "remove", reason: "record_gone" });
    assert.deepEqual(judgeAttachment(attachment({ changedAtMs: NOW - 1 }), attachmentContext()), {
      action: "keep",
      why: "protected",
      orphanReason: "record_gone",
    });
  });

  it("leaves the namespaces of other containerd namespaces' agents alone", () => {
    assert.deepEqual(judgeAttachment(attachment({ containerdNamespace: "someone-else", agent: "dead-0" }), attachmentContext({ gone: ["dead-0"] })), {
      action: "keep",
      why: "unmanaged",
    });
  });
});
