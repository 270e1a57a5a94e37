/**
 * What a sandbox may use when its pool sets no limit: the host's CPUs, memory and disk. E2B's
 * responses require a CPU count, memory and disk size for every sandbox, and a sandbox of a pool
 * without `sandboxResources` is bounded only by its host.
 */
import { availableParallelism, totalmem } from "node:os";
import { statfsSync } from "node:fs";

const MIB = 1024 * 1024;

export interface HostResources {
  cpuCount: number;
  memoryMB: number;
  /** The size of the file system sandboxes write to; 0 when it cannot be read. */
  diskSizeMB: number;
}

/** This host's resources; the disk is the file system holding `diskPath` (e.g. the data directory). */
export function hostResources(diskPath: string): HostResources {
  let diskSizeMB = 0;
  try {
    const stats = statfsSync(diskPath);
    diskSizeMB = Math.floor((stats.blocks * stats.bsize) / MIB);
  } catch {
    // An unreadable file system leaves the size unknown (0), which E2B's schema allows.
  }
  return { cpuCount: availableParallelism(), memoryMB: Math.floor(totalmem() / MIB), diskSizeMB };
}
