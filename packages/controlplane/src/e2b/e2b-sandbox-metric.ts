import type { SandboxStats } from "@fast-sandbox/api";

/**
 * E2B's `SandboxMetric` (GET /sandboxes/{id}/metrics, the SDKs' `getMetrics()`): a sample of a
 * sandbox's resource use. Every field is required by E2B's generated clients.
 */
export interface E2bSandboxMetric {
  /** RFC 3339. */
  timestamp: string;
  /** Seconds since the Unix epoch. */
  timestampUnix: number;
  /** The cores the sandbox may use: its CPU limit rounded up, else its node's. */
  cpuCount: number;
  /** Its CPU use as a percentage of `cpuCount` cores (0–100), over the 100 ms before `timestamp`. */
  cpuUsedPct: number;
  /** Bytes, its page cache included. */
  memUsed: number;
  /** Of `memUsed`, its page cache, in bytes. */
  memCache: number;
  /** Its memory limit, else its node's memory, in bytes. */
  memTotal: number;
  /** What it holds on its node's disk (what it wrote over its image, and its run directory), in bytes. */
  diskUsed: number;
  /** Its disk limit (its pool's sandboxResources.ephemeralStorage) in bytes; 0: none (its writes share its node's disk). */
  diskTotal: number;
}

/** A reading of the sandbox's agent (SandboxStats) as E2B's sample. */
export function e2bSandboxMetricOf(stats: SandboxStats): E2bSandboxMetric {
  const cpuCount = stats.cpuLimitMillis > 0 ? Math.max(1, Math.ceil(stats.cpuLimitMillis / 1000)) : Math.max(1, stats.nodeCpus);
  return {
    timestamp: new Date(stats.timestampMs).toISOString(),
    timestampUnix: Math.floor(stats.timestampMs / 1000),
    cpuCount,
    cpuUsedPct: Math.round((stats.cpuUsedMillis / (cpuCount * 1000)) * 10_000) / 100,
    memUsed: stats.memoryUsedBytes,
    memCache: stats.memoryCacheBytes,
    memTotal: stats.memoryLimitBytes > 0 ? stats.memoryLimitBytes : stats.nodeMemoryBytes,
    diskUsed: stats.diskUsedBytes,
    diskTotal: stats.diskLimitBytes,
  };
}
