/**
 * The janitor's decision, free of I/O: which managed containers, snapshots and pull leases are
 * orphans, and why.
 *
 * An object is an orphan when its agent no longer exists, or (for a sandbox) when no sandbox record
 * holds its id. It is removed only once it is older than the protection window, which covers creates
 * in flight (the container exists a moment before its record says so), and an agent counts as gone
 * only after the inventory has left it out for a whole window, which covers agents that are
 * (re)starting and have not registered yet. In the Kubernetes mode an agent is its Pod: a container
 * labelled with another Pod UID than the inventory's for its agent name belongs to a Pod that was
 * replaced by one of the same name, so its agent is gone at once (Kubernetes reuses a name only once
 * the old Pod is deleted); containers without the UID label are judged by the name alone, as in the
 * embedded mode. Anything without the managed label is never an orphan.
 */
import {
  LABEL_AGENT,
  LABEL_AGENT_UID,
  LABEL_MANAGED,
  LABEL_ROLE,
  ROLE_PREPARED_INSTANCE,
  ROLE_PULL_LEASE,
  ROLE_SHIM_ANCHOR,
  sandboxIdOfContainer,
} from "@fast-sandbox/agent";
import type { InventorySnapshot } from "./inventory.js";
import type { NetworkAttachmentFacts } from "./node-networks.js";

export type OrphanReason = "agent_gone" | "record_gone" | "anchor_orphaned" | "prepared_orphaned";

export const ORPHAN_REASONS: readonly OrphanReason[] = ["agent_gone", "record_gone", "anchor_orphaned", "prepared_orphaned"];

/** Why an object stays. `protected` is an orphan that is younger than the window: a later pass takes it. */
export type KeepReason = "unmanaged" | "no_agent_label" | "unknown_role" | "in_use" | "protected";

export type Verdict = { action: "remove"; reason: OrphanReason } | { action: "keep"; why: KeepReason; orphanReason?: OrphanReason };

/** What the decision looks at: a container, a snapshot or a lease. */
export interface ManagedObjectFacts {
  /** Container id, snapshot key or lease id. */
  id: string;
  labels: Readonly<Record<string, string>>;
  /** Creation or last update: the protection window runs from here. */
  changedAtMs: number;
  /** A snapshot whose container is gone (or was never made). */
  bare?: boolean;
}

export interface JudgeContext {
  inventory: InventorySnapshot;
  /** Agents that have been absent from the inventory for at least the protection window. */
  goneAgents: ReadonlySet<string>;
  nowMs: number;
  protectionMs: number;
}

/**
 * The sandbox id an object belongs to (what records hold and the agent's host files are named
 * after): its label, or without one its id. The id (container id = snapshot key) is the sandbox id
 * unless the agent mapped a sandbox id containerd refuses (the agent's container-id.ts).
 */
export function sandboxIdOf(object: ManagedObjectFacts): string {
  return sandboxIdOfContainer(object);
}

export function isShimAnchor(object: Pick<ManagedObjectFacts, "labels">): boolean {
  return object.labels[LABEL_ROLE] === ROLE_SHIM_ANCHOR;
}

/** The object's agent Pod was replaced by another of the same name (see the file comment). */
function agentReplaced(object: ManagedObjectFacts, agent: string, context: JudgeContext): boolean {
  return podReplaced(object.labels[LABEL_AGENT_UID], agent, context);
}

function podReplaced(uid: string | undefined, agent: string, context: JudgeContext): boolean {
  const podUid = uid ? context.inventory.agentPodUids?.get(agent) : undefined;
  return !!podUid && podUid !== uid;
}

export function judge(object: ManagedObjectFacts, context: JudgeContext): Verdict {
  if (object.labels[LABEL_MANAGED] !== "true") return { action: "keep", why: "unmanaged" };
  const agent = object.labels[LABEL_AGENT];
  // Without an owner there is no rule that could make it an orphan; a person must look at it.
  if (!agent) return { action: "keep", why: "no_agent_label" };
  const role = object.labels[LABEL_ROLE];
  const agentGone = context.goneAgents.has(agent) || agentReplaced(object, agent, context);
  let reason: OrphanReason | undefined;
  if (role === ROLE_SHIM_ANCHOR) {
    if (agentGone) reason = "anchor_orphaned";
  } else if (role === ROLE_PULL_LEASE) {
    // A pull's lease: its agent deletes it when the pull ends, or at its next start.
    if (agentGone) reason = "agent_gone";
  } else if (role === ROLE_PREPARED_INSTANCE) {
    // Unclaimed: no record names it; it lives as long as its agent — unless its container is gone
    // (a prepare cut short by a crash or a containerd restart): no agent keeps such a snapshot.
    if (agentGone || object.bare) reason = "prepared_orphaned";
  } else if (role) {
    // Infrastructure this version does not know: never guess.
    return { action: "keep", why: "unknown_role" };
  } else if (agentGone) {
    reason = "agent_gone";
  } else if (!context.inventory.sandboxIds.has(sandboxIdOf(object))) {
    reason = "record_gone";
  }
  if (!reason) return { action: "keep", why: "in_use" };
  if (context.nowMs - object.changedAtMs < context.protectionMs) return { action: "keep", why: "protected", orphanReason: reason };
  return { action: "remove", reason };
}

/**
 * Remembers since when each agent has been missing from the inventory, across passes. An agent the
 * janitor has not watched for a whole window is not gone yet, whatever the inventory says now: a
 * control plane that has just restarted lists its agents only as they report back.
 */
export class AgentAbsence {
  private readonly missingSinceMs = new Map<string, number>();

  /**
   * Records one successful inventory read and returns the agents gone for at least `windowMs`.
   * @param candidates agents that still own something on this node (labels, state directories)
   */
  observe(candidates: Iterable<string>, present: ReadonlySet<string>, nowMs: number, windowMs: number): Set<string> {
    const gone = new Set<string>();
    const seen = new Set<string>();
    for (const agent of candidates) {
      if (seen.has(agent)) continue;
      seen.add(agent);
      if (present.has(agent)) {
        this.missingSinceMs.delete(agent);
        continue;
      }
      const since = this.missingSinceMs.get(agent) ?? nowMs;
      this.missingSinceMs.set(agent, since);
      if (nowMs - since >= windowMs) gone.add(agent);
    }
    // Agents that own nothing any more need no memory.
    for (const agent of this.missingSinceMs.keys()) if (!seen.has(agent)) this.missingSinceMs.delete(agent);
    return gone;
  }

  /**
   * Forgets every absence: called for a pass that could not read the inventory. Nothing is known of
   * the agents meanwhile, so an agent missing once and then not seen through failed reads for a
   * window is not gone at the next read that succeeds: its absence starts over there.
   */
  clear(): void {
    this.missingSinceMs.clear();
  }
}

/**
 * Remembers since when each key (an orphan that has no time of its own, such as a cgroup) has been
 * seen, across passes; a key missing from a pass is forgotten, so its window starts over when it
 * shows up again.
 */
export class Sightings {
  private readonly firstSeenMs = new Map<string, number>();

  /** Records the keys seen in this pass and returns since when each of them has been seen. */
  observe(keys: Iterable<string>, nowMs: number): Map<string, number> {
    const seen = new Map<string, number>();
    for (const key of keys) seen.set(key, this.firstSeenMs.get(key) ?? nowMs);
    this.firstSeenMs.clear();
    for (const [key, sinceMs] of seen) this.firstSeenMs.set(key, sinceMs);
    return seen;
  }

  /** Forgets every key (a pass that saw nothing: they are all new at the next). */
  clear(): void {
    this.firstSeenMs.clear();
  }
}

/** A cgroup under an agent's cgroup that is named like one the agent makes for a container (host-leftovers.ts lists them). */
export interface SandboxCgroupFacts {
  agent: string;
  /** The directory's name: a container id (a sandbox's, a prepared instance's), or `fsb-anchor-<n>` (a shim anchor's). */
  name: string;
  /** Its cgroupfs path: `/<cgroupRoot>/<agent>/sandboxes/<name>` (an agent with a cgroup of its own) or `/<cgroupRoot>/<agent>/<name>`. */
  cgroupsPath: string;
}

export interface SandboxCgroupJudgeContext {
  goneAgents: ReadonlySet<string>;
  /** The ids of the containers the pass listed, in every containerd namespace the janitor looks after. */
  containerIds: ReadonlySet<string>;
}

/** The cgroup the agent makes for its shim anchor `fsb-anchor.<agent>.<n>` (containerd-runtime.ts). */
const ANCHOR_CGROUP = /^fsb-anchor-(\d+)$/;

/** The id of the container whose cgroup it is: a sandbox's is named after it, an anchor's `fsb-anchor-<n>` is `fsb-anchor.<agent>.<n>`'s. */
export function sandboxCgroupContainerId(cgroup: SandboxCgroupFacts): string {
  const anchor = ANCHOR_CGROUP.exec(cgroup.name);
  return anchor ? `fsb-anchor.${cgroup.agent}.${anchor[1]}` : cgroup.name;
}

/**
 * Why a cgroup under an agent's cgroup is an orphan, or undefined when it is not one. The agent
 * names a container's cgroup after the container and removes it after the container with one
 * rmdir, which a process still in it (a task that outlived SIGKILL) or a cgroup nested in it
 * defeats: a cgroup of that name whose container no longer exists is left over, whether its agent
 * lives or not. A shim anchor's cgroup (`fsb-anchor-<n>`) is its agent's while the agent lives,
 * container or not (the agent makes the anchor again under the same cgroup); only a gone agent's
 * whose anchor container is gone is an orphan. The protection window runs from when the janitor
 * first saw it so (Sightings): a cgroup has no time of its own that says when its container went.
 */
export function sandboxCgroupOrphanReason(cgroup: SandboxCgroupFacts, context: SandboxCgroupJudgeContext): OrphanReason | undefined {
  const agentGone = context.goneAgents.has(cgroup.agent);
  if (context.containerIds.has(sandboxCgroupContainerId(cgroup))) return undefined;
  if (ANCHOR_CGROUP.test(cgroup.name)) return agentGone ? "anchor_orphaned" : undefined;
  // A live agent's sandbox whose container is gone: its delete ran, and its record goes with it.
  return agentGone ? "agent_gone" : "record_gone";
}

export interface AttachmentJudgeContext extends JudgeContext {
  /** The containerd namespaces the janitor looks after: the records of other namespaces' agents are not its business. */
  containerdNamespaces: ReadonlySet<string>;
  /** Whether the sandbox's container or snapshot is still there after this pass's removals. */
  sandboxStillThere(containerdNamespace: string, agent: string, sandboxId: string): boolean;
}

/**
 * The decision about a sandbox network namespace: an orphan when its agent is gone (whatever its
 * state), or when the sandbox that claimed it has neither a record nor a container any more. A
 * live agent's prepared namespaces are its own business, and so is one whose sandbox record still
 * exists (its delete releases it). The protection window runs from the record's last change, which
 * covers creates in flight (a namespace is claimed before the container exists).
 */
export function judgeAttachment(attachment: NetworkAttachmentFacts, context: AttachmentJudgeContext): Verdict {
  if (!context.containerdNamespaces.has(attachment.containerdNamespace)) return { action: "keep", why: "unmanaged" };
  const { agent, sandboxId } = attachment;
  let reason: OrphanReason | undefined;
  if (context.goneAgents.has(agent) || podReplaced(attachment.agentUid, agent, context)) {
    reason = "agent_gone";
  } else if (
    attachment.state === "claimed" &&
    sandboxId &&
    !context.inventory.sandboxIds.has(sandboxId) &&
    !context.sandboxStillThere(attachment.containerdNamespace, agent, sandboxId)
  ) {
    reason = "record_gone";
  }
  if (!reason) return { action: "keep", why: "in_use" };
  if (context.nowMs - attachment.changedAtMs < context.protectionMs) return { action: "keep", why: "protected", orphanReason: reason };
  return { action: "remove", reason };
}
