/**
 * What `bench scale` (scale.ts) and its control plane process (scale-control-plane.ts) say to each
 * other over the IPC channel of `fork`, and how a process's memory is read. No side effects: both
 * import it.
 */
import { readFileSync } from "node:fs";

/** containerd namespace and cgroup root of the idle agent (`idle-agent`). */
export const IDLE_AGENT_NAMESPACE = "fsb-bench-scale";
export const IDLE_AGENT_POOL = "idle";

/** Memory of a process: `process.memoryUsage()` (bytes) and its /proc status lines (kB). */
export interface MemoryReport {
  rssBytes: number;
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
  arrayBuffersBytes: number;
  /** VmRSS, VmHWM (peak RSS), RssAnon (private) and RssFile (mapped files: node's own binary, shared libraries), in kB. */
  status: ProcStatusMemory;
}

export interface ProcStatusMemory {
  vmRssKb: number;
  vmHwmKb: number;
  rssAnonKb: number;
  rssFileKb: number;
}

export type ScaleChildRequest =
  /** Memory once garbage collection has settled (full GCs, a pause, another GC). */
  { type: "memory"; settleMs: number } | { type: "close" };

export type ScaleChildMessage =
  | { type: "ready"; url: string; token: string; pid: number; memory: MemoryReport; agentPid?: number }
  | { type: "memory"; memory: MemoryReport; registry: { agents: number; placements: number }; simulatedSandboxes: number }
  | { type: "closed" }
  | { type: "error"; message: string };

/** VmRSS, VmHWM, RssAnon and RssFile of a process, from /proc/PID/status. */
export function procStatusMemory(pid: number | "self"): ProcStatusMemory {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? Number.NaN);
  return { vmRssKb: kb("VmRSS"), vmHwmKb: kb("VmHWM"), rssAnonKb: kb("RssAnon"), rssFileKb: kb("RssFile") };
}
