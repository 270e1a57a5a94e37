/**
 * What a sandbox holds on its node's disk, as `du` counts it: the blocks of every file, directory
 * and symbolic link of a tree (a symbolic link is not followed; a file with several links there is
 * counted once; a sparse file's holes are not) — and what a walk cannot see: files its processes
 * removed but hold open or mapped, whose blocks stay taken until the last holder lets go (`lsof +L1`).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readlink, rm, stat, statfs } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** How long one walk may take before it counts as a failure. */
const WALK_TIMEOUT_MS = 60_000;

/**
 * Bytes the tree at `path` takes on disk; 0 when it does not exist. Walked by GNU `du` (fts: by
 * descriptors, so a tree deeper than PATH_MAX is walked whole, where a walk by paths fails with
 * ENAMETOOLONG; and ~10 times faster than one by Node's fs over 200,000 files), on its file system
 * only. Entries that go while it is walked are skipped. Throws when it cannot be walked, or not
 * within `timeoutMs`.
 */
export async function directoryDiskBytes(path: string, timeoutMs = WALK_TIMEOUT_MS): Promise<number> {
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync("du", ["-s", "-x", "-B1", "--", path], { timeout: timeoutMs, maxBuffer: 1 << 20 }));
  } catch (error) {
    const failed = error as { stdout?: string; stderr?: string; killed?: boolean; code?: unknown };
    if (failed.killed) throw new Error(`du of ${path} took more than ${timeoutMs} ms`, { cause: error });
    // A tree that went meanwhile, or entries that did (du then says so and still prints its total).
    const total = parseTotal(failed.stdout ?? "");
    if (total !== undefined) return total;
    if (!existsSync(path)) return 0;
    throw new Error(`du of ${path} failed: ${(failed.stderr ?? String(error)).trim()}`, { cause: error });
  }
  const total = parseTotal(stdout);
  if (total === undefined) throw new Error(`du of ${path} printed no total: ${JSON.stringify(stdout.slice(0, 200))}`);
  return total;
}

function parseTotal(stdout: string): number | undefined {
  const match = /^(\d+)\t/.exec(stdout);
  return match ? Number(match[1]) : undefined;
}

/**
 * Removes the tree at `path` (nothing when it is not there), deep ones too: Node's recursive rm
 * works by paths and fails with ENAMETOOLONG below PATH_MAX's depth, which a sandbox can reach in
 * its run directory; GNU `rm` (fts, by descriptors) removes them, on that file system only.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENAMETOOLONG") throw error;
    await execFileAsync("rm", ["-rf", "--one-file-system", "--", path], { timeout: WALK_TIMEOUT_MS });
  }
}

/** File systems in memory (tmpfs, ramfs, hugetlbfs; memfd's too): what they hold is memory, charged to the memory cgroup, not disk. */
const MEMORY_FILE_SYSTEMS: ReadonlySet<number> = new Set([0x01021994, 0x858458f6, 0x958458f6]);

/**
 * Bytes on disk of the regular files that the processes `pids` hold after their last link was
 * removed — open (their descriptors) or mapped (their memory maps: a file mapped, closed and
 * removed) — each file once: invisible to a walk, on disk all the same. Files of in-memory file
 * systems are left out. A process gone meanwhile is skipped. Not seen: a descriptor in flight in a
 * unix socket's queue (SCM_RIGHTS), which no process holds until it is received.
 */
export async function openDeletedFileBytes(pids: readonly number[]): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  for (const pid of pids) {
    for (const dir of [`/proc/${pid}/fd`, `/proc/${pid}/map_files`]) {
      let entries: string[];
      try {
        entries = await readdir(dir);
      } catch {
        continue; // gone, or not ours to read
      }
      for (const entry of entries) {
        const path = join(dir, entry);
        try {
          if (!(await readlink(path)).endsWith(" (deleted)")) continue;
          // Through the link: the open (or mapped) file itself.
          const stats = await stat(path, { bigint: true });
          if (!stats.isFile() || stats.nlink !== 0n) continue;
          const inode = `${stats.dev}:${stats.ino}`;
          if (seen.has(inode)) continue;
          seen.add(inode);
          if (MEMORY_FILE_SYSTEMS.has(Number((await statfs(path, { bigint: true })).type))) continue;
          total += Number(stats.blocks) * 512;
        } catch {
          // closed or unmapped meanwhile, or the process gone
        }
      }
    }
  }
  return total;
}
