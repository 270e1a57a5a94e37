/**
 * What a containerd namespace holds, read with `ctr` the way the e2e cases check the agents' work:
 * containers (by the labels the agents write), tasks and their status, and everything of one
 * sandbox id (its container, task and snapshot). Read-only; test/support/containerd.ts creates and
 * removes namespaces.
 */
import { ctr } from "./containerd.js";

/** The labels an agent writes on its containers (packages/agent). */
export const CONTAINER_LABELS = {
  /** The agent Pod that runs the container (its sandboxes and its shim anchors). */
  agent: "fast-sandbox.io/agent",
  /** The sandbox's Kubernetes namespace. */
  namespace: "fast-sandbox.io/namespace",
  /** The ports the sandbox exposes. */
  exposedPorts: "fast-sandbox.io/exposed-ports",
} as const;

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

/** The containers of the sandboxes of a Kubernetes namespace (the agents label each with it), sorted. */
export function namespaceContainers(containerdNamespace: string, namespace: string): string[] {
  return containerIds(containerdNamespace, { [CONTAINER_LABELS.namespace]: namespace });
}

/** An agent's containers: its sandboxes' and its shim anchors, sorted. */
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

/** The ids of the tasks that run. */
export function runningTasks(containerdNamespace: string): string[] {
  return tasks(containerdNamespace)
    .filter((task) => task.status === "RUNNING")
    .map((task) => task.id);
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

/** What containerd holds of a sandbox id: its container, its task's status, its snapshot. */
export function runtimeState(containerdNamespace: string, sandboxId: string): RuntimeState {
  return {
    container: containerIds(containerdNamespace).includes(sandboxId),
    task: tasks(containerdNamespace).find((task) => task.id === sandboxId)?.status,
    snapshot: outputLines(ctr(containerdNamespace, "snapshots", "ls"))
      .slice(1)
      .some((line) => line.split(/\s+/)[0] === sandboxId),
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
