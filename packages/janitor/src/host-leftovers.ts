/**
 * The janitor's port to what a sandbox leaves on the host outside containerd: its cgroup (every v1
 * hierarchy, or the v2 tree), the files in its agent's state directory (run directory, log file,
 * exec FIFOs; see the agent's state-layout.ts), and the stdio FIFOs a client of containerd made for
 * its task under containerd's FIFO directory (`/run/containerd/fifo/<n>/<container>-stdout`: ctr
 * and others; the agent itself logs to a file and makes none there). And what a gone agent leaves:
 * its own cgroup, its state directory, and the name of its Shared network namespace
 * (`/run/netns/fsb-agent-<agent>`, the agent's shared-network.ts). The local implementation works
 * on any root directories, so unit tests run it against prepared trees.
 */
import { execFile } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmdirSync, type Dirent } from "node:fs";
import { lstat, readdir, readFile, rmdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { FsbError } from "@fast-sandbox/api/core";
import {
  detectCgroupLayout,
  isContainerdId,
  isExecFifoName,
  killCgroupProcesses,
  sandboxIdOfLogFile,
  sandboxLogDir,
  sandboxLogFiles,
  sandboxLogPath,
  removeTree as removeFileTree,
  sandboxRunDir,
} from "@fast-sandbox/agent";
import { isRunning, parseProcessIdentity } from "@fast-sandbox/agent/process-identity";
import type { SandboxCgroupFacts } from "./orphans.js";

const run = promisify(execFile);

/** `state_dir`: (what is left of) a gone agent's state directory. */
export type HostFileKind = "run_dir" | "log_file" | "fifo" | "state_dir";

export interface RemovedFile {
  kind: HostFileKind;
  path: string;
}

export interface HostLeftovers {
  /** Agents that have a state directory on this host. */
  listAgentStateDirs(): Promise<string[]>;
  /**
   * Kills whatever still runs in the sandbox's cgroup and removes the cgroup from every hierarchy;
   * returns the directories removed. Throws when processes do not go away in time.
   */
  removeSandboxCgroup(cgroupsPath: string): Promise<string[]>;
  /**
   * SIGKILLs whatever runs in the sandbox's cgroup and returns at once (how many processes it saw):
   * the last resort for a task that outlived its runtime's SIGKILL. Removes nothing.
   */
  killSandboxCgroupProcesses(cgroupsPath: string): Promise<number>;
  /** Removes the sandbox's run directory, log file and exec FIFOs from its agent's state directory. */
  removeSandboxFiles(agent: string, sandboxId: string): Promise<RemovedFile[]>;
  /**
   * Removes what a gone agent left in its state directory (exec FIFOs, run directories, log files)
   * that has not changed since `changedBeforeMs`, except the files of `keepSandboxIds`.
   */
  removeStaleAgentFiles(agent: string, changedBeforeMs: number, keepSandboxIds: ReadonlySet<string>): Promise<RemovedFile[]>;
  /** Removes a gone agent's own cgroup tree where it is empty (rmdir only: never kills). */
  removeAgentCgroup(agent: string): Promise<string[]>;
  /** Whether anything of the agent's own cgroup tree is left, in any hierarchy. */
  hasAgentCgroup(agent: string): Promise<boolean>;
  /**
   * The cgroups under the agents' own cgroups that are named like those an agent makes for its
   * containers (a container id, or `fsb-anchor-<n>`), in any hierarchy. Only the agents named are
   * looked at: the cgroup root may hold cgroups of others (containerd's default parent is the
   * namespace's name, which is the Kubernetes mode's cgroup root).
   */
  listSandboxCgroups(agents: Iterable<string>): Promise<SandboxCgroupFacts[]>;
  /**
   * Removes the name of a gone agent's Shared network namespace (`fsb-agent-<agent>`), unmounting
   * it as `ip netns delete` does; returns its path, or undefined when there was none. The namespace
   * itself (its interfaces, its nftables tables) goes once nothing runs in it any more.
   */
  removeAgentNetworkNamespace(agent: string): Promise<string | undefined>;
  /**
   * Removes a gone agent's state directory once no file in it has changed since `changedBeforeMs`
   * and no process that runs holds its lock; a `checkpoints` directory in it that holds checkpoints
   * (an agent without FSB_CHECKPOINT_DIR keeps them there) stays, and with it the directory.
   */
  removeAgentStateDir(agent: string, changedBeforeMs: number): Promise<RemovedFile[]>;
  /**
   * Removes the stdio FIFOs named for the container (`<id>-stdin`, `-stdout`, `-stderr`) under
   * containerd's FIFO directory, and their directory once empty; call it once its task is gone.
   */
  removeContainerdFifos(containerId: string): Promise<RemovedFile[]>;
}

export interface LocalHostLeftoversOptions {
  /** Directory holding one state directory per agent (`<agentsDir>/<agent>`); absent: no files are touched. */
  agentsDir?: string;
  /** cgroup the embedded agents live under (`/<cgroupRoot>/<agent>`); "" or absent: agents' own cgroups are not touched. */
  cgroupRoot?: string;
  /**
   * The containerd namespaces looked after. Without a cgroup root an agent makes its sandboxes'
   * cgroups under `/<containerdNamespace>/<agent>` (the agent's main.ts): those are looked in for
   * leftover sandbox cgroups, though that cgroup itself is never removed (nothing says it is only
   * the agent's). Absent: none is.
   */
  containerdNamespaces?: readonly string[];
  /** @default "/sys/fs/cgroup" */
  cgroupMount?: string;
  /** How long processes killed in a cgroup may take to leave it. @default 5_000 */
  cgroupDrainTimeoutMs?: number;
  /** Where containerd's clients make their tasks' stdio FIFOs. @default "/run/containerd/fifo" */
  containerdFifoDir?: string;
  /** Where iproute2 names network namespaces, agents' Shared ones among them. @default "/run/netns" */
  netnsDir?: string;
  /**
   * Deletes the named network namespace of `netnsDir` (unmounts and unlinks it).
   * @default `ip netns delete <name>`, which knows /run/netns only: a test's `netnsDir` comes with its own
   */
  deleteNetns?: (name: string) => Promise<void>;
}

/** The children of an agent's cgroup that an agent with a cgroup of its own makes (the agent's main.ts): its process's, and its sandboxes' parent. */
const AGENT_CGROUP_CHILDREN = new Set(["agent", "sandboxes"]);

/** Where an agent without FSB_CHECKPOINT_DIR keeps its checkpoints, in its state directory (the agent's agent-config.ts). */
const CHECKPOINTS_DIR = "checkpoints";

/** The lock of an agent's state directory, naming the agent process that holds it (the agent's agent-instance-lock.ts). */
const AGENT_LOCK_FILE = "agent.lock";

/** The name of an agent's Shared network namespace (the agent's shared-network.ts). */
function sharedNetworkName(agent: string): string {
  return `fsb-agent-${agent}`;
}

/** The names a containerd client gives the stdio FIFOs of a container's task. */
const STDIO_FIFO_SUFFIXES = ["-stdin", "-stdout", "-stderr"] as const;

/** A name that is safe as one path segment: what agents and sandbox ids are made of. */
const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function isSafeName(name: string): boolean {
  return SAFE_NAME.test(name) && name !== "." && name !== "..";
}

/**
 * The segments of a cgroupfs `cgroupsPath` (`/a/b/c`), or undefined for anything else: relative or
 * systemd-style paths, `.`/`..`, or fewer than two segments (a top-level cgroup is never a sandbox's).
 */
export function cgroupPathSegments(cgroupsPath: string): string[] | undefined {
  if (!cgroupsPath.startsWith("/") || cgroupsPath.includes(":")) return undefined;
  const segments = cgroupsPath.split("/").filter((segment) => segment !== "");
  if (segments.length < 2 || !segments.every(isSafeName)) return undefined;
  return segments;
}

export class LocalHostLeftovers implements HostLeftovers {
  private readonly agentsDir: string | undefined;
  private readonly cgroupRoot: string;
  private readonly containerdNamespaces: readonly string[];
  private readonly cgroupMount: string;
  private readonly drainTimeoutMs: number;
  private readonly containerdFifoDir: string;
  private readonly netnsDir: string;
  private readonly deleteNetns: (name: string) => Promise<void>;

  constructor(options: LocalHostLeftoversOptions = {}) {
    this.agentsDir = options.agentsDir;
    this.cgroupRoot = (options.cgroupRoot ?? "").replace(/^\/+|\/+$/g, "");
    this.containerdNamespaces = options.containerdNamespaces ?? [];
    this.cgroupMount = options.cgroupMount ?? "/sys/fs/cgroup";
    this.drainTimeoutMs = options.cgroupDrainTimeoutMs ?? 5_000;
    this.containerdFifoDir = options.containerdFifoDir ?? "/run/containerd/fifo";
    this.netnsDir = options.netnsDir ?? "/run/netns";
    this.deleteNetns = options.deleteNetns ?? ipNetnsDelete;
  }

  async listAgentStateDirs(): Promise<string[]> {
    if (!this.agentsDir) return [];
    let entries: Dirent[];
    try {
      entries = await readdir(this.agentsDir, { withFileTypes: true });
    } catch (error) {
      if (errorCode(error) === "ENOENT") return [];
      throw error;
    }
    return entries.filter((entry) => entry.isDirectory() && isSafeName(entry.name)).map((entry) => entry.name);
  }

  async removeSandboxCgroup(cgroupsPath: string): Promise<string[]> {
    const segments = cgroupPathSegments(cgroupsPath);
    if (!segments) return [];
    const directories = this.hierarchies()
      .map((hierarchy) => join(hierarchy, ...segments))
      .filter((directory) => existsSync(directory));
    if (directories.length === 0) return [];
    const deadline = Date.now() + this.drainTimeoutMs;
    // Killed whether or not a process is seen: from a Pod without the host's PID namespace none is
    // (v2 lists them as 0), yet cgroup.kill reaches them all.
    await this.killProcesses(segments);
    for (;;) {
      const pids = new Set(directories.flatMap((directory) => treeProcesses(directory)));
      if (pids.size === 0) break;
      if (Date.now() > deadline) {
        throw new Error(`cgroup ${cgroupsPath} still holds processes ${[...pids].join(", ")} after SIGKILL`);
      }
      await sleep(50);
    }
    // The last processes may still be leaving (rmdir says EBUSY): retry until the window closes.
    const removed: string[] = [];
    for (;;) {
      for (const directory of directories) removed.push(...removeTree(directory));
      const left = directories.filter((directory) => existsSync(directory));
      if (left.length === 0) return removed;
      if (Date.now() > deadline) throw new Error(`could not remove cgroup ${left.join(", ")} (busy or not empty)`);
      await sleep(50);
    }
  }

  async killSandboxCgroupProcesses(cgroupsPath: string): Promise<number> {
    const segments = cgroupPathSegments(cgroupsPath);
    return segments ? this.killProcesses(segments) : 0;
  }

  /**
   * The agent's kill of a cgroup's processes (cgroup.ts): v2 writes `cgroup.kill` (the whole tree,
   * visible or not); v1 freezes the cgroup and SIGKILLs its members, which needs the host's PIDs
   * (the janitor's DaemonSet has hostPID). A v2 kernel without `cgroup.kill` (before 5.14) is left
   * to signal the processes it sees, if any.
   */
  private async killProcesses(segments: string[]): Promise<number> {
    const layout = detectCgroupLayout(this.cgroupMount);
    if (layout.version === 2) {
      const directory = join(layout.root, ...segments);
      if (!existsSync(join(directory, "cgroup.kill"))) {
        // Before Linux 5.14: each process of the tree it sees (nested cgroups included) gets SIGKILL.
        const pids = treeProcesses(directory).filter((pid) => pid > 0);
        for (const pid of pids) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
        return pids.length;
      }
    }
    return killCgroupProcesses(layout, `/${segments.join("/")}`);
  }

  async removeSandboxFiles(agent: string, sandboxId: string): Promise<RemovedFile[]> {
    const stateDir = this.stateDir(agent);
    if (!stateDir || !isSafeName(sandboxId)) return [];
    const removed: RemovedFile[] = [];
    if (await removePath(sandboxRunDir(stateDir, sandboxId))) removed.push({ kind: "run_dir", path: sandboxRunDir(stateDir, sandboxId) });
    for (const path of sandboxLogFiles(sandboxLogPath(stateDir, sandboxId))) if (await removePath(path)) removed.push({ kind: "log_file", path });
    for (const name of await listNames(stateDir)) {
      if (!isExecFifoName(name, sandboxId)) continue;
      const path = join(stateDir, name);
      if ((await isFifo(path)) && (await removePath(path))) removed.push({ kind: "fifo", path });
    }
    return removed;
  }

  async removeStaleAgentFiles(agent: string, changedBeforeMs: number, keepSandboxIds: ReadonlySet<string>): Promise<RemovedFile[]> {
    const stateDir = this.stateDir(agent);
    if (!stateDir) return [];
    const removed: RemovedFile[] = [];
    const stale = async (path: string) => {
      try {
        const stats = await lstat(path);
        return Math.max(stats.mtimeMs, stats.ctimeMs) < changedBeforeMs;
      } catch {
        return false;
      }
    };
    const kept = (name: string) => [...keepSandboxIds].some((id) => name === id || name.startsWith(`${id}.`));
    for (const name of await listNames(stateDir)) {
      const path = join(stateDir, name);
      if (isExecFifoName(name) && !kept(name) && (await isFifo(path)) && (await stale(path)) && (await removePath(path))) removed.push({ kind: "fifo", path });
    }
    const runDir = join(stateDir, "run");
    for (const name of await listNames(runDir)) {
      const path = join(runDir, name);
      if (isSafeName(name) && !kept(name) && (await stale(path)) && (await removePath(path))) removed.push({ kind: "run_dir", path });
    }
    const logDir = sandboxLogDir(stateDir);
    for (const name of await listNames(logDir)) {
      const path = join(logDir, name);
      const sandboxId = sandboxIdOfLogFile(name);
      if (sandboxId !== undefined && !kept(sandboxId) && (await stale(path)) && (await removePath(path))) {
        removed.push({ kind: "log_file", path });
      }
    }
    return removed;
  }

  async removeContainerdFifos(containerId: string): Promise<RemovedFile[]> {
    if (!isSafeName(containerId)) return [];
    const removed: RemovedFile[] = [];
    for (const name of await listNames(this.containerdFifoDir)) {
      if (!isSafeName(name)) continue;
      const directory = join(this.containerdFifoDir, name);
      const files = await listNames(directory);
      const ours = files.filter((file) => STDIO_FIFO_SUFFIXES.some((suffix) => file === `${containerId}${suffix}`));
      if (ours.length === 0) continue;
      for (const file of ours) {
        const path = join(directory, file);
        if ((await isFifo(path)) && (await removePath(path))) removed.push({ kind: "fifo", path });
      }
      // rmdir only: a directory that holds anything else is not ours to remove.
      if ((await listNames(directory)).length === 0) await rmdir(directory).catch(() => undefined);
    }
    return removed;
  }

  removeAgentCgroup(agent: string): Promise<string[]> {
    const segments = this.agentCgroupSegments(agent);
    if (!segments) return Promise.resolve([]);
    return Promise.resolve(this.hierarchies().flatMap((hierarchy) => removeTree(join(hierarchy, ...segments))));
  }

  /**
   * Removes the cgroup root's own directory where it is empty, in every hierarchy (rmdir only, and
   * not below it: a cgroup under it that is left — another instance's, nested, or one still in use —
   * keeps it); returns the directories removed. For after the agents under it are gone for good and
   * their cgroups with them (`fsb down --delete-sandboxes`). Nothing without a cgroup root.
   */
  removeCgroupRoot(): string[] {
    const segments = this.cgroupRoot.split("/").filter((segment) => segment !== "");
    if (segments.length === 0 || this.cgroupRoot.includes(":") || !segments.every(isSafeName)) return [];
    return this.hierarchies().flatMap((hierarchy) => {
      const directory = join(hierarchy, ...segments);
      try {
        rmdirSync(directory);
        return [directory];
      } catch {
        return []; // not empty, in use, or not there
      }
    });
  }

  hasAgentCgroup(agent: string): Promise<boolean> {
    const segments = this.agentCgroupSegments(agent);
    return Promise.resolve(!!segments && this.hierarchies().some((hierarchy) => existsSync(join(hierarchy, ...segments))));
  }

  /**
   * An agent's cgroup holds its sandboxes' and anchors' cgroups itself (the Kubernetes mode's
   * `/<namespace>/<agent>`), or, for an agent with a cgroup of its own (the embedded mode's
   * `/<cgroupRoot>/<agent>`), its process's (`agent`) and their parent (`sandboxes`) beside each
   * other: both are looked in, those two names never taken for a container's. Without a cgroup
   * root, an agent's sandboxes' parent is `/<containerdNamespace>/<agent>` in each namespace looked
   * after.
   */
  listSandboxCgroups(agents: Iterable<string>): Promise<SandboxCgroupFacts[]> {
    const found = new Map<string, SandboxCgroupFacts>();
    const hierarchies = this.hierarchies();
    for (const agent of new Set(agents)) {
      const segments = this.agentCgroupSegments(agent);
      const parents = segments
        ? [
            { segments: [...segments, "sandboxes"], skip: new Set<string>() },
            { segments, skip: AGENT_CGROUP_CHILDREN },
          ]
        : this.namespaceSandboxParents(agent).map((parent) => ({ segments: parent, skip: AGENT_CGROUP_CHILDREN }));
      for (const parent of parents) {
        for (const hierarchy of hierarchies) {
          for (const name of subdirectories(join(hierarchy, ...parent.segments))) {
            if (parent.skip.has(name) || !isSafeName(name) || !isContainerdId(name)) continue;
            const cgroupsPath = `/${[...parent.segments, name].join("/")}`;
            if (!found.has(cgroupsPath)) found.set(cgroupsPath, { agent, name, cgroupsPath });
          }
        }
      }
    }
    return Promise.resolve([...found.values()]);
  }

  async removeAgentNetworkNamespace(agent: string): Promise<string | undefined> {
    if (!isSafeName(agent)) return undefined;
    const name = sharedNetworkName(agent);
    const path = join(this.netnsDir, name);
    if (!(await pathExists(path))) return undefined;
    try {
      await this.deleteNetns(name);
    } catch (error) {
      // Deleted meanwhile by someone else: done all the same.
      if (await pathExists(path)) throw error;
    }
    if (await pathExists(path)) throw new Error(`${path} is still there after its deletion`);
    return path;
  }

  async removeAgentStateDir(agent: string, changedBeforeMs: number): Promise<RemovedFile[]> {
    const stateDir = this.stateDir(agent);
    if (!stateDir) return [];
    try {
      if (!(await lstat(stateDir)).isDirectory()) return [];
    } catch {
      return [];
    }
    const checkpoints = join(stateDir, CHECKPOINTS_DIR);
    // Checkpoints outlive their agent (a paused sandbox resumes from its checkpoint): never removed here.
    const keepCheckpoints = await holdsFile(checkpoints);
    if ((await newestFileChangeMs(stateDir, checkpoints)) >= changedBeforeMs) return [];
    // Nobody removes the lock of a running process (the agent's agent-instance-lock.ts): its holder
    // is an agent of that name still alive, whatever the inventory says. An agent in a Pod names
    // itself by its pid there, another process's (or none) on the host, whose start time does not
    // match: there the inventory alone decides.
    const holder = parseProcessIdentity((await readFile(join(stateDir, AGENT_LOCK_FILE), "utf8").catch(() => undefined))?.trim());
    if (holder && isRunning(holder)) return [];
    if (!keepCheckpoints) return (await removePath(stateDir)) ? [{ kind: "state_dir", path: stateDir }] : [];
    const removed: RemovedFile[] = [];
    for (const name of await listNames(stateDir)) {
      const path = join(stateDir, name);
      if (path !== checkpoints && (await removePath(path))) removed.push({ kind: "state_dir", path });
    }
    return removed;
  }

  private agentCgroupSegments(agent: string): string[] | undefined {
    return this.cgroupRoot && isSafeName(agent) ? cgroupPathSegments(`/${this.cgroupRoot}/${agent}`) : undefined;
  }

  /** Without a cgroup root: `/<containerdNamespace>/<agent>` for each namespace looked after. */
  private namespaceSandboxParents(agent: string): string[][] {
    if (this.cgroupRoot || !isSafeName(agent)) return [];
    return [...new Set(this.containerdNamespaces)].flatMap((namespace) => {
      const segments = cgroupPathSegments(`/${namespace}/${agent}`);
      return segments ? [segments] : [];
    });
  }

  private stateDir(agent: string): string | undefined {
    return this.agentsDir && isSafeName(agent) ? join(this.agentsDir, agent) : undefined;
  }

  /** v2: the one unified tree; v1: every mounted hierarchy (runc creates a sandbox's cgroup in all of them). */
  private hierarchies(): string[] {
    const layout = detectCgroupLayout(this.cgroupMount);
    if (layout.version === 2) return [layout.root];
    try {
      // Symbolic links (`cpu` → `cpu,cpuacct`) name a hierarchy twice; the real directory is enough.
      return readdirSync(layout.root, { withFileTypes: true })
        .filter((entry) => entry.isDirectory())
        .map((entry) => join(layout.root, entry.name));
    } catch {
      return [];
    }
  }
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

async function listNames(directory: string): Promise<string[]> {
  try {
    return await readdir(directory);
  } catch {
    return [];
  }
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether a file (anything but a directory) is anywhere in the tree. */
async function holdsFile(directory: string): Promise<boolean> {
  let entries: Dirent[];
  try {
    entries = await readdir(directory, { withFileTypes: true });
  } catch {
    return false;
  }
  for (const entry of entries) {
    if (!entry.isDirectory() || (await holdsFile(join(directory, entry.name)))) return true;
  }
  return false;
}

/**
 * The last change (modification or status change) of a file in the tree, `skip` and its contents
 * left out; -Infinity for none. Directories do not count: removing what is in one changes it, so
 * a pass's own removals would keep the state directory young.
 */
async function newestFileChangeMs(directory: string, skip: string): Promise<number> {
  let newest = -Infinity;
  let entries: Dirent[];
  try {
    entries = await readdir(directory, { withFileTypes: true });
  } catch {
    return newest;
  }
  for (const entry of entries) {
    const path = join(directory, entry.name);
    if (path === skip) continue;
    if (entry.isDirectory()) {
      newest = Math.max(newest, await newestFileChangeMs(path, skip));
      continue;
    }
    try {
      const stats = await lstat(path);
      newest = Math.max(newest, stats.mtimeMs, stats.ctimeMs);
    } catch {
      // gone meanwhile
    }
  }
  return newest;
}

/** iproute2's `ip netns delete`, as the agent removes its Shared network's name (shared-network.ts). */
async function ipNetnsDelete(name: string): Promise<void> {
  try {
    await run("ip", ["netns", "delete", name], { timeout: 10_000 });
  } catch (error) {
    const { code, stderr } = error as NodeJS.ErrnoException & { stderr?: string };
    if (code === "ENOENT")
      throw new FsbError("failed_precondition", "ip (iproute2) is missing: a network namespace cannot be removed without it", { cause: error });
    throw new FsbError("internal", `ip netns delete ${name} failed: ${(stderr ?? "").trim() || String(error)}`, { cause: error });
  }
}

async function isFifo(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isFIFO();
  } catch {
    return false;
  }
}

/** Removes a file or directory tree; false when nothing was there. */
async function removePath(path: string): Promise<boolean> {
  try {
    await lstat(path);
  } catch {
    return false;
  }
  // A sandbox's run directory may be deeper than PATH_MAX.
  await removeFileTree(path);
  return true;
}

/** The pids in a cgroup and its descendants. */
function treeProcesses(directory: string): number[] {
  const pids: number[] = [];
  try {
    for (const line of readFileSync(join(directory, "cgroup.procs"), "utf8").split("\n")) {
      const pid = Number(line.trim());
      if (Number.isInteger(pid) && pid > 0) pids.push(pid);
    }
  } catch {
    // no such file (not a cgroup, or gone): nothing runs there
  }
  for (const child of subdirectories(directory)) pids.push(...treeProcesses(join(directory, child)));
  return pids;
}

function subdirectories(directory: string): string[] {
  try {
    return readdirSync(directory, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name);
  } catch {
    return [];
  }
}

/**
 * rmdir of a cgroup tree, deepest first; returns the directories removed. A cgroup directory holds
 * only the kernel's virtual files, so rmdir succeeds once it has no processes and no children;
 * anything still in use stays.
 */
function removeTree(directory: string): string[] {
  if (!existsSync(directory)) return [];
  const removed: string[] = [];
  for (const child of subdirectories(directory)) removed.push(...removeTree(join(directory, child)));
  try {
    rmdirSync(directory);
    removed.push(directory);
  } catch {
    // busy, not empty, or already gone
  }
  return removed;
}
