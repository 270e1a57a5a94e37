import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export type CgroupVersion = 1 | 2;

export interface CgroupLayout {
  version: CgroupVersion;
  /** Mount point of the hierarchy (`/sys/fs/cgroup`). */
  root: string;
  /** v1: the controllers the agent places itself under. */
  controllers: string[];
}

const V1_CONTROLLERS = ["cpu", "memory", "pids"];

/** cgroup v2 is a single `cgroup2` mount at the root; v1/hybrid has one directory per controller. */
export function detectCgroupLayout(root = "/sys/fs/cgroup"): CgroupLayout {
  if (existsSync(join(root, "cgroup.controllers"))) return { version: 2, root, controllers: [] };
  return { version: 1, root, controllers: V1_CONTROLLERS.filter((c) => existsSync(join(root, c))) };
}

/**
 * Moves a process into `path` (e.g. `/fast-sandbox/default-0/agent`) in every hierarchy, creating it.
 * On v2 the agent's own process lives in a leaf (`.../agent`) because a cgroup that holds processes
 * cannot also delegate controllers to the sandboxes' cgroups beside it.
 */
export function joinCgroup(layout: CgroupLayout, path: string, pid: number): void {
  const directories = layout.version === 2 ? [join(layout.root, path)] : layout.controllers.map((controller) => join(layout.root, controller, path));
  for (const directory of directories) {
    mkdirSync(directory, { recursive: true });
    writeFileSync(join(directory, "cgroup.procs"), String(pid));
  }
  if (layout.version === 2) enableV2Controllers(layout.root, path);
}

/**
 * Enables cpu, memory and pids for the children of every ancestor of the leaf `path` (v2), the
 * agent's own cgroup included: its sandboxes' cgroups are the leaf's siblings.
 */
function enableV2Controllers(root: string, path: string): void {
  const parts = path.split("/").filter(Boolean);
  const ancestors = [root];
  for (const part of parts.slice(0, -1)) ancestors.push(join(ancestors[ancestors.length - 1] ?? root, part));
  for (const directory of ancestors) {
    const available = readFileSync(join(directory, "cgroup.controllers"), "utf8").split(/\s+/);
    const wanted = ["cpu", "memory", "pids"].filter((c) => available.includes(c));
    if (wanted.length === 0) continue;
    try {
      writeFileSync(join(directory, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
    } catch {
      // A cgroup with processes of its own refuses; the sandboxes then run without those limits there.
    }
  }
}

/** The memory controller's file that counts OOM kills, for the cgroup at `path` (e.g. `/fast-sandbox/default-0/sandboxes/sb-1`). */
function oomEventsFile(layout: CgroupLayout, path: string): string {
  // v1: memory.oom_control has `oom_kill N` (kernel 4.13+); v2: memory.events has `oom_kill N`, its descendants included.
  return layout.version === 2 ? join(layout.root, path, "memory.events") : join(layout.root, "memory", path, "memory.oom_control");
}

/**
 * How many processes of the cgroup at `path` the kernel's OOM killer has killed since the cgroup
 * was created; 0 when the cgroup (or its memory controller, or the counter) does not exist.
 */
export function readOomKillCount(layout: CgroupLayout, path: string): number {
  let text: string;
  try {
    text = readFileSync(oomEventsFile(layout, path), "utf8");
  } catch {
    return 0;
  }
  const match = /^oom_kill (\d+)$/m.exec(text);
  return match ? Number(match[1]) : 0;
}

/**
 * Removes the (empty) cgroup at `path` from every hierarchy it may exist in: the unified tree on v2;
 * on v1 every mounted hierarchy, since runc creates a container's cgroup in all of them. rmdir only:
 * a cgroup that still holds processes stays, and is returned. Missing directories are fine.
 */
export function removeCgroup(layout: CgroupLayout, path: string): string[] {
  const relative = path.replace(/^\/+/, "");
  if (relative === "") return [];
  const hierarchies = layout.version === 2 ? [layout.root] : v1Hierarchies(layout.root);
  const busy: string[] = [];
  for (const hierarchy of hierarchies) {
    const directory = join(hierarchy, relative);
    try {
      rmdirSync(directory);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== "ENOENT") busy.push(directory);
    }
  }
  return busy;
}

/**
 * SIGKILLs every host process in the cgroup at `path` (v2: through cgroup.kill where the kernel
 * has it), a few passes over its members in case one forked meanwhile; returns how many it
 * signalled. The last resort of a sandbox that a kill through its runtime did not end (a gVisor
 * sandbox whose task is stuck in an open of a host FIFO ignores the Sentry's SIGKILL).
 */
export function killCgroupProcesses(layout: CgroupLayout, path: string): number {
  const relative = path.replace(/^\/+/, "");
  if (relative === "") return 0;
  const directories = layout.version === 2 ? [join(layout.root, relative)] : v1Hierarchies(layout.root).map((hierarchy) => join(hierarchy, relative));
  if (layout.version === 2) {
    try {
      writeFileSync(join(directories[0] ?? "", "cgroup.kill"), "1");
    } catch {
      // an older kernel (no cgroup.kill) or no such cgroup: the members are signalled one by one
    }
  }
  let signalled = 0;
  for (let pass = 0; pass < 3; pass++) {
    const members = new Set<number>();
    for (const directory of directories) {
      try {
        for (const line of readFileSync(join(directory, "cgroup.procs"), "utf8").split("\n")) {
          const pid = Number.parseInt(line, 10);
          if (pid > 0) members.add(pid);
        }
      } catch {
        // no such cgroup in this hierarchy
      }
    }
    if (members.size === 0) break;
    for (const pid of members) {
      try {
        process.kill(pid, "SIGKILL");
        signalled += 1;
      } catch {
        // gone already
      }
    }
  }
  return signalled;
}

/** The distinct v1 hierarchies under `root` (`cpu` and `cpuacct` are often links to `cpu,cpuacct`). */
function v1Hierarchies(root: string): string[] {
  const seen = new Set<string>();
  try {
    for (const entry of readdirSync(root)) {
      try {
        seen.add(realpathSync(join(root, entry)));
      } catch {
        // a dangling link: nothing there
      }
    }
  } catch {
    return [];
  }
  return [...seen];
}
