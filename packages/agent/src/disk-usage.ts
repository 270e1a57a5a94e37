/**
 * What a sandbox holds on its node's disk, as `du` counts it: the blocks of every file, directory
 * and symbolic link of a tree (a symbolic link is not followed; a file with several links there is
 * counted once; a sparse file's holes are not) — and what a walk cannot see: files its processes
 * removed but hold open, whose blocks stay taken until the last descriptor closes (`lsof +L1`).
 */
import { lstat, readdir, readlink, stat, statfs } from "node:fs/promises";
import { join } from "node:path";

/** Bytes the tree at `path` takes on disk; 0 when it does not exist. Entries that go while it is walked are skipped. */
export async function directoryDiskBytes(path: string): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  const pending = [path];
  while (pending.length > 0) {
    const current = pending.pop()!;
    let stats;
    try {
      stats = await lstat(current, { bigint: true });
    } catch (error) {
      if (isGone(error)) continue;
      throw error;
    }
    if (stats.nlink > 1n && !stats.isDirectory()) {
      const inode = `${stats.dev}:${stats.ino}`;
      if (seen.has(inode)) continue;
      seen.add(inode);
    }
    total += Number(stats.blocks) * 512;
    if (!stats.isDirectory()) continue;
    let names: string[];
    try {
      names = await readdir(current);
    } catch (error) {
      if (isGone(error)) continue;
      throw error;
    }
    for (const name of names) pending.push(join(current, name));
  }
  return total;
}

/** File systems in memory (tmpfs, ramfs, hugetlbfs; memfd's too): what they hold is memory, charged to the memory cgroup, not disk. */
const MEMORY_FILE_SYSTEMS: ReadonlySet<number> = new Set([0x01021994, 0x858458f6, 0x958458f6]);

/**
 * Bytes on disk of the regular files that the processes `pids` hold open after their last link was
 * removed (a file written, then deleted while open: invisible to a walk, on disk all the same), each
 * file once. Files of in-memory file systems are left out. A process gone meanwhile is skipped.
 */
export async function openDeletedFileBytes(pids: readonly number[]): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  for (const pid of pids) {
    const fdDir = `/proc/${pid}/fd`;
    let fds: string[];
    try {
      fds = await readdir(fdDir);
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      const path = join(fdDir, fd);
      try {
        if (!(await readlink(path)).endsWith(" (deleted)")) continue;
        // Through the descriptor's link: the open file itself.
        const stats = await stat(path, { bigint: true });
        if (!stats.isFile() || stats.nlink !== 0n) continue;
        const inode = `${stats.dev}:${stats.ino}`;
        if (seen.has(inode)) continue;
        seen.add(inode);
        if (MEMORY_FILE_SYSTEMS.has(Number((await statfs(path, { bigint: true })).type))) continue;
        total += Number(stats.blocks) * 512;
      } catch {
        // closed meanwhile, or the process gone
      }
    }
  }
  return total;
}

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}
