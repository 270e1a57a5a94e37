/**
 * What a directory tree takes on its disk, as `du` counts it: the blocks of every file, directory
 * and symbolic link under it (a symbolic link is not followed; a file with several links there is
 * counted once; a sparse file's holes are not).
 */
import { lstat, readdir } from "node:fs/promises";
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

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}
