/**
 * What a containerd namespace holds, read with `ctr` the way the e2e cases check the agents' work:
 * containers (by the labels the agents write), tasks and their status, and everything of one
 * sandbox id (its container, task and snapshot). Read-only; test/support/containerd.ts creates and
 * removes namespaces.
 *
 * Besides sandboxes, an agent's containers are its shim anchors (`fsb-anchor.<agent>.<n>`) and,
 * for a pool that keeps them (spec.preparedInstances, on by default for a runc pool with an image),
 * its prepared instances: containers `fsb-prepared-…` labelled role=prepared-instance, with a task
 * and a snapshot of the same id. A sandbox that claims one lives on in the instance's container
 * (task, snapshot and cgroup keep the instance's id), relabelled with its sandbox id; so sandboxes
 * are found here by that label, never by assuming their container is named after them.
 */
import { execFileSync } from "node:child_process";
import { ctr } from "./containerd.js";

/** The labels an agent writes on its containers (packages/agent). */
export const CONTAINER_LABELS = {
  /** The agent Pod that runs the container (its sandboxes and its shim anchors). */
  agent: "fast-sandbox.io/agent",
  /** The sandbox's Kubernetes namespace. */
  namespace: "fast-sandbox.io/namespace",
  /** The ports the sandbox exposes. */
  exposedPorts: "fast-sandbox.io/exposed-ports",
  /** The sandbox the container is (a claimed prepared instance's container keeps the instance's id). */
  sandboxId: "fast-sandbox.io/sandbox-id",
  /** What a container that is not a sandbox is: PREPARED_INSTANCE_ROLE for an unclaimed prepared instance. */
  role: "fast-sandbox.io/role",
} as const;

/** The role label's value on a prepared instance until a sandbox claims it (packages/agent/src/containerd/prepared-instances.ts). */
export const PREPARED_INSTANCE_ROLE = "prepared-instance";

/** The trimmed, non-empty lines of a command's output. */
export function outputLines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

/** The ids of the containers whose labels have all these values (every container without `labels`), sorted. */
export function containerIds(containerdNamespace: string, labels: Record<string, string | number> = {}): string[] {
  const filter = Object.entries(labels)
    .map(([key, value]) => `labels."${key}"==${value}`)
    .join(",");
  return outputLines(ctr(containerdNamespace, "containers", "ls", "-q", ...(filter ? [filter] : []))).sort();
}

/**
 * The sandbox ids of the sandboxes of a Kubernetes namespace that containerd holds a container of
 * (the agents label each with the namespace), sorted. Its pools' prepared instances in stock carry
 * the namespace label too and are left out: they are no sandbox yet.
 */
export function namespaceContainers(containerdNamespace: string, namespace: string): string[] {
  return sandboxesInContainerd(containerdNamespace, { [CONTAINER_LABELS.namespace]: namespace });
}

/** Whether a container, task or snapshot id is a prepared instance's (`fsb-prepared-…`), claimed by a sandbox or still in stock. */
export function isPreparedInstance(id: string): boolean {
  return id.startsWith("fsb-prepared-");
}

/** A container's labels; undefined when containerd has no such container (any more). */
export function containerLabels(containerdNamespace: string, id: string): Record<string, string> | undefined {
  let info: string;
  try {
    info = execFileSync("ctr", ["-n", containerdNamespace, "containers", "info", id], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return undefined;
  }
  return (JSON.parse(info) as { Labels?: Record<string, string> }).Labels ?? {};
}

/** What a container id is: a shim anchor, a prepared instance in stock, or a sandbox's (then whose). */
export type ContainerKind = { kind: "anchor" } | { kind: "prepared-stock" } | { kind: "sandbox"; sandboxId: string };

/**
 * What the container (or task, or snapshot) of that id is. Only ids the agents do not derive from a
 * sandbox id (`fsb-prepared-…`, `sb-…`) need containerd's labels; undefined when such a container
 * is gone (or not made yet).
 */
export function containerKind(containerdNamespace: string, id: string): ContainerKind | undefined {
  if (isAnchor(id)) return { kind: "anchor" };
  if (!isPreparedInstance(id) && !id.startsWith("sb-")) return { kind: "sandbox", sandboxId: id };
  const labels = containerLabels(containerdNamespace, id);
  if (!labels) return undefined;
  if (labels[CONTAINER_LABELS.role] === PREPARED_INSTANCE_ROLE) return { kind: "prepared-stock" };
  return { kind: "sandbox", sandboxId: labels[CONTAINER_LABELS.sandboxId] || id };
}

/**
 * The sandbox ids of the sandboxes whose containers have all these labels, sorted: the agents'
 * shim anchors and prepared instances in stock are left out, and a sandbox that claimed a prepared
 * instance is named by its sandbox id, not by the instance's container id.
 */
export function sandboxesInContainerd(containerdNamespace: string, labels: Record<string, string | number> = {}): string[] {
  return containerIds(containerdNamespace, labels)
    .flatMap((id) => {
      const what = containerKind(containerdNamespace, id);
      return what?.kind === "sandbox" ? [what.sandboxId] : [];
    })
    .sort();
}

/** The prepared instances in stock (unclaimed) among the containers with these labels, sorted. */
export function preparedStock(containerdNamespace: string, labels: Record<string, string | number> = {}): string[] {
  return containerIds(containerdNamespace, { ...labels, [CONTAINER_LABELS.role]: PREPARED_INSTANCE_ROLE });
}

/** An agent's containers: its sandboxes', its shim anchors and its prepared instances, sorted (by container id). */
export function agentContainers(containerdNamespace: string, agent: string): string[] {
  return containerIds(containerdNamespace, { [CONTAINER_LABELS.agent]: agent });
}

/** Whether a container or task id is a shim anchor (`fsb-anchor.<agent>.<n>`), not a sandbox. */
export function isAnchor(id: string, agent?: string): boolean {
  return id.startsWith(agent === undefined ? "fsb-anchor." : `fsb-anchor.${agent}.`);
}

/** Every task with its status (RUNNING, STOPPED…), from `ctr tasks ls`. */
export function tasks(containerdNamespace: string): { id: string; status: string }[] {
  return outputLines(ctr(containerdNamespace, "tasks", "ls"))
    .slice(1)
    .map((line) => line.split(/\s+/))
    .map(([id, , status]) => ({ id: id ?? "", status: status ?? "" }));
}

/**
 * The sandbox ids of the sandboxes whose tasks run (a claimed prepared instance's task by its
 * sandbox's id); the shim anchors and the prepared instances in stock are left out.
 */
export function runningTasks(containerdNamespace: string): string[] {
  return tasks(containerdNamespace)
    .filter((task) => task.status === "RUNNING")
    .flatMap((task) => {
      const what = containerKind(containerdNamespace, task.id);
      return what?.kind === "sandbox" ? [what.sandboxId] : [];
    });
}

/** An agent's shim anchors: `container <id>` and `task <id>` for each one containerd still holds. */
export function anchorsOf(containerdNamespace: string, agent: string): string[] {
  const containers = containerIds(containerdNamespace).filter((id) => isAnchor(id, agent));
  const anchorTasks = tasks(containerdNamespace).filter((task) => isAnchor(task.id, agent));
  return [...containers.map((id) => `container ${id}`), ...anchorTasks.map((task) => `task ${task.id}`)];
}

/** What containerd holds of one sandbox id. */
export interface RuntimeState {
  container: boolean;
  /** The task's status (RUNNING, STOPPED…), undefined without a task. */
  task: string | undefined;
  /** A snapshot with the id as its key (the sandbox's root). */
  snapshot: boolean;
}

/** containerd namespace/sandbox id → the id of the sandbox's container, once seen. */
const containersOfSandboxes = new Map<string, string>();

/**
 * The id of a sandbox's container (also its task id and snapshot key): the container labelled with
 * the sandbox id — the instance's `fsb-prepared-…` when the sandbox claimed a prepared instance,
 * else the sandbox id. Remembered, so that a check after the sandbox's deletion still looks at that
 * container's task and snapshot rather than at ids that never existed.
 */
export function containerOfSandbox(containerdNamespace: string, sandboxId: string): string {
  const key = `${containerdNamespace}/${sandboxId}`;
  const labelled = containerIds(containerdNamespace, { [CONTAINER_LABELS.sandboxId]: sandboxId })[0];
  if (labelled) containersOfSandboxes.set(key, labelled);
  return labelled ?? containersOfSandboxes.get(key) ?? sandboxId;
}

/**
 * The container of a sandbox that runs (see containerOfSandbox), once containerd has recorded it as
 * the sandbox's: a sandbox that claimed a prepared instance is relabelled by its agent just after
 * the create has answered (a few ms; containerd-runtime.ts's claim record), so a look right after a
 * create may find the instance's container not yet labelled. Throws when none is after timeoutMs.
 */
export async function recordedContainerOfSandbox(containerdNamespace: string, sandboxId: string, timeoutMs = 10_000): Promise<string> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const labelled = containerIds(containerdNamespace, { [CONTAINER_LABELS.sandboxId]: sandboxId })[0];
    if (labelled) {
      containersOfSandboxes.set(`${containerdNamespace}/${sandboxId}`, labelled);
      return labelled;
    }
    if (performance.now() > deadline) throw new Error(`no container of containerd namespace ${containerdNamespace} is labelled as sandbox ${sandboxId}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** What containerd holds of a sandbox id: its container, its task's status, its snapshot (see containerOfSandbox). */
export function runtimeState(containerdNamespace: string, sandboxId: string): RuntimeState {
  const id = containerOfSandbox(containerdNamespace, sandboxId);
  return {
    container: containerIds(containerdNamespace).includes(id),
    task: tasks(containerdNamespace).find((task) => task.id === id)?.status,
    snapshot: outputLines(ctr(containerdNamespace, "snapshots", "ls"))
      .slice(1)
      .some((line) => line.split(/\s+/)[0] === id),
  };
}

/** Whether containerd holds a container, a task (whatever its status) or a snapshot of this sandbox id. */
export function inContainerd(containerdNamespace: string, sandboxId: string): { container: boolean; task: boolean; snapshot: boolean } {
  const state = runtimeState(containerdNamespace, sandboxId);
  return { container: state.container, task: state.task !== undefined, snapshot: state.snapshot };
}

/** Whether containerd holds nothing of this sandbox id: no container, no task, no snapshot. */
export function goneFromContainerd(containerdNamespace: string, sandboxId: string): boolean {
  const held = inContainerd(containerdNamespace, sandboxId);
  return !held.container && !held.task && !held.snapshot;
}
