/**
 * The janitor: periodically removes what Fast Sandbox left behind on a node and nothing else.
 *
 * Each pass reads the inventory (agents, sandbox records) first, then lists the managed containers
 * and snapshots of its containerd namespaces, judges each (orphans.ts), and reclaims the orphans
 * older than the protection window: task, cgroup, the sandbox's files, snapshot, and the container
 * last, so a pass that fails half-way leaves the container as the note of what is left to do and a
 * later pass finishes it. Then the sandbox network namespaces of gone agents and of sandboxes gone
 * for good (no record, no container) are torn down, their record last for the same reason. Then the
 * cgroups under the agents' own that are named after containers no longer there (an agent's delete
 * removes a sandbox's cgroup with one rmdir, which a process still in it defeats). Last, what gone
 * agents left on the host: files, their own cgroups, their Shared network namespace's name, and
 * their state directory, the janitor's note that the agent existed, in a pass that found nothing
 * else of them. The checkpoint directories of pools gone for good (pool-checkpoints.ts says which)
 * go too. Every step is idempotent. When the inventory cannot be
 * read the pass removes nothing.
 *
 * A pass lasts (each task removal may wait seconds), so it does not act on a verdict as old as its
 * start: just before removing a container it fetches it again and leaves it to a later pass when it
 * went or changed meanwhile (a new agent of the same name adopts its anchor by an update, a Pod
 * replaced under the same name makes the anchor again under the same id); before acting on any
 * verdict it reads the inventory again once its view is INVENTORY_RECHECK_MS old, and always
 * before a gone agent's own files and cgroup, so an agent that came back under its name keeps what
 * it took; a leftover cgroup goes only while no container of its name exists (a paused sandbox
 * resumed keeps its container id). A read that fails then ends the removals of the pass.
 */
import type { Logger } from "pino";
import { FsbError } from "@fast-sandbox/api/core";
import { LABEL_AGENT } from "@fast-sandbox/agent";
import { systemClock, type Clock } from "./clock.js";
import type { HostLeftovers } from "./host-leftovers.js";
import type { Inventory, InventorySnapshot } from "./inventory.js";
import { JanitorMetrics, type PassOutcome, type RemovalReason, type RemovedKind } from "./metrics.js";
import type { ManagedContainer, ManagedSnapshot, NodeContainers } from "./node-containers.js";
import type { NodeNetworks } from "./node-networks.js";
import type { PoolCheckpointDirs } from "./pool-checkpoint-dirs.js";
import { judgePoolCheckpointDir, poolKey, type PoolCheckpointDirFacts } from "./pool-checkpoints.js";
import {
  AgentAbsence,
  ORPHAN_REASONS,
  Sightings,
  isShimAnchor,
  judge,
  judgeAttachment,
  sandboxCgroupContainerId,
  sandboxCgroupOrphanReason,
  sandboxIdOf,
  type JudgeContext,
  type OrphanReason,
  type SandboxCgroupJudgeContext,
} from "./orphans.js";

export const DEFAULT_PROTECTION_MS = 120_000;
export const DEFAULT_INTERVAL_MS = 10_000;
/**
 * How long a pool must have been absent, and its checkpoint directory unchanged, before the
 * directory goes: a pool deleted and created again within it keeps its checkpoints.
 */
export const DEFAULT_CHECKPOINT_GRACE_MS = 60 * 60_000;
/**
 * How old the pass's view of the inventory may be when it acts on a verdict: older, it is read
 * again first (an agent may have come back under its name since), at most this often.
 */
export const INVENTORY_RECHECK_MS = 1_000;

/** What a pass knows of the inventory, and which agents it holds for gone: fewer as the pass reads it again. */
interface InventoryView {
  inventory: InventorySnapshot;
  goneAgents: ReadonlySet<string>;
  readAtMs: number;
}

export interface JanitorOptions {
  inventory: Inventory;
  /** One per containerd namespace the janitor looks after. */
  nodes: NodeContainers[];
  /** Cgroups and state-directory files; absent: only containerd objects are removed. */
  host?: HostLeftovers;
  /** The node's sandbox network namespaces; absent: none are removed. */
  networks?: NodeNetworks;
  /** The node's pool checkpoint directories; absent (or an inventory that does not list pools): none are removed. */
  checkpoints?: PoolCheckpointDirs;
  /** How long a pool must be gone, and its checkpoint directory unchanged, before the directory goes. @default DEFAULT_CHECKPOINT_GRACE_MS (1 hour) */
  checkpointGraceMs?: number;
  /** @default the system clock */
  clock?: Clock;
  /**
   * How old an orphan must be before it is removed, and how long an agent must be missing from the
   * inventory before it counts as gone. Covers creates in flight and agents that are (re)starting.
   * @default 120_000 (2 minutes)
   */
  protectionMs?: number;
  /** Time between the end of one pass and the start of the next. @default 10_000 */
  intervalMs?: number;
  /** @default a fresh registry */
  metrics?: JanitorMetrics;
  logger: Logger;
}

/** One object a pass removed. */
export interface RemovedObject {
  kind: RemovedKind;
  reason: RemovalReason;
  containerdNamespace?: string;
  /** Container id, snapshot key, lease id, path (cgroup directory, file, checkpoint directory) or network namespace id. */
  id: string;
  /** The agent whose object it was; absent for a pool's checkpoint directory (its pool's agents share it). */
  agent?: string;
  sandboxId?: string;
  /** A checkpoint directory's pool, `<namespace>/<pool>`. */
  pool?: string;
}

export interface PassResult {
  outcome: PassOutcome;
  /** Orphans reclaimed (a container or bare snapshot with everything it held), by reason. Network namespaces count in `removed`. */
  reclaimed: Record<OrphanReason, number>;
  /** Every object removed, in order. */
  removed: RemovedObject[];
  /** Orphans left for a later pass because they are younger than the protection window (and gone pools' checkpoint directories inside their grace period). */
  protectedOrphans: number;
  /** Orphans (and checkpoint directories) that could not be removed completely (a later pass retries). */
  failures: number;
  /** Why the pass did not complete. */
  error?: FsbError;
}

function emptyCounts(): Record<OrphanReason, number> {
  return Object.fromEntries(ORPHAN_REASONS.map((reason) => [reason, 0])) as Record<OrphanReason, number>;
}

export class Janitor {
  readonly metrics: JanitorMetrics;
  private readonly options: JanitorOptions;
  private readonly clock: Clock;
  private readonly protectionMs: number;
  private readonly intervalMs: number;
  private readonly logger: Logger;
  private readonly absence = new AgentAbsence();
  /** Since when each cgroup without its container has been seen so (by its cgroups path). */
  private readonly orphanCgroups = new Sightings();
  /** Since when each checkpoint directory's pool has been missing from the inventory (by its `<namespace>/<pool>`). */
  private readonly absentPools = new Sightings();
  private readonly checkpointGraceMs: number;
  private timer: NodeJS.Timeout | undefined;
  private current: Promise<PassResult> | undefined;
  private readonly stopping = new AbortController();

  constructor(options: JanitorOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.protectionMs = options.protectionMs ?? DEFAULT_PROTECTION_MS;
    this.intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
    this.checkpointGraceMs = options.checkpointGraceMs ?? DEFAULT_CHECKPOINT_GRACE_MS;
    this.metrics = options.metrics ?? new JanitorMetrics();
    this.logger = options.logger.child({ component: "janitor" });
  }

  /** Runs passes until stop(): one now, then one every `intervalMs` after the previous ended. */
  start(): void {
    const loop = () => {
      if (this.stopping.signal.aborted) return;
      this.current = this.runPass(this.stopping.signal);
      void this.current.finally(() => {
        if (!this.stopping.signal.aborted) this.timer = setTimeout(loop, this.intervalMs);
      });
    };
    loop();
  }

  /** Stops the loop and waits for the pass in progress. */
  async stop(): Promise<void> {
    this.stopping.abort();
    if (this.timer) clearTimeout(this.timer);
    await this.current;
  }

  /** One pass; never throws (the outcome says what happened). */
  async runPass(signal?: AbortSignal): Promise<PassResult> {
    const result: PassResult = { outcome: "completed", reclaimed: emptyCounts(), removed: [], protectedOrphans: 0, failures: 0 };
    let inventory: InventorySnapshot;
    try {
      inventory = await this.options.inventory.read(signal);
    } catch (error) {
      result.outcome = "inventory_unavailable";
      result.error = FsbError.from(error);
      // Absences and sightings hold only across passes that saw: what a later read finds starts over.
      this.absence.clear();
      this.orphanCgroups.clear();
      this.absentPools.clear();
      this.logger.warn({ err: result.error }, "cannot read the inventory (is the control plane up?); removing nothing this pass");
      return this.finish(result);
    }
    try {
      await this.sweep(inventory, result, signal);
    } catch (error) {
      result.outcome = "failed";
      result.error = FsbError.from(error);
      this.logger.error({ err: result.error }, "janitor pass failed");
    }
    return this.finish(result);
  }

  private finish(result: PassResult): PassResult {
    this.metrics.passFinished(result.outcome, result.protectedOrphans, this.clock.nowMs());
    return result;
  }

  private async sweep(inventory: InventorySnapshot, result: PassResult, signal: AbortSignal | undefined): Promise<void> {
    const { nodes, host, networks } = this.options;
    // Listed after the inventory was read: anything created since is younger than the window.
    const listings = await Promise.all(
      nodes.map(async (node) => ({ node, containers: await node.listContainers(), snapshots: await node.listSnapshots(), leases: await node.listLeases() })),
    );
    const stateDirAgents = host ? await host.listAgentStateDirs() : [];
    const containerdNamespaces = new Set(nodes.map((node) => node.containerdNamespace));
    const attachments = ((await networks?.listAttachments()) ?? []).filter((attachment) => containerdNamespaces.has(attachment.containerdNamespace));
    /** Agents that own something in containerd or a sandbox network now, before this pass removes anything. */
    const owners = new Set(
      [
        ...listings.flatMap(({ containers, snapshots, leases }) => [...containers, ...snapshots, ...leases].map((object) => object.labels[LABEL_AGENT] ?? "")),
        ...attachments.map((attachment) => attachment.agent),
      ].filter((agent) => agent !== ""),
    );
    const candidates = [...owners, ...stateDirAgents];
    const nowMs = this.clock.nowMs();
    const goneAgents = this.absence.observe(candidates, inventory.agents, nowMs, this.protectionMs);
    const context: JudgeContext = { inventory, goneAgents, nowMs, protectionMs: this.protectionMs };
    let view: InventoryView | undefined = { inventory, goneAgents, readAtMs: nowMs };
    /**
     * The inventory as it is now, read again when the pass's view of it is older than
     * INVENTORY_RECHECK_MS (or always, `force`); an agent present once is not gone for the rest of
     * the pass. Undefined once a read has failed: the pass then acts on no verdict any more.
     */
    const latest = async (force = false): Promise<InventoryView | undefined> => {
      if (!view) return undefined;
      const readAtMs = this.clock.nowMs();
      if (!force && readAtMs - view.readAtMs < INVENTORY_RECHECK_MS) return view;
      try {
        const fresh = await this.options.inventory.read(signal);
        const stillGone = [...view.goneAgents].filter((agent) => !fresh.agents.has(agent));
        view = { inventory: fresh, goneAgents: new Set(stillGone), readAtMs };
      } catch (error) {
        view = undefined;
        this.logger.warn({ err: FsbError.from(error) }, "cannot read the inventory again (is the control plane up?); removing nothing more this pass");
      }
      return view;
    };
    /** Sandboxes whose containers or snapshots are still there after this pass, per agent (and per containerd namespace and agent). */
    const remaining = new Map<string, Set<string>>();
    const remainingIn = new Set<string>();
    const within = (containerdNamespace: string, agent: string, sandboxId: string) => JSON.stringify([containerdNamespace, agent, sandboxId]);
    for (const { node, containers, snapshots, leases } of listings) {
      const remain = (agent: string, sandboxId: string) => {
        const set = remaining.get(agent) ?? new Set<string>();
        set.add(sandboxId);
        remaining.set(agent, set);
        remainingIn.add(within(node.containerdNamespace, agent, sandboxId));
      };
      const containerSnapshots = new Set(containers.map((container) => container.snapshotKey).filter(Boolean));
      for (const container of containers) {
        signal?.throwIfAborted();
        const agent = container.labels[LABEL_AGENT] ?? "";
        const verdict = judge(container, context);
        if (verdict.action === "keep") {
          if (verdict.why === "protected") result.protectedOrphans += 1;
          remain(agent, sandboxIdOf(container));
          continue;
        }
        // The verdict is as old as the listing: the container, or the agent it was judged without,
        // may be back since (a new agent of the same name adopts its anchor, or a Pod replaced under
        // the same name replaces it).
        let current: ManagedContainer | undefined;
        try {
          current = await this.stillOrphaned(node, container, latest, nowMs);
        } catch (error) {
          this.failed(result, verdict.reason, error, { containerdNamespace: node.containerdNamespace, agent, containerId: container.id });
        }
        if (!current || !(await this.reclaimContainer(node, current, verdict.reason, result))) remain(agent, sandboxIdOf(container));
      }
      // A snapshot without its container: a create that stopped between Snapshots.Prepare and Containers.Create.
      for (const snapshot of snapshots) {
        signal?.throwIfAborted();
        if (containerSnapshots.has(snapshot.key)) continue;
        const agent = snapshot.labels[LABEL_AGENT] ?? "";
        const facts = { id: snapshot.key, labels: snapshot.labels, changedAtMs: snapshot.changedAtMs, bare: true };
        const verdict = judge(facts, context);
        if (verdict.action === "keep") {
          if (verdict.why === "protected") result.protectedOrphans += 1;
          remain(agent, sandboxIdOf({ id: snapshot.key, labels: snapshot.labels, changedAtMs: snapshot.changedAtMs }));
          continue;
        }
        const view = await latest();
        if (
          !view ||
          judge(facts, { ...view, nowMs, protectionMs: this.protectionMs }).action !== "remove" ||
          !(await this.reclaimSnapshot(node, snapshot, verdict.reason, result))
        ) {
          remain(agent, sandboxIdOf({ id: snapshot.key, labels: snapshot.labels, changedAtMs: snapshot.changedAtMs }));
        }
      }
      // A gone agent's pull leases (it was killed mid-pull and never started again): with them go the
      // partial downloads and snapshots they alone kept.
      for (const lease of leases) {
        signal?.throwIfAborted();
        const verdict = judge(lease, context);
        if (verdict.action === "keep") {
          if (verdict.why === "protected") result.protectedOrphans += 1;
          continue;
        }
        const view = await latest();
        if (!view || judge(lease, { ...view, nowMs, protectionMs: this.protectionMs }).action !== "remove") continue;
        const base = { reason: verdict.reason, containerdNamespace: node.containerdNamespace, agent: lease.labels[LABEL_AGENT] ?? "" };
        try {
          if (await node.removeLease(lease.id)) this.removed(result, { ...base, kind: "lease", id: lease.id });
        } catch (error) {
          this.failed(result, verdict.reason, error, { ...base, lease: lease.id });
        }
      }
    }

    // Network namespaces last: a sandbox reclaimed above no longer holds its own.
    const attachmentContext = {
      ...context,
      containerdNamespaces,
      sandboxStillThere: (containerdNamespace: string, agent: string, sandboxId: string) => remainingIn.has(within(containerdNamespace, agent, sandboxId)),
    };
    for (const attachment of attachments) {
      signal?.throwIfAborted();
      const verdict = judgeAttachment(attachment, attachmentContext);
      if (verdict.action === "keep") {
        if (verdict.why === "protected") result.protectedOrphans += 1;
        continue;
      }
      const view = await latest();
      if (!view || judgeAttachment(attachment, { ...attachmentContext, ...view }).action !== "remove") continue;
      const base = {
        reason: verdict.reason,
        containerdNamespace: attachment.containerdNamespace,
        agent: attachment.agent,
        ...(attachment.sandboxId ? { sandboxId: attachment.sandboxId } : {}),
      };
      try {
        if (await networks?.removeAttachment(attachment)) this.removed(result, { ...base, kind: "network", id: attachment.id });
      } catch (error) {
        this.failed(result, verdict.reason, error, { ...base, networkNamespace: attachment.id });
      }
    }

    await this.reclaimPoolCheckpoints(inventory, nowMs, result, signal);

    if (!host) return;
    // Only under the cgroups of agents the janitor knows of (the inventory's, and those that own
    // something here): the cgroup root may hold cgroups that are no agent's.
    const containerIds = new Set(listings.flatMap(({ containers }) => containers.map((container) => container.id)));
    await this.reclaimSandboxCgroups(host, new Set([...inventory.agents, ...candidates]), { goneAgents, containerIds }, latest, nowMs, result, signal);

    if (goneAgents.size === 0) return;
    // What follows takes an agent's own cgroup and files: only of an agent still gone now, however
    // long the pass took (a pool may have started one of the same name meanwhile).
    const now = await latest(true);
    if (!now) return;
    for (const agent of goneAgents) {
      if (!now.goneAgents.has(agent)) continue;
      signal?.throwIfAborted();
      const keep = remaining.get(agent) ?? new Set<string>();
      try {
        const files = await host.removeStaleAgentFiles(agent, nowMs - this.protectionMs, keep);
        for (const file of files) this.removed(result, { kind: file.kind, reason: "agent_gone", id: file.path, agent });
        if (keep.size > 0) continue;
        // The agent's own cgroup goes once nothing of it is left in containerd.
        for (const directory of await host.removeAgentCgroup(agent)) this.removed(result, { kind: "cgroup", reason: "agent_gone", id: directory, agent });
        // Its Shared sandboxes are gone: the name is all that keeps its network namespace (bridge,
        // nftables tables) alive, and the agent's next Pod has another name, so nobody else removes it.
        const netns = await host.removeAgentNetworkNamespace(agent);
        if (netns) this.removed(result, { kind: "network", reason: "agent_gone", id: netns, agent });
        // Its state directory is what makes it a candidate in the passes to come, so it goes last,
        // in a pass that found nothing else of it: the one that reclaimed the rest leaves it.
        if (owners.has(agent) || files.length > 0 || (await host.hasAgentCgroup(agent))) continue;
        for (const file of await host.removeAgentStateDir(agent, nowMs - this.protectionMs)) {
          this.removed(result, { kind: file.kind, reason: "agent_gone", id: file.path, agent });
        }
      } catch (error) {
        this.logger.warn({ err: error, agent }, "could not remove what a gone agent left on the host; a later pass retries");
      }
    }
  }

  /**
   * The cgroups under the agents' own that are named after containers no longer there (orphans.ts
   * says which), once the janitor has seen them so for a whole window: their processes are killed
   * and the cgroups removed, nested ones first. Containers listed at the start of the pass count,
   * those this pass reclaimed too: theirs went with them, or a later pass takes them. Each is judged
   * again just before it goes, on its container as it is now (a paused sandbox resumed during the
   * pass has its container again, under the same id) and on the latest inventory.
   */
  private async reclaimSandboxCgroups(
    host: HostLeftovers,
    agents: ReadonlySet<string>,
    context: SandboxCgroupJudgeContext,
    latest: () => Promise<InventoryView | undefined>,
    nowMs: number,
    result: PassResult,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const orphans = (await host.listSandboxCgroups(agents)).flatMap((cgroup) => {
      const reason = sandboxCgroupOrphanReason(cgroup, context);
      return reason ? [{ ...cgroup, reason }] : [];
    });
    const seenSinceMs = this.orphanCgroups.observe(
      orphans.map((cgroup) => cgroup.cgroupsPath),
      nowMs,
    );
    for (const cgroup of orphans) {
      signal?.throwIfAborted();
      if (nowMs - (seenSinceMs.get(cgroup.cgroupsPath) ?? nowMs) < this.protectionMs) {
        result.protectedOrphans += 1;
        continue;
      }
      const base = { reason: cgroup.reason, agent: cgroup.agent };
      try {
        const view = await latest();
        if (!view) return;
        const containerId = sandboxCgroupContainerId(cgroup);
        const exists = (await Promise.all(this.options.nodes.map((node) => node.get(containerId)))).some(Boolean);
        if (sandboxCgroupOrphanReason(cgroup, { goneAgents: view.goneAgents, containerIds: new Set(exists ? [containerId] : []) }) === undefined) {
          this.logger.info({ ...base, cgroup: cgroup.cgroupsPath, containerId }, "a cgroup's container or agent came back during the pass; the cgroup stays");
          continue;
        }
        for (const directory of await host.removeSandboxCgroup(cgroup.cgroupsPath)) this.removed(result, { ...base, kind: "cgroup", id: directory });
      } catch (error) {
        this.failed(result, cgroup.reason, error, { ...base, cgroup: cgroup.cgroupsPath });
      }
    }
  }

  /**
   * The checkpoint directories of pools gone for good (pool-checkpoints.ts), then the namespace
   * directories they leave empty, unless a pool of that namespace exists. Only with an inventory
   * that lists the pools (it was read in full: an API error ended the pass before).
   */
  private async reclaimPoolCheckpoints(inventory: InventorySnapshot, nowMs: number, result: PassResult, signal: AbortSignal | undefined): Promise<void> {
    const { checkpoints } = this.options;
    const { pools, poolsNamedBySandboxes } = inventory;
    if (!checkpoints || !pools || !poolsNamedBySandboxes) return;
    let dirs: PoolCheckpointDirFacts[];
    try {
      dirs = await checkpoints.list();
    } catch (error) {
      // Not a reason to leave the rest of the node (the gone agents' leftovers below) for later.
      this.logger.warn({ err: error }, "cannot list the node's pool checkpoint directories; a later pass retries");
      return;
    }
    const absentSinceMs = this.absentPools.observe(
      dirs.map((dir) => poolKey(dir.namespace, dir.pool)).filter((key) => !pools.has(key)),
      nowMs,
    );
    for (const dir of dirs) {
      signal?.throwIfAborted();
      const pool = poolKey(dir.namespace, dir.pool);
      const verdict = judgePoolCheckpointDir(dir, { inventory, absentSinceMs: absentSinceMs.get(pool), nowMs, graceMs: this.checkpointGraceMs });
      if (verdict.action === "keep") {
        if (verdict.why === "protected") result.protectedOrphans += 1;
        continue;
      }
      try {
        if (await checkpoints.remove(dir.namespace, dir.pool, nowMs - this.checkpointGraceMs)) {
          this.removed(result, { kind: "checkpoint_dir", reason: verdict.reason, id: dir.path, pool });
        }
      } catch (error) {
        this.failed(result, verdict.reason, error, { pool, directory: dir.path });
      }
    }
    const keepNamespaces = new Set([...pools].map((key) => key.slice(0, key.indexOf("/"))));
    try {
      for (const dir of await checkpoints.tidyNamespaceDirs(keepNamespaces)) this.removed(result, { kind: dir.kind, reason: "pool_gone", id: dir.path });
    } catch (error) {
      this.logger.warn({ err: error }, "could not remove an empty namespace directory of the checkpoints; a later pass retries");
    }
  }

  /**
   * The container as it is now when it is still the orphan the pass listed: undefined when it is
   * gone, changed since (an update, such as a new agent's adoption of its anchor, or a container
   * made again under the same id), or no orphan on the latest inventory (its agent is back).
   */
  private async stillOrphaned(
    node: NodeContainers,
    listed: ManagedContainer,
    latest: () => Promise<InventoryView | undefined>,
    nowMs: number,
  ): Promise<ManagedContainer | undefined> {
    const current = await node.get(listed.id);
    const view = current && current.changedAtMs === listed.changedAtMs && sameLabels(current.labels, listed.labels) ? await latest() : undefined;
    if (current && view && judge(current, { ...view, nowMs, protectionMs: this.protectionMs }).action === "remove") return current;
    this.logger.info(
      { containerdNamespace: node.containerdNamespace, agent: listed.labels[LABEL_AGENT], containerId: listed.id },
      "a container changed, went or was taken back during the pass; a later pass judges it again",
    );
    return undefined;
  }

  /** Task, cgroup, files, snapshot, container; true when everything is gone. */
  private async reclaimContainer(node: NodeContainers, container: ManagedContainer, reason: OrphanReason, result: PassResult): Promise<boolean> {
    const { host } = this.options;
    const agent = container.labels[LABEL_AGENT] ?? "";
    const anchor = isShimAnchor(container);
    const sandboxId = anchor ? undefined : sandboxIdOf(container);
    const base = { reason, containerdNamespace: node.containerdNamespace, agent, ...(sandboxId ? { sandboxId } : {}) };
    try {
      if (await this.removeTask(node, container, base)) this.removed(result, { ...base, kind: "task", id: container.id });
      const cgroupsPath = container.cgroupsPath;
      if (host && cgroupsPath && ownsCgroup(container, cgroupsPath)) {
        for (const directory of await host.removeSandboxCgroup(cgroupsPath)) this.removed(result, { ...base, kind: "cgroup", id: directory });
      }
      if (host && sandboxId) {
        for (const file of await host.removeSandboxFiles(agent, sandboxId)) this.removed(result, { ...base, kind: file.kind, id: file.path });
      }
      // Its task is gone, and with it the shim that held them open.
      if (host) for (const file of await host.removeContainerdFifos(container.id)) this.removed(result, { ...base, kind: file.kind, id: file.path });
      if (container.snapshotKey && (await node.removeSnapshot(container.snapshotter, container.snapshotKey))) {
        this.removed(result, { ...base, kind: "snapshot", id: container.snapshotKey });
      }
      if (await node.removeContainer(container.id)) this.removed(result, { ...base, kind: "container", id: container.id });
    } catch (error) {
      return this.failed(result, reason, error, { ...base, containerId: container.id });
    }
    this.reclaimed(result, reason);
    return true;
  }

  /**
   * The container's task; one that outlives its SIGKILL (a gVisor sandbox whose task is stuck in the
   * open of a host FIFO, a restored copy that ignores the signal) has its cgroup's processes killed,
   * as the agent's own delete does, and is waited for once more before the pass gives up on it.
   */
  private async removeTask(node: NodeContainers, container: ManagedContainer, context: Record<string, unknown>): Promise<boolean> {
    try {
      return await node.removeTask(container.id);
    } catch (error) {
      const { host } = this.options;
      const cgroupsPath = container.cgroupsPath;
      const stuck = error instanceof FsbError && error.code === "deadline_exceeded";
      if (!stuck || !host || !cgroupsPath || !ownsCgroup(container, cgroupsPath)) throw error;
      const processes = await host.killSandboxCgroupProcesses(cgroupsPath);
      this.logger.warn(
        { ...context, containerId: container.id, cgroup: cgroupsPath, processes, err: error },
        "a task did not exit on SIGKILL; its cgroup's processes were killed",
      );
      // It had a task (the first call found it), whether or not this one still does.
      await node.removeTask(container.id);
      return true;
    }
  }

  private async reclaimSnapshot(node: NodeContainers, snapshot: ManagedSnapshot, reason: OrphanReason, result: PassResult): Promise<boolean> {
    const agent = snapshot.labels[LABEL_AGENT] ?? "";
    const sandboxId = sandboxIdOf({ id: snapshot.key, labels: snapshot.labels, changedAtMs: snapshot.changedAtMs });
    const base = { reason, containerdNamespace: node.containerdNamespace, agent, sandboxId };
    try {
      const { host } = this.options;
      if (host) for (const file of await host.removeSandboxFiles(agent, sandboxId)) this.removed(result, { ...base, kind: file.kind, id: file.path });
      if (await node.removeSnapshot(snapshot.snapshotter, snapshot.key)) this.removed(result, { ...base, kind: "snapshot", id: snapshot.key });
    } catch (error) {
      return this.failed(result, reason, error, { ...base, snapshot: snapshot.key });
    }
    this.reclaimed(result, reason);
    return true;
  }

  private removed(result: PassResult, object: RemovedObject): void {
    result.removed.push(object);
    this.metrics.objectRemoved(object.kind, object.reason);
    this.logger.info({ ...object }, `removed orphaned ${object.kind.replace("_", " ")}`);
  }

  private reclaimed(result: PassResult, reason: OrphanReason): void {
    result.reclaimed[reason] += 1;
    this.metrics.orphanReclaimed(reason);
  }

  private failed(result: PassResult, reason: RemovalReason, error: unknown, context: Record<string, unknown>): false {
    result.failures += 1;
    this.metrics.reclaimFailed(reason);
    this.logger.warn({ ...context, err: error }, "could not remove an orphan completely; a later pass retries");
    return false;
  }
}

function sameLabels(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && a[key] === b[key]);
}

/**
 * A container's cgroup is only its own when the path ends in its id (sandboxes,
 * `<cgroupParent>/<containerId>`) or in an anchor's name (`<cgroupParent>/fsb-anchor-<n>`): a spec
 * naming any other cgroup is not followed, so no process outside the sandbox can be killed.
 */
function ownsCgroup(container: ManagedContainer, cgroupsPath: string): boolean {
  const last = cgroupsPath.split("/").filter(Boolean).at(-1) ?? "";
  if (isShimAnchor(container)) return /^fsb-anchor-\d+$/.test(last);
  return last === container.id;
}
