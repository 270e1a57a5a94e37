import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { pino } from "pino";
import { UnavailableError } from "@fast-sandbox/api";
import { FsbError } from "@fast-sandbox/api/core";
import {
  LABEL_AGENT,
  LABEL_AGENT_UID,
  LABEL_MANAGED,
  LABEL_ROLE,
  LABEL_SANDBOX_ID,
  ROLE_PREPARED_INSTANCE,
  ROLE_PULL_LEASE,
  ROLE_SHIM_ANCHOR,
  containerIdOf,
} from "@fast-sandbox/agent";
import type { Clock } from "./clock.js";
import { LocalHostLeftovers, type HostLeftovers, type LocalHostLeftoversOptions, type RemovedFile } from "./host-leftovers.js";
import type { Inventory, InventorySnapshot } from "./inventory.js";
import { INVENTORY_RECHECK_MS, Janitor } from "./janitor.js";
import type { ManagedContainer, ManagedLease, ManagedSnapshot, NodeContainers } from "./node-containers.js";
import type { NetworkAttachmentFacts, NodeNetworks } from "./node-networks.js";
import type { SandboxCgroupFacts } from "./orphans.js";

const WINDOW = 60_000;
const logger = pino({ level: "silent" });

class FakeClock implements Clock {
  constructor(public ms = 10_000_000) {}
  nowMs(): number {
    return this.ms;
  }
}

interface FakeContainer {
  id: string;
  labels: Record<string, string>;
  changedAtMs: number;
  snapshotKey: string;
  cgroupsPath?: string;
  task: boolean;
  /** Its task outlives SIGKILL (removeTask times out) until its cgroup's processes are killed. */
  stuck?: boolean;
}

function managed(c: FakeContainer): ManagedContainer {
  return { id: c.id, labels: { ...c.labels }, changedAtMs: c.changedAtMs, snapshotter: "overlayfs", snapshotKey: c.snapshotKey, cgroupsPath: c.cgroupsPath };
}

/** containerd in memory; every mutation is appended to `calls`. */
class FakeNode implements NodeContainers {
  readonly containerdNamespace = "ns";
  containers = new Map<string, FakeContainer>();
  snapshots = new Map<string, ManagedSnapshot>();
  leases = new Map<string, ManagedLease>();
  calls: string[] = [];
  failTaskRemoval = false;
  failSnapshotRemoval = false;
  /** Called as a task's removal begins: what happens on the node meanwhile (a removal takes seconds). */
  onRemoveTask?: (id: string) => void;

  add(container: Omit<FakeContainer, "task" | "snapshotKey"> & { task?: boolean; snapshot?: boolean }): void {
    const snapshotKey = container.snapshot === false ? "" : container.id;
    this.containers.set(container.id, { ...container, task: container.task ?? true, snapshotKey });
    if (snapshotKey)
      this.snapshots.set(snapshotKey, { snapshotter: "overlayfs", key: snapshotKey, labels: container.labels, changedAtMs: container.changedAtMs });
  }

  listContainers(): Promise<ManagedContainer[]> {
    return Promise.resolve([...this.containers.values()].map((c) => managed(c)));
  }
  get(id: string): Promise<ManagedContainer | undefined> {
    const container = this.containers.get(id);
    return Promise.resolve(container ? managed(container) : undefined);
  }
  listSnapshots(): Promise<ManagedSnapshot[]> {
    return Promise.resolve([...this.snapshots.values()]);
  }
  listLeases(): Promise<ManagedLease[]> {
    return Promise.resolve([...this.leases.values()]);
  }
  removeLease(id: string): Promise<boolean> {
    if (!this.leases.delete(id)) return Promise.resolve(false);
    this.calls.push(`lease ${id}`);
    return Promise.resolve(true);
  }
  removeTask(id: string): Promise<boolean> {
    this.onRemoveTask?.(id);
    if (this.failTaskRemoval) return Promise.reject(new Error("task did not exit"));
    const container = this.containers.get(id);
    if (!container?.task) return Promise.resolve(false);
    if (container.stuck) return Promise.reject(new FsbError("deadline_exceeded", `task ${id} did not exit within 10000 ms of SIGKILL`));
    container.task = false;
    this.calls.push(`task ${id}`);
    return Promise.resolve(true);
  }
  removeContainer(id: string): Promise<boolean> {
    if (!this.containers.delete(id)) return Promise.resolve(false);
    this.calls.push(`container ${id}`);
    return Promise.resolve(true);
  }
  removeSnapshot(_snapshotter: string, key: string): Promise<boolean> {
    if (this.failSnapshotRemoval) return Promise.reject(new Error("snapshot busy"));
    if (!this.snapshots.delete(key)) return Promise.resolve(false);
    this.calls.push(`snapshot ${key}`);
    return Promise.resolve(true);
  }
  close(): void {}
}

class FakeHost implements HostLeftovers {
  agentDirs: string[] = [];
  cgroups = new Set<string>();
  files = new Map<string, RemovedFile[]>();
  staleFiles = new Map<string, RemovedFile[]>();
  agentCgroups = new Set<string>();
  /** The sandbox ids each call of removeStaleAgentFiles was told to keep, by agent. */
  keptSandboxIds = new Map<string, string[]>();
  /** The stdio FIFOs a containerd client left for a container's task, by container id. */
  containerdFifos = new Map<string, RemovedFile[]>();
  /** Whether killing a cgroup's processes ends the task stuck in it (else it stays stuck). */
  killEndsStuckTasks = true;
  constructor(
    private readonly calls: string[],
    private readonly node?: FakeNode,
  ) {}
  listAgentStateDirs(): Promise<string[]> {
    return Promise.resolve(this.agentDirs);
  }
  removeSandboxCgroup(path: string): Promise<string[]> {
    if (!this.cgroups.delete(path)) return Promise.resolve([]);
    this.calls.push(`cgroup ${path}`);
    return Promise.resolve([`/sys/fs/cgroup/memory${path}`]);
  }
  killSandboxCgroupProcesses(path: string): Promise<number> {
    this.calls.push(`kill cgroup ${path}`);
    const stuck = [...(this.node?.containers.values() ?? [])].filter((container) => container.cgroupsPath === path && container.stuck);
    if (this.killEndsStuckTasks) for (const container of stuck) container.stuck = false;
    return Promise.resolve(stuck.length);
  }
  removeSandboxFiles(agent: string, sandboxId: string): Promise<RemovedFile[]> {
    const files = this.files.get(`${agent}/${sandboxId}`) ?? [];
    this.files.delete(`${agent}/${sandboxId}`);
    if (files.length) this.calls.push(`files ${sandboxId}`);
    return Promise.resolve(files);
  }
  removeStaleAgentFiles(agent: string, _changedBeforeMs: number, keepSandboxIds: ReadonlySet<string>): Promise<RemovedFile[]> {
    this.keptSandboxIds.set(agent, [...keepSandboxIds].sort());
    const files = this.staleFiles.get(agent) ?? [];
    this.staleFiles.delete(agent);
    return Promise.resolve(files);
  }
  removeContainerdFifos(containerId: string): Promise<RemovedFile[]> {
    const files = this.containerdFifos.get(containerId) ?? [];
    this.containerdFifos.delete(containerId);
    if (files.length) this.calls.push(`containerd fifos ${containerId}`);
    return Promise.resolve(files);
  }
  removeAgentCgroup(agent: string): Promise<string[]> {
    if (!this.agentCgroups.delete(agent)) return Promise.resolve([]);
    this.calls.push(`agent cgroup ${agent}`);
    return Promise.resolve([`/sys/fs/cgroup/memory/fsb/${agent}`]);
  }
  hasAgentCgroup(agent: string): Promise<boolean> {
    return Promise.resolve(this.agentCgroups.has(agent));
  }
  listSandboxCgroups(): Promise<SandboxCgroupFacts[]> {
    return Promise.resolve([]);
  }
  removeAgentNetworkNamespace(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }
  removeAgentStateDir(agent: string): Promise<RemovedFile[]> {
    if (!this.agentDirs.includes(agent)) return Promise.resolve([]);
    this.agentDirs = this.agentDirs.filter((dir) => dir !== agent);
    this.calls.push(`state dir ${agent}`);
    return Promise.resolve([{ kind: "state_dir", path: `/data/agents/${agent}` }]);
  }
}

class FakeInventory implements Inventory {
  snapshot: InventorySnapshot = { agents: new Set(), sandboxIds: new Set() };
  down = false;
  read(): Promise<InventorySnapshot> {
    return this.down ? Promise.reject(new UnavailableError("control plane down")) : Promise.resolve(this.snapshot);
  }
  set(agents: string[], sandboxIds: string[], agentPodUids?: Record<string, string>): void {
    this.snapshot = { agents: new Set(agents), sandboxIds: new Set(sandboxIds) };
    if (agentPodUids) this.snapshot.agentPodUids = new Map(Object.entries(agentPodUids));
  }
}

function setup() {
  const clock = new FakeClock();
  const node = new FakeNode();
  const host = new FakeHost(node.calls, node);
  const inventory = new FakeInventory();
  const janitor = new Janitor({ inventory, nodes: [node], host, clock, protectionMs: WINDOW, logger });
  const labels = (agent: string, sandboxId: string) => ({ [LABEL_MANAGED]: "true", [LABEL_AGENT]: agent, [LABEL_SANDBOX_ID]: sandboxId });
  const anchorLabels = (agent: string) => ({ [LABEL_MANAGED]: "true", [LABEL_AGENT]: agent, [LABEL_ROLE]: ROLE_SHIM_ANCHOR });
  const old = clock.ms - WINDOW * 2;
  return { clock, node, host, inventory, janitor, labels, anchorLabels, old };
}

describe("Janitor.runPass", () => {
  it("removes nothing when the inventory cannot be read, even objects that look abandoned", async () => {
    const { node, inventory, janitor, labels, old, clock } = setup();
    node.add({ id: "a", labels: labels("dead-0", "a"), changedAtMs: old });
    inventory.down = true;
    for (let pass = 0; pass < 3; pass++) {
      const result = await janitor.runPass();
      assert.equal(result.outcome, "inventory_unavailable");
      assert.deepEqual(result.removed, []);
      clock.ms += WINDOW;
    }
    assert.deepEqual(node.calls, []);
    assert.match(await janitor.metrics.text(), /fsb_janitor_passes_total\{outcome="inventory_unavailable"\} 3/);
  });

  it("reclaims a gone agent's sandboxes (task, cgroup, files, containerd's FIFOs, snapshot, container — in that order) and its anchors, with counts per reason", async () => {
    const { clock, node, host, inventory, janitor, labels, anchorLabels, old } = setup();
    inventory.set(["live-0"], ["a", "b", "live"]);
    node.add({ id: "a", labels: labels("dead-0", "a"), changedAtMs: old, cgroupsPath: "/fsb/dead-0/sandboxes/a" });
    node.add({ id: "b", labels: labels("dead-0", "b"), changedAtMs: old, task: false });
    node.add({
      id: "fsb-anchor.dead-0.0",
      labels: anchorLabels("dead-0"),
      changedAtMs: old,
      snapshot: false,
      cgroupsPath: "/fsb/dead-0/sandboxes/fsb-anchor-0",
    });
    node.add({ id: "live", labels: labels("live-0", "live"), changedAtMs: old });
    node.add({ id: "fsb-anchor.live-0.0", labels: anchorLabels("live-0"), changedAtMs: old, snapshot: false });
    host.cgroups.add("/fsb/dead-0/sandboxes/a").add("/fsb/dead-0/sandboxes/fsb-anchor-0");
    host.files.set("dead-0/a", [
      { kind: "run_dir", path: "/data/agents/dead-0/run/a" },
      { kind: "log_file", path: "/data/agents/dead-0/logs/a.log" },
      { kind: "fifo", path: "/data/agents/dead-0/a.exec-01.stdout" },
    ]);
    host.agentDirs = ["live-0", "dead-0"];
    host.staleFiles.set("dead-0", [{ kind: "fifo", path: "/data/agents/dead-0/gone.exec-02.stderr" }]);
    host.agentCgroups.add("dead-0").add("live-0");
    host.containerdFifos.set("b", [{ kind: "fifo", path: "/run/containerd/fifo/123/b-stdout" }]);
    host.containerdFifos.set("live", [{ kind: "fifo", path: "/run/containerd/fifo/456/live-stdout" }]);

    // The first pass only starts the agent's absence clock.
    const first = await janitor.runPass();
    assert.equal(first.outcome, "completed");
    assert.deepEqual(first.removed, []);
    clock.ms += WINDOW;

    const result = await janitor.runPass();
    assert.deepEqual(result.reclaimed, { agent_gone: 2, record_gone: 0, anchor_orphaned: 1, prepared_orphaned: 0 });
    assert.deepEqual(node.calls, [
      "task a",
      "cgroup /fsb/dead-0/sandboxes/a",
      "files a",
      "snapshot a",
      "container a",
      "containerd fifos b",
      "snapshot b",
      "container b",
      "task fsb-anchor.dead-0.0",
      "cgroup /fsb/dead-0/sandboxes/fsb-anchor-0",
      "container fsb-anchor.dead-0.0",
      "agent cgroup dead-0",
    ]);
    assert.deepEqual([...node.containers.keys()], ["live", "fsb-anchor.live-0.0"]);
    const kinds = result.removed.map((object) => `${object.reason}:${object.kind}`);
    assert.deepEqual(
      kinds.filter((kind) => kind.endsWith(":fifo")),
      ["agent_gone:fifo", "agent_gone:fifo", "agent_gone:fifo"],
    );
    // A live sandbox's FIFOs are not touched.
    assert.ok(host.containerdFifos.has("live"));
    assert.ok(result.removed.every((object) => object.agent === "dead-0"));

    const text = await janitor.metrics.text();
    assert.match(text, /fsb_janitor_orphans_reclaimed_total\{reason="agent_gone"\} 2/);
    assert.match(text, /fsb_janitor_orphans_reclaimed_total\{reason="anchor_orphaned"\} 1/);
    assert.match(text, /fsb_janitor_orphans_reclaimed_total\{reason="record_gone"\} 0/);
    assert.match(text, /fsb_janitor_objects_removed_total\{kind="container",reason="agent_gone"\} 2/);

    // The state directory stays while the pass reclaimed the rest; the next one, which finds
    // nothing else of the agent, removes it: the live agent's stays.
    const again = await janitor.runPass();
    assert.deepEqual(
      again.removed.map((object) => `${object.reason} ${object.kind} ${object.id}`),
      ["agent_gone state_dir /data/agents/dead-0"],
    );
    assert.deepEqual(host.agentDirs, ["live-0"]);
    // Idempotent: a later pass finds nothing more to do.
    assert.deepEqual((await janitor.runPass()).removed, []);
  });

  it("leaves a record-less sandbox alone while it is younger than the window, then removes it", async () => {
    const { clock, node, inventory, janitor, labels } = setup();
    inventory.set(["live-0"], []);
    node.add({ id: "young", labels: labels("live-0", "young"), changedAtMs: clock.ms - 1_000 });
    const early = await janitor.runPass();
    assert.equal(early.protectedOrphans, 1);
    assert.deepEqual(early.removed, []);
    assert.ok(node.containers.has("young"));

    clock.ms += WINDOW;
    const later = await janitor.runPass();
    assert.deepEqual(later.reclaimed, { agent_gone: 0, record_gone: 1, anchor_orphaned: 0, prepared_orphaned: 0 });
    assert.equal(node.containers.size, 0);
  });

  it("judges and cleans a container whose id the agent mapped by the sandbox id in its label: files by that id, the cgroup by the container's", async () => {
    const { node, host, inventory, janitor, labels, old } = setup();
    const sandboxId = "default.a--b.a1b2c3";
    const containerId = containerIdOf(sandboxId);
    assert.notEqual(containerId, sandboxId);
    const cgroupsPath = `/fsb/live-0/sandboxes/${containerId}`;
    inventory.set(["live-0"], [sandboxId]);
    node.add({ id: containerId, labels: labels("live-0", sandboxId), changedAtMs: old, cgroupsPath });
    host.cgroups.add(cgroupsPath);
    host.files.set(`live-0/${sandboxId}`, [{ kind: "log_file", path: `/data/agents/live-0/logs/${sandboxId}.log` }]);
    // Its record holds the sandbox id, not the container id: in use.
    assert.deepEqual((await janitor.runPass()).removed, []);

    inventory.set(["live-0"], []);
    const result = await janitor.runPass();
    assert.deepEqual(result.reclaimed, { agent_gone: 0, record_gone: 1, anchor_orphaned: 0, prepared_orphaned: 0 });
    assert.deepEqual(node.calls, [`task ${containerId}`, `cgroup ${cgroupsPath}`, `files ${sandboxId}`, `snapshot ${containerId}`, `container ${containerId}`]);
    assert.ok(result.removed.every((object) => object.sandboxId === sandboxId));
  });

  it("keeps the sandboxes of an agent that is missing from the inventory for less than a window (a control plane restarting)", async () => {
    const { clock, node, inventory, janitor, labels, old } = setup();
    inventory.set([], ["a"]);
    node.add({ id: "a", labels: labels("restarting-0", "a"), changedAtMs: old });
    await janitor.runPass();
    clock.ms += WINDOW - 1;
    assert.deepEqual((await janitor.runPass()).removed, []);
    // It registers again: the absence is forgotten, however long the pass goes on.
    inventory.set(["restarting-0"], ["a"]);
    await janitor.runPass();
    inventory.set([], ["a"]);
    clock.ms += WINDOW - 1;
    assert.deepEqual((await janitor.runPass()).removed, []);
    assert.ok(node.containers.has("a"));
  });

  it("reclaims what a replaced agent Pod of the same name left (by agent UID) and keeps the new Pod's and unlabelled ones", async () => {
    const { clock, node, host, inventory, janitor, labels, anchorLabels, old } = setup();
    const uid = (value: string) => ({ [LABEL_AGENT_UID]: value });
    inventory.set(["pool-agent-x"], ["stale", "young-stale", "current", "unlabelled"], { "pool-agent-x": "uid-new" });
    node.add({ id: "stale", labels: { ...labels("pool-agent-x", "stale"), ...uid("uid-old") }, changedAtMs: old });
    node.add({ id: "young-stale", labels: { ...labels("pool-agent-x", "young-stale"), ...uid("uid-old") }, changedAtMs: clock.ms - 1_000 });
    node.add({ id: "current", labels: { ...labels("pool-agent-x", "current"), ...uid("uid-new") }, changedAtMs: old });
    node.add({ id: "unlabelled", labels: labels("pool-agent-x", "unlabelled"), changedAtMs: old });
    node.add({ id: "fsb-anchor.pool-agent-x.0", labels: { ...anchorLabels("pool-agent-x"), ...uid("uid-old") }, changedAtMs: old, snapshot: false });
    host.agentDirs = ["pool-agent-x"];
    host.agentCgroups.add("pool-agent-x");

    // No absence clock: the name is taken by another Pod, so the old one is gone for sure.
    const first = await janitor.runPass();
    assert.deepEqual(first.reclaimed, { agent_gone: 1, record_gone: 0, anchor_orphaned: 1, prepared_orphaned: 0 });
    assert.equal(first.protectedOrphans, 1);
    assert.deepEqual([...node.containers.keys()], ["young-stale", "current", "unlabelled"]);

    clock.ms += WINDOW;
    const later = await janitor.runPass();
    assert.deepEqual(later.reclaimed, { agent_gone: 1, record_gone: 0, anchor_orphaned: 0, prepared_orphaned: 0 });
    assert.deepEqual([...node.containers.keys()], ["current", "unlabelled"]);
    // The agent name lives on in the new Pod: its cgroup and state directory stay.
    assert.ok(host.agentCgroups.has("pool-agent-x"));
    assert.ok(!node.calls.includes("agent cgroup pool-agent-x"));
  });

  it("never touches an object without the managed label, even one a listing returns", async () => {
    const { clock, node, inventory, janitor, old } = setup();
    inventory.set([], []);
    node.add({ id: "user", labels: { [LABEL_AGENT]: "dead-0", [LABEL_SANDBOX_ID]: "user" }, changedAtMs: old });
    await janitor.runPass();
    clock.ms += WINDOW * 2;
    const result = await janitor.runPass();
    assert.deepEqual(result.removed, []);
    assert.deepEqual(node.calls, []);
  });

  it("keeps the container when a step fails, so a later pass finishes the job", async () => {
    const { node, inventory, janitor, labels, old } = setup();
    inventory.set(["live-0"], []);
    node.add({ id: "stuck", labels: labels("live-0", "stuck"), changedAtMs: old });
    node.failTaskRemoval = true;
    const failed = await janitor.runPass();
    assert.equal(failed.outcome, "completed");
    assert.equal(failed.failures, 1);
    assert.deepEqual(failed.reclaimed.record_gone, 0);
    assert.ok(node.containers.has("stuck") && node.snapshots.has("stuck"));
    assert.match(await janitor.metrics.text(), /fsb_janitor_reclaim_failures_total\{reason="record_gone"\} 1/);

    node.failTaskRemoval = false;
    const retried = await janitor.runPass();
    assert.equal(retried.reclaimed.record_gone, 1);
    assert.deepEqual(node.calls, ["task stuck", "snapshot stuck", "container stuck"]);
  });

  it("kills the cgroup's processes of a task that outlives SIGKILL (a restored gVisor copy), waits again, then goes on", async () => {
    const { node, host, inventory, janitor, labels, old } = setup();
    inventory.set(["live-0"], []);
    node.add({ id: "copy", labels: labels("live-0", "copy"), changedAtMs: old, cgroupsPath: "/fsb/live-0/sandboxes/copy", stuck: true });
    host.cgroups.add("/fsb/live-0/sandboxes/copy");
    const result = await janitor.runPass();
    assert.equal(result.failures, 0);
    assert.equal(result.reclaimed.record_gone, 1);
    assert.deepEqual(node.calls, [
      "kill cgroup /fsb/live-0/sandboxes/copy",
      "task copy",
      "cgroup /fsb/live-0/sandboxes/copy",
      "snapshot copy",
      "container copy",
    ]);
    assert.deepEqual(
      result.removed.map((object) => object.kind),
      ["task", "cgroup", "snapshot", "container"],
    );
  });

  it("keeps a container whose task survives even the kill of its cgroup's processes, for a later pass", async () => {
    const { node, host, inventory, janitor, labels, old } = setup();
    inventory.set(["live-0"], []);
    node.add({ id: "copy", labels: labels("live-0", "copy"), changedAtMs: old, cgroupsPath: "/fsb/live-0/sandboxes/copy", stuck: true });
    host.cgroups.add("/fsb/live-0/sandboxes/copy");
    host.killEndsStuckTasks = false;
    const result = await janitor.runPass();
    assert.equal(result.failures, 1);
    assert.deepEqual(node.calls, ["kill cgroup /fsb/live-0/sandboxes/copy"]);
    assert.ok(node.containers.has("copy") && host.cgroups.has("/fsb/live-0/sandboxes/copy"));
  });

  it("kills no cgroup that is not the stuck container's own", async () => {
    const { node, host, inventory, janitor, labels, old } = setup();
    inventory.set(["live-0"], []);
    node.add({ id: "a", labels: labels("live-0", "a"), changedAtMs: old, cgroupsPath: "/system.slice/sshd.service", stuck: true });
    const result = await janitor.runPass();
    assert.equal(result.failures, 1);
    assert.deepEqual(node.calls, []);
    assert.ok(host.cgroups.size === 0 && node.containers.has("a"));
  });

  it("removes the pull leases of an agent gone for a window (with what they alone kept), never a live agent's or a young one", async () => {
    const { clock, node, inventory, janitor, old } = setup();
    const leaseLabels = (agent: string) => ({ [LABEL_MANAGED]: "true", [LABEL_AGENT]: agent, [LABEL_ROLE]: ROLE_PULL_LEASE });
    inventory.set(["live-0"], []);
    node.leases.set("fsb-pull-dead", { id: "fsb-pull-dead", labels: leaseLabels("dead-0"), changedAtMs: old });
    node.leases.set("fsb-pull-live", { id: "fsb-pull-live", labels: leaseLabels("live-0"), changedAtMs: old });
    node.leases.set("fsb-pull-unknown-role", {
      id: "fsb-pull-unknown-role",
      labels: { [LABEL_MANAGED]: "true", [LABEL_AGENT]: "dead-0", [LABEL_ROLE]: "other" },
      changedAtMs: old,
    });

    // A lease is all that is left of dead-0: that makes it a candidate, whose absence starts now.
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += WINDOW;
    // One made just now (a pull of an agent of that name starting again would be in the inventory, but the window holds anyway).
    node.leases.set("fsb-pull-young", { id: "fsb-pull-young", labels: leaseLabels("dead-0"), changedAtMs: clock.ms });
    const result = await janitor.runPass();
    assert.deepEqual(
      result.removed.filter((object) => object.kind === "lease"),
      [{ kind: "lease", reason: "agent_gone", containerdNamespace: "ns", agent: "dead-0", id: "fsb-pull-dead" }],
    );
    assert.equal(result.protectedOrphans, 1, "the young lease waits for a later pass");
    assert.deepEqual([...node.leases.keys()].sort(), ["fsb-pull-live", "fsb-pull-unknown-role", "fsb-pull-young"]);
    assert.match(await janitor.metrics.text(), /fsb_janitor_objects_removed_total\{kind="lease",reason="agent_gone"\} 1/);

    clock.ms += WINDOW;
    assert.deepEqual(
      (await janitor.runPass()).removed.filter((object) => object.kind === "lease").map((object) => object.id),
      ["fsb-pull-young"],
    );
  });

  it("removes a managed snapshot whose container was never created", async () => {
    const { node, inventory, janitor, labels, old } = setup();
    inventory.set(["live-0"], ["kept"]);
    node.snapshots.set("half", { snapshotter: "overlayfs", key: "half", labels: labels("live-0", "half"), changedAtMs: old });
    node.snapshots.set("kept", { snapshotter: "overlayfs", key: "kept", labels: labels("live-0", "kept"), changedAtMs: old });
    const result = await janitor.runPass();
    assert.deepEqual(result.reclaimed.record_gone, 1);
    assert.deepEqual(node.calls, ["snapshot half"]);
  });

  it("does not follow a cgroups path that is not the container's own", async () => {
    const { node, host, inventory, janitor, labels, old } = setup();
    inventory.set(["live-0"], []);
    node.add({ id: "a", labels: labels("live-0", "a"), changedAtMs: old, cgroupsPath: "/system.slice/sshd.service" });
    host.cgroups.add("/system.slice/sshd.service");
    await janitor.runPass();
    assert.ok(host.cgroups.has("/system.slice/sshd.service"));
    assert.deepEqual(node.calls, ["task a", "snapshot a", "container a"]);
  });
});

describe("Janitor.runPass across passes", () => {
  it("does not count passes that could not read the inventory towards an agent's absence", async () => {
    const { clock, node, inventory, janitor, labels, old } = setup();
    inventory.set([], ["a"]);
    node.add({ id: "a", labels: labels("dead-0", "a"), changedAtMs: old });
    // Missing once, then nothing is known of it for longer than a window.
    assert.deepEqual((await janitor.runPass()).removed, []);
    inventory.down = true;
    for (let pass = 0; pass < 3; pass++) {
      clock.ms += WINDOW;
      assert.equal((await janitor.runPass()).outcome, "inventory_unavailable");
    }
    inventory.down = false;
    clock.ms += 1;
    // Its absence starts over at the first read that succeeds: not gone yet.
    const back = await janitor.runPass();
    assert.equal(back.outcome, "completed");
    assert.deepEqual(back.removed, []);
    assert.ok(node.containers.has("a"));
    clock.ms += WINDOW;
    assert.equal((await janitor.runPass()).reclaimed.agent_gone, 1);
  });

  it("keeps the files of a sandbox whose bare snapshot (under a mapped key) could not be removed, by its sandbox id", async () => {
    const { clock, node, host, inventory, janitor, labels, old } = setup();
    const sandboxId = "default.a--b.a1b2c3";
    const key = containerIdOf(sandboxId);
    assert.notEqual(key, sandboxId);
    inventory.set([], [sandboxId]);
    node.snapshots.set(key, { snapshotter: "overlayfs", key, labels: labels("dead-0", sandboxId), changedAtMs: old });
    await janitor.runPass();
    clock.ms += WINDOW;
    node.failSnapshotRemoval = true;
    const result = await janitor.runPass();
    assert.equal(result.failures, 1);
    assert.ok(node.snapshots.has(key));
    assert.deepEqual(host.keptSandboxIds.get("dead-0"), [sandboxId]);
  });
});

/** Temporary directories of the cases below, removed at the end. */
const roots: string[] = [];
after(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});
function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  roots.push(dir);
  return dir;
}

/** A cgroup mount with `cgroups` in it: v2, one tree; v1, a directory per hierarchy (no freezer). */
function cgroupMount(version: 1 | 2, cgroups: string[]): { mount: string; hierarchies: string[] } {
  const mount = tempDir(`fsb-janitor-cgroup-v${version}-`);
  if (version === 2) writeFileSync(join(mount, "cgroup.controllers"), "cpu memory pids\n");
  const hierarchies = version === 2 ? [mount] : ["cpu,cpuacct", "memory", "pids"].map((hierarchy) => join(mount, hierarchy));
  for (const hierarchy of hierarchies) for (const cgroup of cgroups) mkdirSync(join(hierarchy, cgroup), { recursive: true });
  return { mount, hierarchies };
}

/** The janitor over containerd in memory and the real LocalHostLeftovers on test directories; the clock at the real time, for files' ages. */
function setupOnHost(options: LocalHostLeftoversOptions) {
  const base = setup();
  base.clock.ms = Date.now();
  const host = new LocalHostLeftovers({ cgroupDrainTimeoutMs: 100, ...options });
  const janitor = new Janitor({ inventory: base.inventory, nodes: [base.node], host, clock: base.clock, protectionMs: WINDOW, logger });
  return { ...base, old: base.clock.ms - WINDOW * 2, host, janitor };
}

describe("Janitor.runPass on cgroups left without their container", () => {
  const cgroups = [
    // An agent with a cgroup of its own (the embedded mode): its process's, and its sandboxes' parent.
    "fsb/live-0/agent",
    "fsb/live-0/sandboxes/kept",
    "fsb/live-0/sandboxes/left/nested",
    "fsb/live-0/sandboxes/fsb-anchor-0",
    // An agent without (the Kubernetes mode): its containers' cgroups in its own.
    "fsb/pool-agent-x/kept-too",
    "fsb/pool-agent-x/left-too",
    "fsb/pool-agent-x/fsb-anchor-1",
    // No agent the janitor knows of: nothing in it is looked at.
    "fsb/stranger/sandboxes/left",
    "fsb/stranger/left",
  ];

  for (const version of [2, 1] as const) {
    it(`v${version}: empties and removes a live agent's sandbox cgroups whose container is gone, a window after it first saw them, in either layout`, async () => {
      const { mount, hierarchies } = cgroupMount(version, cgroups);
      const { clock, node, inventory, janitor, labels, old } = setupOnHost({ cgroupMount: mount, cgroupRoot: "fsb" });
      inventory.set(["live-0", "pool-agent-x"], ["kept", "kept-too"]);
      node.add({ id: "kept", labels: labels("live-0", "kept"), changedAtMs: old, cgroupsPath: "/fsb/live-0/sandboxes/kept" });
      node.add({ id: "kept-too", labels: labels("pool-agent-x", "kept-too"), changedAtMs: old, cgroupsPath: "/fsb/pool-agent-x/kept-too" });

      // However long they have been there, the window runs from the janitor's first sight.
      const first = await janitor.runPass();
      assert.deepEqual(first.removed, []);
      assert.equal(first.protectedOrphans, 2);

      clock.ms += WINDOW;
      const later = await janitor.runPass();
      assert.equal(later.failures, 0);
      assert.deepEqual(
        later.removed.map((object) => `${object.reason} ${object.kind} ${object.agent} ${object.id}`).sort(),
        hierarchies
          .flatMap((hierarchy) => [
            `record_gone cgroup live-0 ${join(hierarchy, "fsb/live-0/sandboxes/left")}`,
            `record_gone cgroup live-0 ${join(hierarchy, "fsb/live-0/sandboxes/left/nested")}`,
            `record_gone cgroup pool-agent-x ${join(hierarchy, "fsb/pool-agent-x/left-too")}`,
          ])
          .sort(),
      );
      // Cgroups are objects removed, not orphans of their own.
      assert.deepEqual(later.reclaimed, { agent_gone: 0, record_gone: 0, anchor_orphaned: 0, prepared_orphaned: 0 });
      for (const hierarchy of hierarchies) {
        for (const cgroup of cgroups.filter((cgroup) => !cgroup.startsWith("fsb/live-0/sandboxes/left") && cgroup !== "fsb/pool-agent-x/left-too")) {
          assert.ok(existsSync(join(hierarchy, cgroup)), `${cgroup} stays`);
        }
      }
      assert.deepEqual(node.calls, []);
      assert.deepEqual((await janitor.runPass()).removed, []);
    });
  }

  it("starts a cgroup's window over when its container shows up again", async () => {
    const { mount } = cgroupMount(2, ["fsb/live-0/sandboxes/a", "fsb/live-0/sandboxes/b"]);
    const { clock, node, inventory, janitor, labels } = setupOnHost({ cgroupMount: mount, cgroupRoot: "fsb" });
    inventory.set(["live-0"], ["a"]);
    assert.equal((await janitor.runPass()).protectedOrphans, 2);
    // a's container is listed (say a listing that raced a create): a is no orphan in this pass.
    node.add({ id: "a", labels: labels("live-0", "a"), changedAtMs: clock.ms });
    clock.ms += WINDOW / 2;
    assert.equal((await janitor.runPass()).protectedOrphans, 1);
    node.containers.delete("a");
    clock.ms += WINDOW / 2;
    // A window after the first sight of both: b goes, a's window started over a pass ago.
    const result = await janitor.runPass();
    assert.deepEqual(
      result.removed.map((object) => object.id),
      [join(mount, "fsb/live-0/sandboxes/b")],
    );
    assert.equal(result.protectedOrphans, 1);
    clock.ms += WINDOW;
    assert.deepEqual(
      (await janitor.runPass()).removed.map((object) => object.id),
      [join(mount, "fsb/live-0/sandboxes/a")],
    );
  });

  it("starts every cgroup's window over after passes that could not read the inventory", async () => {
    const { mount } = cgroupMount(2, ["fsb/live-0/sandboxes/c"]);
    const { clock, inventory, janitor } = setupOnHost({ cgroupMount: mount, cgroupRoot: "fsb" });
    inventory.set(["live-0"], []);
    assert.equal((await janitor.runPass()).protectedOrphans, 1);
    inventory.down = true;
    clock.ms += WINDOW;
    assert.equal((await janitor.runPass()).outcome, "inventory_unavailable");
    inventory.down = false;
    clock.ms += 1;
    const back = await janitor.runPass();
    assert.deepEqual(back.removed, []);
    assert.equal(back.protectedOrphans, 1);
    clock.ms += WINDOW;
    assert.deepEqual(
      (await janitor.runPass()).removed.map((object) => object.id),
      [join(mount, "fsb/live-0/sandboxes/c")],
    );
  });
});

describe("Janitor.runPass on what changes while the pass runs", () => {
  const preparedLabels = (agent: string) => ({ [LABEL_MANAGED]: "true", [LABEL_AGENT]: agent, [LABEL_ROLE]: ROLE_PREPARED_INSTANCE });

  it("leaves the shim anchor a new agent of the same name adopted during the pass, its cgroup and the agent's own", async () => {
    const { clock, node, host, inventory, janitor, anchorLabels, old } = setup();
    inventory.set(["default-0"], []);
    // What the previous `default-1` left: a prepared instance, and its anchor.
    node.add({ id: "sb-left", labels: preparedLabels("default-1"), changedAtMs: old, cgroupsPath: "/fsb/default-1/sandboxes/sb-left" });
    node.add({
      id: "fsb-anchor.default-1.0",
      labels: anchorLabels("default-1"),
      changedAtMs: old,
      snapshot: false,
      cgroupsPath: "/fsb/default-1/sandboxes/fsb-anchor-0",
    });
    host.cgroups.add("/fsb/default-1/sandboxes/sb-left").add("/fsb/default-1/sandboxes/fsb-anchor-0");
    host.agentCgroups.add("default-1");
    host.agentDirs = ["default-0", "default-1"];
    await janitor.runPass();
    clock.ms += WINDOW;
    // While the pass removes the first leftover, the pool starts `default-1` again (the lowest free
    // number): it registers, and adopts its anchor by a label update.
    node.onRemoveTask = (id) => {
      if (id !== "sb-left") return;
      inventory.set(["default-0", "default-1"], []);
      const anchor = node.containers.get("fsb-anchor.default-1.0");
      if (anchor) Object.assign(anchor, { changedAtMs: clock.ms, labels: { ...anchor.labels, "fast-sandbox.io/adopted-at": String(clock.ms) } });
    };
    const result = await janitor.runPass();
    assert.deepEqual(result.reclaimed, { agent_gone: 0, record_gone: 0, anchor_orphaned: 0, prepared_orphaned: 1 });
    assert.deepEqual(node.calls, ["task sb-left", "cgroup /fsb/default-1/sandboxes/sb-left", "snapshot sb-left", "container sb-left"]);
    assert.ok(node.containers.get("fsb-anchor.default-1.0")?.task, "the adopted anchor runs on");
    assert.ok(host.cgroups.has("/fsb/default-1/sandboxes/fsb-anchor-0"), "its cgroup stays");
    assert.ok(host.agentCgroups.has("default-1"), "the live agent's own cgroup stays");
    assert.ok(!host.keptSandboxIds.has("default-1"), "its files are not looked at");
    assert.deepEqual(host.agentDirs, ["default-0", "default-1"]);
    // The agent lives: later passes leave its anchor alone.
    node.onRemoveTask = undefined;
    clock.ms += WINDOW;
    assert.deepEqual((await janitor.runPass()).removed, []);
  });

  it("leaves a sandbox whose agent came back under its name during the pass (it adopts them unchanged)", async () => {
    const { clock, node, host, inventory, janitor, labels, old } = setup();
    inventory.set([], ["a", "b"]);
    node.add({ id: "a", labels: labels("default-1", "a"), changedAtMs: old });
    node.add({ id: "b", labels: labels("default-1", "b"), changedAtMs: old, cgroupsPath: "/fsb/default-1/sandboxes/b" });
    host.cgroups.add("/fsb/default-1/sandboxes/b");
    host.agentCgroups.add("default-1");
    await janitor.runPass();
    clock.ms += WINDOW;
    node.onRemoveTask = (id) => {
      if (id !== "a") return;
      // The removal takes its time; meanwhile `default-1` starts again and registers.
      clock.ms += INVENTORY_RECHECK_MS;
      inventory.set(["default-1"], ["a", "b"]);
    };
    const result = await janitor.runPass();
    assert.equal(result.reclaimed.agent_gone, 1);
    assert.deepEqual(node.calls, ["task a", "snapshot a", "container a"]);
    assert.ok(node.containers.get("b")?.task && host.cgroups.has("/fsb/default-1/sandboxes/b"));
    assert.ok(host.agentCgroups.has("default-1"));
  });

  it("leaves an anchor a Pod replaced under the same name made again under the same id during the pass", async () => {
    const { node, inventory, janitor, labels, anchorLabels, old } = setup();
    const uid = (value: string) => ({ [LABEL_AGENT_UID]: value });
    inventory.set(["pool-agent-x"], [], { "pool-agent-x": "uid-new" });
    node.add({ id: "stale", labels: { ...labels("pool-agent-x", "stale"), ...uid("uid-old") }, changedAtMs: old });
    node.add({ id: "fsb-anchor.pool-agent-x.0", labels: { ...anchorLabels("pool-agent-x"), ...uid("uid-old") }, changedAtMs: old, snapshot: false });
    node.onRemoveTask = (id) => {
      if (id !== "stale") return;
      node.containers.delete("fsb-anchor.pool-agent-x.0");
      node.add({ id: "fsb-anchor.pool-agent-x.0", labels: { ...anchorLabels("pool-agent-x"), ...uid("uid-new") }, changedAtMs: old, snapshot: false });
    };
    const result = await janitor.runPass();
    assert.deepEqual(result.reclaimed, { agent_gone: 1, record_gone: 0, anchor_orphaned: 0, prepared_orphaned: 0 });
    assert.deepEqual(node.containers.get("fsb-anchor.pool-agent-x.0")?.labels[LABEL_AGENT_UID], "uid-new");
    assert.ok(node.containers.get("fsb-anchor.pool-agent-x.0")?.task);
  });

  it("cleans up no gone agent's cgroup or files when the inventory cannot be read again before it", async () => {
    const { node, host, inventory, clock, old, labels } = setup();
    inventory.set([], ["a"]);
    node.add({ id: "a", labels: labels("dead-0", "a"), changedAtMs: old });
    host.agentCgroups.add("dead-0");
    host.agentDirs = ["dead-0"];
    let reads = 0;
    let failFrom = Infinity;
    const flaky: Inventory = { read: () => (++reads >= failFrom ? Promise.reject(new UnavailableError("control plane down")) : inventory.read()) };
    const janitor = new Janitor({ inventory: flaky, nodes: [node], host, clock, protectionMs: WINDOW, logger });
    await janitor.runPass();
    clock.ms += WINDOW;
    // The read at the pass's start succeeds, the one before the agent's own clean-up fails.
    failFrom = reads + 2;
    const result = await janitor.runPass();
    assert.equal(result.reclaimed.agent_gone, 1);
    assert.ok(host.agentCgroups.has("dead-0") && host.agentDirs.includes("dead-0"));
    assert.ok(!host.keptSandboxIds.has("dead-0"));
    failFrom = Infinity;
    clock.ms += 1;
    await janitor.runPass();
    assert.ok(!host.agentCgroups.has("dead-0"));
  });

  it("keeps a leftover cgroup whose container was made again under the same id during the pass (a paused sandbox resumed)", async () => {
    const { mount } = cgroupMount(2, ["fsb/live-0/sandboxes/paused-x"]);
    const { clock, node, inventory, janitor, labels } = setupOnHost({ cgroupMount: mount, cgroupRoot: "fsb" });
    inventory.set(["live-0"], ["paused-x"]);
    // Its pause deleted the container; the rmdir of its cgroup failed.
    assert.equal((await janitor.runPass()).protectedOrphans, 1);
    // Another orphan the next pass reclaims first.
    node.add({ id: "gone-y", labels: labels("live-0", "gone-y"), changedAtMs: clock.ms - 10 * WINDOW });
    clock.ms += WINDOW;
    node.onRemoveTask = (id) => {
      if (id === "gone-y")
        node.add({ id: "paused-x", labels: labels("live-0", "paused-x"), changedAtMs: clock.ms, cgroupsPath: "/fsb/live-0/sandboxes/paused-x" });
    };
    const result = await janitor.runPass();
    assert.equal(result.reclaimed.record_gone, 1);
    assert.ok(!result.removed.some((object) => object.kind === "cgroup"));
    assert.ok(existsSync(join(mount, "fsb/live-0/sandboxes/paused-x")), "the resumed sandbox's cgroup stays");
  });
});

describe("Janitor.runPass on what a gone agent left on the host", () => {
  it("removes its state directory in the pass after the one that reclaimed the rest, and never a live agent's", async () => {
    const agentsDir = tempDir("fsb-janitor-agents-");
    for (const agent of ["dead-0", "live-0"]) {
      mkdirSync(join(agentsDir, agent, "logs"), { recursive: true });
      writeFileSync(join(agentsDir, agent, "agent.log"), "");
    }
    const { clock, node, inventory, janitor, labels, old } = setupOnHost({ agentsDir });
    inventory.set(["live-0"], ["a"]);
    node.add({ id: "a", labels: labels("dead-0", "a"), changedAtMs: old });
    await janitor.runPass();
    clock.ms += WINDOW;
    node.failTaskRemoval = true;
    // Its sandbox is still there: so is everything of it on the host.
    assert.equal((await janitor.runPass()).failures, 1);
    node.failTaskRemoval = false;
    clock.ms += 1;
    const reclaimed = await janitor.runPass();
    assert.equal(reclaimed.reclaimed.agent_gone, 1);
    assert.ok(!reclaimed.removed.some((object) => object.kind === "state_dir"));
    clock.ms += 1;
    const next = await janitor.runPass();
    assert.deepEqual(
      next.removed.map((object) => `${object.reason} ${object.kind} ${object.agent} ${object.id}`),
      [`agent_gone state_dir dead-0 ${join(agentsDir, "dead-0")}`],
    );
    assert.deepEqual(readdirSync(agentsDir), ["live-0"]);
    // No agent is left to look at: a later pass does nothing.
    clock.ms += WINDOW * 10;
    assert.deepEqual((await janitor.runPass()).removed, []);
    assert.deepEqual(readdirSync(agentsDir), ["live-0"]);
  });

  it("leaves the state directory while the agent's cgroup is still there", async () => {
    const agentsDir = tempDir("fsb-janitor-agents-");
    mkdirSync(join(agentsDir, "dead-0"));
    const { mount } = cgroupMount(2, ["fsb/dead-0/agent"]);
    // A file in the fake cgroup stands for a process in it: rmdir fails.
    writeFileSync(join(mount, "fsb/dead-0/agent/busy"), "");
    const { clock, inventory, janitor } = setupOnHost({ agentsDir, cgroupMount: mount, cgroupRoot: "fsb" });
    inventory.set([], []);
    await janitor.runPass();
    clock.ms += WINDOW;
    assert.deepEqual((await janitor.runPass()).removed, []);
    assert.ok(existsSync(join(agentsDir, "dead-0")));
    rmSync(join(mount, "fsb/dead-0/agent/busy"));
    clock.ms += 1;
    assert.deepEqual(
      (await janitor.runPass()).removed.map((object) => `${object.kind} ${object.id}`),
      [`cgroup ${join(mount, "fsb/dead-0/agent")}`, `cgroup ${join(mount, "fsb/dead-0")}`, `state_dir ${join(agentsDir, "dead-0")}`],
    );
  });

  it("removes the name of its Shared network namespace once its sandboxes are reclaimed, and no live agent's", async () => {
    const netnsDir = tempDir("fsb-janitor-netns-");
    for (const name of ["fsb-agent-pool-agent-a", "fsb-agent-pool-agent-b"]) writeFileSync(join(netnsDir, name), "");
    const deleted: string[] = [];
    const deleteNetns = (name: string) => {
      deleted.push(name);
      rmSync(join(netnsDir, name));
      return Promise.resolve();
    };
    const { clock, node, inventory, janitor, labels, old } = setupOnHost({ netnsDir, deleteNetns });
    inventory.set(["pool-agent-b"], ["s", "t"]);
    node.add({ id: "s", labels: labels("pool-agent-a", "s"), changedAtMs: old });
    node.add({ id: "t", labels: labels("pool-agent-b", "t"), changedAtMs: old });
    await janitor.runPass();
    clock.ms += WINDOW;
    // Its Shared sandbox still runs in the namespace: the name stays with it.
    node.failTaskRemoval = true;
    await janitor.runPass();
    assert.deepEqual(deleted, []);
    node.failTaskRemoval = false;
    clock.ms += 1;
    const result = await janitor.runPass();
    assert.deepEqual(
      result.removed.map((object) => `${object.kind} ${object.id}`),
      ["task s", "snapshot s", "container s", `network ${join(netnsDir, "fsb-agent-pool-agent-a")}`],
    );
    assert.equal(result.removed.at(-1)?.reason, "agent_gone");
    assert.deepEqual(deleted, ["fsb-agent-pool-agent-a"]);
    assert.deepEqual(readdirSync(netnsDir), ["fsb-agent-pool-agent-b"]);
  });
});

describe("Janitor.start", () => {
  it("runs passes until stopped", async () => {
    const { node, inventory, labels, clock } = setup();
    inventory.set(["live-0"], []);
    let passes = 0;
    const counting: Inventory = { read: () => ((passes += 1), inventory.read()) };
    const janitor = new Janitor({ inventory: counting, nodes: [node], clock, protectionMs: 0, intervalMs: 5, logger });
    node.add({ id: "a", labels: labels("live-0", "a"), changedAtMs: clock.ms });
    janitor.start();
    const deadline = Date.now() + 5_000;
    while (passes < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    await janitor.stop();
    const stoppedAt = passes;
    assert.ok(stoppedAt >= 3, `only ${stoppedAt} passes ran`);
    assert.equal(node.containers.size, 0);
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(passes, stoppedAt);
  });
});

/** The node's sandbox network namespaces in memory; removals are appended to the node's calls. */
class FakeNetworks implements NodeNetworks {
  attachments = new Map<string, NetworkAttachmentFacts>();
  failRemoval = false;
  constructor(private readonly calls: string[]) {}
  add(attachment: Partial<NetworkAttachmentFacts> & Pick<NetworkAttachmentFacts, "id" | "agent" | "state" | "changedAtMs">): void {
    this.attachments.set(attachment.id, { network: "fsb0", containerdNamespace: "ns", ...attachment });
  }
  listAttachments(): Promise<NetworkAttachmentFacts[]> {
    return Promise.resolve([...this.attachments.values()]);
  }
  removeAttachment(attachment: NetworkAttachmentFacts): Promise<boolean> {
    if (this.failRemoval) return Promise.reject(new Error("CNI DEL failed"));
    if (!this.attachments.delete(attachment.id)) return Promise.resolve(false);
    this.calls.push(`network ${attachment.id}`);
    return Promise.resolve(true);
  }
}

describe("Janitor.runPass on sandbox network namespaces", () => {
  function setupWithNetworks() {
    const base = setup();
    const networks = new FakeNetworks(base.node.calls);
    const janitor = new Janitor({ inventory: base.inventory, nodes: [base.node], host: base.host, networks, clock: base.clock, protectionMs: WINDOW, logger });
    return { ...base, networks, janitor };
  }

  it("tears down a gone agent's namespaces, prepared and claimed, after its sandboxes, once the window has passed", async () => {
    const { clock, node, networks, inventory, janitor, labels, old } = setupWithNetworks();
    inventory.set(["live-0"], ["a"]);
    node.add({ id: "a", labels: labels("dead-0", "a"), changedAtMs: old });
    networks.add({ id: "aaaaaaaaaaaa", agent: "dead-0", state: "claimed", sandboxId: "a", changedAtMs: old });
    networks.add({ id: "bbbbbbbbbbbb", agent: "dead-0", state: "prepared", changedAtMs: old });
    networks.add({ id: "cccccccccccc", agent: "live-0", state: "prepared", changedAtMs: old });
    assert.deepEqual((await janitor.runPass()).removed, []);
    clock.ms += WINDOW;

    const result = await janitor.runPass();
    assert.deepEqual(node.calls, ["task a", "snapshot a", "container a", "network aaaaaaaaaaaa", "network bbbbbbbbbbbb"]);
    assert.deepEqual(
      result.removed.filter((object) => object.kind === "network").map((object) => `${object.reason} ${object.id} ${object.sandboxId ?? "-"}`),
      ["agent_gone aaaaaaaaaaaa a", "agent_gone bbbbbbbbbbbb -"],
    );
    // Namespaces are objects removed, not orphans of their own.
    assert.deepEqual(result.reclaimed, { agent_gone: 1, record_gone: 0, anchor_orphaned: 0, prepared_orphaned: 0 });
    assert.deepEqual([...networks.attachments.keys()], ["cccccccccccc"]);
    assert.match(await janitor.metrics.text(), /fsb_janitor_objects_removed_total\{kind="network",reason="agent_gone"\} 2/);
  });

  it("an agent that only has namespaces left still counts as gone once it is missing for a window", async () => {
    const { clock, networks, inventory, janitor, old } = setupWithNetworks();
    inventory.set([], []);
    networks.add({ id: "aaaaaaaaaaaa", agent: "dead-0", state: "prepared", changedAtMs: old });
    await janitor.runPass();
    clock.ms += WINDOW;
    await janitor.runPass();
    assert.equal(networks.attachments.size, 0);
  });

  it("a live agent's namespace goes only when its sandbox has neither a record nor a container, and after the window", async () => {
    const { clock, node, networks, inventory, janitor, labels, old } = setupWithNetworks();
    inventory.set(["live-0"], ["recorded"]);
    node.add({ id: "recorded", labels: labels("live-0", "recorded"), changedAtMs: old });
    node.add({ id: "young", labels: labels("live-0", "young"), changedAtMs: clock.ms });
    networks.add({ id: "000000000001", agent: "live-0", state: "claimed", sandboxId: "recorded", changedAtMs: old });
    // Its record is gone but its container is younger than the window: both stay.
    networks.add({ id: "000000000002", agent: "live-0", state: "claimed", sandboxId: "young", changedAtMs: old });
    // No record, no container: its delete was cut short.
    networks.add({ id: "000000000003", agent: "live-0", state: "claimed", sandboxId: "vanished", changedAtMs: old });
    // Claimed a moment ago by a create in flight (no container yet).
    networks.add({ id: "000000000004", agent: "live-0", state: "claimed", sandboxId: "creating", changedAtMs: clock.ms });
    networks.add({ id: "000000000005", agent: "live-0", state: "prepared", changedAtMs: old });
    networks.add({ id: "000000000006", agent: "live-0", state: "claimed", sandboxId: "elsewhere", containerdNamespace: "other-ns", changedAtMs: old });

    const result = await janitor.runPass();
    assert.deepEqual(
      result.removed.filter((object) => object.kind === "network").map((object) => `${object.reason} ${object.id}`),
      ["record_gone 000000000003"],
    );
    assert.deepEqual([...networks.attachments.keys()], ["000000000001", "000000000002", "000000000004", "000000000005", "000000000006"]);
    assert.equal(result.protectedOrphans, 2);

    // Once the young container is reclaimed, its namespace goes in the same pass.
    clock.ms += WINDOW;
    const later = await janitor.runPass();
    assert.deepEqual(
      later.removed.filter((object) => object.kind !== "network").map((object) => `${object.kind} ${object.id}`),
      ["task young", "snapshot young", "container young"],
    );
    assert.deepEqual(
      later.removed.filter((object) => object.kind === "network").map((object) => `${object.reason} ${object.id}`),
      ["record_gone 000000000002", "record_gone 000000000004"],
    );
  });

  it("a teardown that fails is counted and retried by a later pass", async () => {
    const { clock, networks, inventory, janitor, old } = setupWithNetworks();
    inventory.set(["live-0"], []);
    networks.add({ id: "aaaaaaaaaaaa", agent: "live-0", state: "claimed", sandboxId: "gone", changedAtMs: old });
    networks.failRemoval = true;
    const failed = await janitor.runPass();
    assert.equal(failed.failures, 1);
    assert.equal(networks.attachments.size, 1);
    networks.failRemoval = false;
    clock.ms += 1;
    await janitor.runPass();
    assert.equal(networks.attachments.size, 0);
  });
});
