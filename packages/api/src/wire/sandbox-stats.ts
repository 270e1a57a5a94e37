import { create } from "@bufbuild/protobuf";
import { SandboxStatsSchema, type SandboxStats as SandboxStatsMessage } from "../gen/fastsandbox/v1alpha1/resources_pb.js";

/**
 * A sandbox's resource use at one moment, as its agent reads it (GetSandboxStats): its cgroup's CPU
 * time, memory and processes, and what it holds on its node's disk. A limit of 0 is none.
 */
export interface SandboxStats {
  /** When it was read, in ms since the Unix epoch. */
  timestampMs: number;
  /** CPU time used since the sandbox started, in nanoseconds. */
  cpuUsageNanos: number;
  /** CPU use over the 100 ms before `timestampMs`, in thousandths of a core. */
  cpuUsedMillis: number;
  /** CPU limit in thousandths of a core; 0: none (its node's `nodeCpus`). */
  cpuLimitMillis: number;
  /** Memory its processes use, page cache included. */
  memoryUsedBytes: number;
  /** Of `memoryUsedBytes`, the page cache (file-backed pages). */
  memoryCacheBytes: number;
  /** 0: none (its node's `nodeMemoryBytes`). */
  memoryLimitBytes: number;
  /** Processes and threads in it. */
  pids: number;
  /** What it holds on its node's disk: what it wrote over its image (its root file system's own layer), its run directory and the files its processes removed but hold, in bytes. */
  diskUsedBytes: number;
  /** Its disk limit (its pool's sandboxResources.ephemeralStorage); 0: none. */
  diskLimitBytes: number;
  nodeCpus: number;
  nodeMemoryBytes: number;
}

export function sandboxStatsToMessage(stats: SandboxStats): SandboxStatsMessage {
  return create(SandboxStatsSchema, {
    timestampMs: BigInt(stats.timestampMs),
    cpuUsageNanos: BigInt(stats.cpuUsageNanos),
    cpuUsedMillis: BigInt(stats.cpuUsedMillis),
    cpuLimitMillis: BigInt(stats.cpuLimitMillis),
    memoryUsedBytes: BigInt(stats.memoryUsedBytes),
    memoryCacheBytes: BigInt(stats.memoryCacheBytes),
    memoryLimitBytes: BigInt(stats.memoryLimitBytes),
    pids: stats.pids,
    diskUsedBytes: BigInt(stats.diskUsedBytes),
    diskLimitBytes: BigInt(stats.diskLimitBytes),
    nodeCpus: stats.nodeCpus,
    nodeMemoryBytes: BigInt(stats.nodeMemoryBytes),
  });
}

export function sandboxStatsFromMessage(message: SandboxStatsMessage): SandboxStats {
  return {
    timestampMs: Number(message.timestampMs),
    cpuUsageNanos: Number(message.cpuUsageNanos),
    cpuUsedMillis: Number(message.cpuUsedMillis),
    cpuLimitMillis: Number(message.cpuLimitMillis),
    memoryUsedBytes: Number(message.memoryUsedBytes),
    memoryCacheBytes: Number(message.memoryCacheBytes),
    memoryLimitBytes: Number(message.memoryLimitBytes),
    pids: message.pids,
    diskUsedBytes: Number(message.diskUsedBytes),
    diskLimitBytes: Number(message.diskLimitBytes),
    nodeCpus: message.nodeCpus,
    nodeMemoryBytes: Number(message.nodeMemoryBytes),
  };
}
