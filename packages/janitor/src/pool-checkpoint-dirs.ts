/**
 * The janitor's port to the node's checkpoint directory (the agents' FSB_CHECKPOINT_DIR: each pool's
 * gVisor checkpoints in `<dir>/<namespace>/<pool>`, shared by the pool's agents on the node; the
 * controller's agent-pod.ts, the agent's containerd/checkpoints.ts). pool-checkpoints.ts decides
 * which pool directories go; this lists them and removes them. The local implementation works on
 * any root directory, so unit tests run it against prepared trees.
 *
 * A pool directory is removed whole, and atomically as far as the agents see it: it is first renamed
 * within its namespace directory to `.<pool>.removing-<hex>` (a name no pool can have: Kubernetes
 * names start with a letter or digit), then deleted. An agent of a pool of that name that starts
 * writing meanwhile makes a fresh directory instead of writing into a half-deleted one, and a
 * removal cut short (the janitor stopped) is finished by a later pass (`tidyNamespaceDirs`).
 */
import { randomBytes } from "node:crypto";
import type { Dirent } from "node:fs";
import { lstat, readdir, rename, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import type { PoolCheckpointDirFacts } from "./pool-checkpoints.js";

/** `checkpoint_dir`: a gone pool's checkpoint directory, or its namespace's once empty. */
export interface RemovedCheckpointDir {
  kind: "checkpoint_dir";
  path: string;
}

export interface PoolCheckpointDirs {
  /** Every pool directory `<dir>/<namespace>/<pool>`, with the newest change in it; none when the directory does not exist. */
  list(): Promise<PoolCheckpointDirFacts[]>;
  /**
   * Removes the pool's directory unless something in it changed since `changedBeforeMs` (looked at
   * again just before: a pass's listing is not the last word); returns whether it did.
   */
  remove(namespace: string, pool: string, changedBeforeMs: number): Promise<boolean>;
  /**
   * Finishes removals cut short, then removes the namespace directories left empty, except those of
   * `keepNamespaces` (namespaces that have a pool: its agent may be about to make its directory there).
   */
  tidyNamespaceDirs(keepNamespaces: ReadonlySet<string>): Promise<RemovedCheckpointDir[]>;
}

/** What a namespace or pool directory may be called: a Kubernetes name, never `.` or `..`. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** A pool directory being removed (renamed aside by `remove`). */
const REMOVING = /^\.[A-Za-z0-9][A-Za-z0-9._-]*\.removing-[0-9a-f]+$/;

export class LocalPoolCheckpointDirs implements PoolCheckpointDirs {
  /** @param root the node's checkpoint directory, as mounted in the janitor (the agents' FSB_CHECKPOINT_DIR) */
  constructor(private readonly root: string) {}

  async list(): Promise<PoolCheckpointDirFacts[]> {
    const found: PoolCheckpointDirFacts[] = [];
    for (const namespace of await safeSubdirectories(this.root)) {
      for (const pool of await safeSubdirectories(join(this.root, namespace))) {
        const path = join(this.root, namespace, pool);
        const changedAtMs = await newestChangeMs(path);
        // Gone meanwhile (removed by its agents, or by a janitor of an earlier Pod still stopping).
        if (changedAtMs !== undefined) found.push({ namespace, pool, path, changedAtMs });
      }
    }
    return found;
  }

  async remove(namespace: string, pool: string, changedBeforeMs: number): Promise<boolean> {
    if (!SAFE_NAME.test(namespace) || !SAFE_NAME.test(pool)) return false;
    const path = join(this.root, namespace, pool);
    const changedAtMs = await newestChangeMs(path);
    if (changedAtMs === undefined || changedAtMs >= changedBeforeMs) return false;
    const aside = join(this.root, namespace, `.${pool}.removing-${randomBytes(4).toString("hex")}`);
    try {
      await rename(path, aside);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw error;
    }
    await rm(aside, { recursive: true, force: true });
    return true;
  }

  async tidyNamespaceDirs(keepNamespaces: ReadonlySet<string>): Promise<RemovedCheckpointDir[]> {
    const removed: RemovedCheckpointDir[] = [];
    for (const namespace of await safeSubdirectories(this.root)) {
      const directory = join(this.root, namespace);
      for (const entry of await entries(directory)) {
        if (!entry.isDirectory() || !REMOVING.test(entry.name)) continue;
        await rm(join(directory, entry.name), { recursive: true, force: true });
        removed.push({ kind: "checkpoint_dir", path: join(directory, entry.name) });
      }
      if (keepNamespaces.has(namespace)) continue;
      try {
        // rmdir: only an empty directory goes, so one an agent has just written into stays.
        await rmdir(directory);
        removed.push({ kind: "checkpoint_dir", path: directory });
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST" && code !== "ENOENT") throw error;
      }
    }
    return removed;
  }
}

async function entries(directory: string): Promise<Dirent[]> {
  try {
    return await readdir(directory, { withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw error;
  }
}

/** The subdirectories named like a namespace or a pool; symbolic links are not followed. */
async function safeSubdirectories(directory: string): Promise<string[]> {
  return (await entries(directory)).filter((entry) => entry.isDirectory() && SAFE_NAME.test(entry.name)).map((entry) => entry.name);
}

/**
 * The newest change (modification or status change: a copy that kept old modification times, such
 * as `cp -p`, still counts as new) of the tree at `path`, directories included (an entry added or
 * removed changes its directory); undefined when `path` is gone.
 */
async function newestChangeMs(path: string): Promise<number | undefined> {
  let stats;
  try {
    stats = await lstat(path);
  } catch {
    return undefined;
  }
  let newest = Math.max(stats.mtimeMs, stats.ctimeMs);
  if (!stats.isDirectory()) return newest;
  let children: string[];
  try {
    children = await readdir(path);
  } catch {
    return newest;
  }
  for (const child of children) newest = Math.max(newest, (await newestChangeMs(join(path, child))) ?? -Infinity);
  return newest;
}
