/**
 * The processes of the test cluster's Pods. The fake kubelet (test/harness/cluster/fake-kubelet.ts)
 * runs each container as a local process group: its container id is `fsb-local://<pid of the group
 * leader>`, and its processes (their children too) have POD_NAME and POD_NAMESPACE in their
 * environment. Cases use this to crash, freeze or thaw a Pod's container, or to see its processes
 * exit; the suite uses `liveProcesses` to find what a run left.
 */
import { readFileSync, readdirSync } from "node:fs";

/** A live process of this machine. */
export interface HostProcess {
  pid: number;
  /** Its process group. */
  processGroup: number;
  /** Its command line, the arguments joined by spaces. */
  command: string;
}

/** What `/proc/<pid>/stat` says after "pid (comm) ": the state letter and the process group. */
function stat(pid: number): { state: string; processGroup: number } {
  const text = readFileSync(`/proc/${pid}/stat`, "utf8");
  // After "pid (comm) ": state, ppid, pgrp (comm may hold spaces and parentheses).
  const [state, , pgrp] = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: state ?? "", processGroup: Number(pgrp) };
}

/** The state letter of a process (`R`, `S`, `T` stopped, `Z` zombie…), or undefined when it does not exist. */
export function processState(pid: number): string | undefined {
  try {
    return stat(pid).state;
  } catch {
    return undefined;
  }
}

/** Whether the process exists and has not exited (a zombie has). */
export function processAlive(pid: number): boolean {
  const state = processState(pid);
  return state !== undefined && state !== "Z";
}

/**
 * The live processes (this one aside) whose environment (`NAME=value` entries) and command line
 * satisfy `matches`. Kernel threads and processes that exit meanwhile are passed over.
 */
export function liveProcesses(matches: (environment: string[], command: string) => boolean): HostProcess[] {
  const found: HostProcess[] = [];
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!/^\d+$/.test(entry) || pid === process.pid) continue;
    try {
      const command = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ").trim();
      const environment = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
      if (!matches(environment, command)) continue;
      const { state, processGroup } = stat(pid);
      if (state !== "Z") found.push({ pid, processGroup, command });
    } catch {
      // exited meanwhile, or a kernel thread
    }
  }
  return found;
}

/** The live processes the fake kubelet started for a Pod's containers, and their children. */
export function podProcesses(namespace: string, pod: string): HostProcess[] {
  return liveProcesses((environment) => environment.includes(`POD_NAME=${pod}`) && environment.includes(`POD_NAMESPACE=${namespace}`));
}

/** SIGKILL to every process group of the Pod's processes (as when its node dies); how many groups there were. */
export function killPodProcesses(namespace: string, pod: string): number {
  // Never group 0 or 1 (kill(-1) signals every process), nor a group unread.
  const groups = new Set(podProcesses(namespace, pod).flatMap((found) => (found.processGroup > 1 ? [found.processGroup] : [])));
  for (const group of groups) signalProcessGroup(group, "SIGKILL");
  return groups.size;
}

/** Signals a process group (the fake kubelet starts each container as a group leader); false when it is gone. */
export function signalProcessGroup(leader: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-leader, signal);
    return true;
  } catch {
    return false;
  }
}

/** A container's status as the fake kubelet reports it (the fields this reads). */
export interface LocalContainerStatus {
  containerID?: string;
  state?: { running?: unknown };
}

/** The process group leader of a running container (its `fsb-local://<pid>` container id); 0 when it does not run. */
export function containerPid(status: LocalContainerStatus | undefined): number {
  if (!status?.state?.running) return 0;
  return Number(/^fsb-local:\/\/(\d+)$/.exec(status.containerID ?? "")?.[1] ?? 0);
}
