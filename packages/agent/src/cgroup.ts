import { existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, rmdirSync, writeFileSync, type Dirent } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { FailedPreconditionError, UnavailableError } from "@fast-sandbox/api/core";
import { CPU_PERIOD_US, cpuQuotaUs } from "./containerd/oci-spec.js";

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
 * cannot also delegate controllers to the sandboxes' cgroups beside it; then cpu, memory and pids
 * are enabled down to the leaf's parent, and the join throws when one is not (a cgroup above that
 * holds processes, say): without pids every sandbox's create would fail (runc writes pids.max), and
 * without cpu and memory their limits and the agent's.
 */
export function joinCgroup(layout: CgroupLayout, path: string, pid: number): void {
  const directories = layout.version === 2 ? [join(layout.root, path)] : layout.controllers.map((controller) => join(layout.root, controller, path));
  for (const directory of directories) {
    mkdirSync(directory, { recursive: true });
    writeFileSync(join(directory, "cgroup.procs"), String(pid));
  }
  if (layout.version !== 2) return;
  const missing = enableV2Controllers(layout.root, path);
  if (missing.length > 0) throw new FailedPreconditionError([...new Set(missing.map((m) => m.reason))].join("; "));
}

/** A bound on everything below a cgroup together: CPU in thousandths of a core, memory in bytes. */
export interface CgroupLimits {
  cpuMillis?: number;
  memoryBytes?: number;
}

/** The smallest CFS quota the kernel accepts (1 ms). */
const MIN_CPU_QUOTA_US = 1_000;

/**
 * Creates the cgroup at `path` and bounds it with exactly `limits`, so that the cgroups made below
 * it (an agent's sandboxes) share them; a limit left out is lifted (a cgroup kept from an agent
 * that had one) where its file is there (none is for a controller not enabled there: nothing to
 * lift). v2: `cpu.max` and `memory.max`, with cpu, memory and pids enabled for its
 * ancestors' children and its own; v1: `cpu.cfs_quota_us` over `cpu.cfs_period_us` and
 * `memory.limit_in_bytes` (hierarchical with `memory.use_hierarchy`, which systemd sets on the root
 * and Linux 5.11+ always has). The memory limit bounds swap too, where the kernel accounts it (the
 * file exists): v2 `memory.swap.max` 0 (no swap at all), v1 `memory.memsw.limit_in_bytes` (memory
 * and swap together) the same limit — else a sandbox could go past its bound into the node's swap.
 * A memory limit below what the cgroup holds already is not written
 * (v2 would OOM-kill the sandboxes in it, v1 refuses): the old bound stays. Each limit is written
 * whatever became of the other; then throws what was refused or skipped (also a controller not
 * delegated here, with the cgroup above that did not enable it and why). On v1, where the kernel
 * refuses a CPU bound below a quota of a cgroup under it,
 * such quotas are first lowered to the bound (v2 needs no such step: a cgroup gets the lesser of its
 * own and its ancestors' bounds).
 */
export function limitCgroup(layout: CgroupLayout, path: string, limits: CgroupLimits): void {
  const relative = path.replace(/^\/+/, "");
  if (relative === "") throw new Error("refusing to limit the root cgroup");
  const quota = limits.cpuMillis === undefined ? undefined : Math.max(MIN_CPU_QUOTA_US, cpuQuotaUs(limits.cpuMillis));
  const v2 = layout.version === 2;
  const cpu = v2 ? join(layout.root, relative) : join(layout.root, "cpu", relative);
  const memory = v2 ? join(layout.root, relative) : join(layout.root, "memory", relative);
  /** [directory, file, value] to write, each tried whatever became of the others. */
  const writes: [string, string, string][] = [];
  const failures: string[] = [];
  /** v2: the controllers not enabled for the cgroup, and why (its writes would say only EACCES). */
  let missing: MissingController[] = [];
  if (v2) {
    mkdirSync(cpu, { recursive: true });
    // Its ancestors' subtree_control makes its own files appear; its own, its children's.
    missing = enableV2Controllers(layout.root, `${relative}/child`);
    writes.push([cpu, "cpu.max", `${quota ?? "max"} ${CPU_PERIOD_US}`]);
    writes.push(...memoryWrites(memory, limits.memoryBytes, true));
  } else {
    if (layout.controllers.includes("cpu")) {
      // v1 refuses a bound below a quota under it: those quotas come down to the bound first, as
      // the sandbox's own limit above its agent's is written for a new sandbox (v2 takes the lesser).
      if (quota !== undefined) clampV1Quotas(cpu, quota / CPU_PERIOD_US, failures);
      writes.push([cpu, "cpu.cfs_period_us", String(CPU_PERIOD_US)], [cpu, "cpu.cfs_quota_us", String(quota ?? -1)]);
    }
    if (layout.controllers.includes("memory")) writes.push(...memoryWrites(memory, limits.memoryBytes, false));
  }
  /** A memory write refused or skipped: the memory files after it are left as they are (v1 orders them). */
  let memoryLeft = false;
  for (const [directory, file, value] of writes) {
    const isMemory = file.startsWith("memory");
    if (isMemory && memoryLeft) continue;
    try {
      mkdirSync(directory, { recursive: true });
      // A limit lifted where its file is not there has nothing to lift (the controller is not
      // enabled here: cpu refused, say); cgroupfs would refuse the write.
      const lift = isMemory ? limits.memoryBytes === undefined : quota === undefined;
      if (lift && !existsSync(join(directory, file))) continue;
      const held = isMemory && limits.memoryBytes !== undefined ? readNumber(join(directory, v2 ? "memory.current" : "memory.usage_in_bytes")) : 0;
      if (held > (limits.memoryBytes ?? Infinity)) {
        failures.push(`${join(directory, file)} = ${value}: the cgroup holds ${held} bytes already; its bound is left as it was`);
        memoryLeft = true;
        continue;
      }
      writeFileSync(join(directory, file), value);
    } catch (error) {
      const why = missing.find((m) => m.controller === (isMemory ? "memory" : "cpu"));
      failures.push(`${join(directory, file)} = ${value}: ${(error as Error).message}${why ? ` (${why.reason})` : ""}`);
      if (isMemory) memoryLeft = true;
    }
  }
  if (failures.length > 0) throw new Error(`could not bound the cgroup: ${failures.join("; ")}`);
}

/**
 * The memory bound of the cgroup at `directory`, swap included where the kernel accounts it (its
 * file is there). v2: `memory.max`, then `memory.swap.max` 0 (max when lifted). v1:
 * `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes` (memory and swap together) alike, in
 * the order the kernel takes (memsw never below memory): memsw first when the bound rises or is
 * lifted, memory first when it comes down.
 */
function memoryWrites(directory: string, bytes: number | undefined, v2: boolean): [string, string, string][] {
  try {
    // The kernel makes a new cgroup's files with it: whether swap is accounted shows only then.
    mkdirSync(directory, { recursive: true });
  } catch {
    // The writes fail and say why.
  }
  if (v2) {
    const writes: [string, string, string][] = [[directory, "memory.max", String(bytes ?? "max")]];
    if (existsSync(join(directory, "memory.swap.max"))) writes.push([directory, "memory.swap.max", bytes === undefined ? "max" : "0"]);
    return writes;
  }
  const value = String(bytes ?? -1);
  const memory: [string, string, string] = [directory, "memory.limit_in_bytes", value];
  if (!existsSync(join(directory, "memory.memsw.limit_in_bytes"))) return [memory];
  const withSwap: [string, string, string] = [directory, "memory.memsw.limit_in_bytes", value];
  // The kernel shows no limit as a huge number (and a new cgroup's file holds that): any bound is below it.
  const current = readNumber(join(directory, "memory.limit_in_bytes"));
  const rising = bytes === undefined || (current > 0 && bytes >= current);
  return rising ? [withSwap, memory] : [memory, withSwap];
}

/**
 * v1: lowers every CFS quota below `directory` that gives more than `ratio` cores to `ratio` (deepest
 * first: the kernel checks each against its parent's); an unlimited one (-1) stays, being bounded by
 * its ancestors. What cannot be lowered goes into `failures`.
 */
function clampV1Quotas(directory: string, ratio: number, failures: string[]): void {
  let entries: Dirent[];
  try {
    entries = readdirSync(directory, { withFileTypes: true });
  } catch {
    return; // not made yet: nothing under it
  }
  for (const entry of entries) {
    if (!entry.isDirectory()) continue;
    const child = join(directory, entry.name);
    clampV1Quotas(child, ratio, failures);
    const quota = readNumber(join(child, "cpu.cfs_quota_us"));
    const period = readNumber(join(child, "cpu.cfs_period_us"));
    if (quota <= 0 || period <= 0 || quota <= ratio * period) continue;
    const lowered = Math.max(MIN_CPU_QUOTA_US, Math.floor(ratio * period));
    try {
      writeFileSync(join(child, "cpu.cfs_quota_us"), String(lowered));
    } catch (error) {
      failures.push(`${join(child, "cpu.cfs_quota_us")} = ${lowered} (down from ${quota}, under the new bound): ${(error as Error).message}`);
    }
  }
}

/** Whether the cgroup at `path` exists (v2: in the unified tree; v1: in the cpu or memory hierarchy). */
export function cgroupExists(layout: CgroupLayout, path: string): boolean {
  const relative = path.replace(/^\/+/, "");
  if (layout.version === 2) return existsSync(join(layout.root, relative));
  return ["cpu", "memory"].some((controller) => existsSync(join(layout.root, controller, relative)));
}

/** The number a cgroup file holds; 0 when it cannot be read (a fresh cgroup, a test's tree). */
function readNumber(file: string): number {
  try {
    return Number(readFileSync(file, "utf8").trim()) || 0;
  } catch {
    return 0;
  }
}

/** The v2 controllers the sandboxes' cgroups need: runc always writes pids.max, and cpu.max and memory.max for limits. */
const V2_CONTROLLERS = ["cpu", "memory", "pids"];

/** A controller not enabled for a leaf's siblings, and why, in words for the agent's operator. */
interface MissingController {
  controller: string;
  reason: string;
}

/**
 * Enables cpu, memory and pids (those the hierarchy's root offers) for the children of every
 * ancestor of the leaf `path` (v2), the agent's own cgroup included: its sandboxes' cgroups are the
 * leaf's siblings. One controller a write, as runc does: the kernel takes a write of several all or
 * nothing, and one it refuses (cpu while a realtime task runs, with RT group scheduling) would take
 * the others with it. Returns those the leaf's parent does not enable in the end, each with the
 * first ancestor that did not and why (read back, not taken from the writes: one enabled already
 * needs none).
 */
function enableV2Controllers(root: string, path: string): MissingController[] {
  const parts = path.split("/").filter(Boolean);
  const ancestors = [root];
  for (const part of parts.slice(0, -1)) ancestors.push(join(ancestors[ancestors.length - 1] ?? root, part));
  const offered = controllersIn(join(root, "cgroup.controllers"));
  const wanted = V2_CONTROLLERS.filter((c) => offered.includes(c));
  const missing = new Map<string, MissingController>();
  for (const directory of ancestors) {
    const available = controllersIn(join(directory, "cgroup.controllers"));
    const enabled = controllersIn(join(directory, "cgroup.subtree_control"));
    const refused = new Map<string, NodeJS.ErrnoException>();
    // One its parent does not enable is not available here: that parent is named already.
    for (const controller of wanted.filter((c) => available.includes(c) && !enabled.includes(c))) {
      try {
        writeFileSync(join(directory, "cgroup.subtree_control"), `+${controller}`);
      } catch (error) {
        refused.set(controller, error as NodeJS.ErrnoException);
      }
    }
    const now = controllersIn(join(directory, "cgroup.subtree_control"));
    const lacking = wanted.filter((c) => !now.includes(c) && !missing.has(c));
    if (lacking.length === 0) continue;
    const reason = whyNotEnabled(directory, lacking, refused);
    for (const controller of lacking) missing.set(controller, { controller, reason });
  }
  return [...missing.values()];
}

/**
 * Why `directory` does not enable `controllers` for its children. The common case first, in words
 * that fit the line `fsb up` quotes of an agent that failed to start: a cgroup (not the root) that
 * holds processes cannot enable any (the kernel's "no internal processes" rule) — as a systemd unit
 * with Delegate=yes does whose main process stays in the unit's own cgroup.
 */
function whyNotEnabled(directory: string, controllers: string[], refused: Map<string, NodeJS.ErrnoException>): string {
  const names = controllers.join(", ");
  const procs = readLines(join(directory, "cgroup.procs"));
  const busy = controllers.some((c) => refused.get(c)?.code === "EBUSY");
  if (busy && procs.length > 0) {
    const shown = procs.length > 2 ? `${procs.slice(0, 2).join(", ")}…` : procs.join(", ");
    return (
      `cgroup ${directory} holds processes (pid ${shown}): the kernel will not enable ${names} below it. ` +
      `Choose a --cgroup-root with no processes in the cgroups above, or move these into a leaf cgroup first (systemd's CGROUP_DELEGATION.md)`
    );
  }
  const errors = controllers.map((c) => `${c}: ${refused.get(c)?.message ?? "not enabled"}`);
  return `cgroup ${directory} does not enable ${names} for the cgroups below it (${errors.join("; ")})`;
}

/** The controllers a cgroup file lists (`cgroup.controllers`, `cgroup.subtree_control`); none when it cannot be read. */
function controllersIn(file: string): string[] {
  return readLines(file).flatMap((line) => line.split(/\s+/));
}

/** The non-empty lines of a file, trimmed; none when it cannot be read. */
function readLines(file: string): string[] {
  try {
    return readFileSync(file, "utf8")
      .split("\n")
      .map((line) => line.trim())
      .filter(Boolean);
  } catch {
    return [];
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

/** What a cgroup's processes use now, and its bounds (0: none, or the controller is not there). */
export interface CgroupUsage {
  /** CPU time used since the cgroup was made, in nanoseconds. */
  cpuUsageNanos: number;
  /** The CFS bound in thousandths of a core. */
  cpuLimitMillis: number;
  /** Memory charged to it (page cache included), in bytes. */
  memoryUsedBytes: number;
  /** Of that, the page cache: `file` of v2's memory.stat, `total_cache` of v1's. */
  memoryCacheBytes: number;
  memoryLimitBytes: number;
  /** Tasks (processes and threads) in it. */
  pids: number;
}

/** Above this a v1 memory limit means "none" (the kernel's PAGE_COUNTER_MAX, rounded to pages). */
const V1_NO_MEMORY_LIMIT = 2 ** 62;

/**
 * The usage of the cgroup at `path` (e.g. `/fast-sandbox/default-0/sandboxes/sb-1`), read from
 * its files: v2 `cpu.stat` (usage_usec), `cpu.max`, `memory.current`, `memory.max`,
 * `memory.stat` (file), `pids.current`; v1 `cpuacct.usage`, `cpu.cfs_quota_us` over
 * `cpu.cfs_period_us`, `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.stat`
 * (total_cache), `pids.current`. A file that cannot be read counts 0.
 */
export function readCgroupUsage(layout: CgroupLayout, path: string): CgroupUsage {
  const relative = path.replace(/^\/+/, "");
  const read = (file: string): string => {
    try {
      return readFileSync(file, "utf8").trim();
    } catch {
      return "";
    }
  };
  const statOf = (file: string, key: string): number => Number(new RegExp(`^${key} (\\d+)$`, "m").exec(read(file))?.[1] ?? 0);
  if (layout.version === 2) {
    const directory = join(layout.root, relative);
    const usageUsec = /^usage_usec (\d+)$/m.exec(read(join(directory, "cpu.stat")))?.[1];
    const [quota, period] = read(join(directory, "cpu.max")).split(/\s+/);
    const memoryMax = read(join(directory, "memory.max"));
    return {
      cpuUsageNanos: Number(usageUsec ?? 0) * 1000,
      cpuLimitMillis: quota && quota !== "max" && Number(period) > 0 ? Math.round((Number(quota) / Number(period)) * 1000) : 0,
      memoryUsedBytes: Number(read(join(directory, "memory.current"))) || 0,
      memoryCacheBytes: statOf(join(directory, "memory.stat"), "file"),
      memoryLimitBytes: memoryMax && memoryMax !== "max" ? Number(memoryMax) || 0 : 0,
      pids: Number(read(join(directory, "pids.current"))) || 0,
    };
  }
  const quota = Number(read(join(layout.root, "cpu", relative, "cpu.cfs_quota_us")));
  const period = Number(read(join(layout.root, "cpu", relative, "cpu.cfs_period_us")));
  const memoryLimit = Number(read(join(layout.root, "memory", relative, "memory.limit_in_bytes"))) || 0;
  return {
    cpuUsageNanos: Number(read(join(layout.root, "cpuacct", relative, "cpuacct.usage"))) || 0,
    cpuLimitMillis: quota > 0 && period > 0 ? Math.round((quota / period) * 1000) : 0,
    memoryUsedBytes: Number(read(join(layout.root, "memory", relative, "memory.usage_in_bytes"))) || 0,
    memoryCacheBytes: statOf(join(layout.root, "memory", relative, "memory.stat"), "total_cache"),
    memoryLimitBytes: memoryLimit >= V1_NO_MEMORY_LIMIT ? 0 : memoryLimit,
    pids: Number(read(join(layout.root, "pids", relative, "pids.current"))) || 0,
  };
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
 * SIGKILLs every host process in the cgroup at `path` and returns how many there were. The last
 * resort of a sandbox that a kill through its runtime did not end (a gVisor sandbox whose task is
 * stuck in the open of a host FIFO ignores the Sentry's SIGKILL). No process outside the cgroup is
 * signalled, a pid reused meanwhile included: v2 kills through cgroup.kill (the kernel's, atomic);
 * v1 freezes the cgroup first (a frozen member cannot exit, so its pid cannot be reused), signals
 * its members and thaws it, so they die. Without either (a v2 kernel before 5.14, no v1 freezer),
 * each pid is checked to be the cgroup's just before its signal.
 *
 * A caller outside the host's PID namespace (an agent Pod without hostPID) cannot name the
 * processes: v2's cgroup.procs lists each as 0, v1's leaves them out. cgroup.kill reaches them all
 * the same, and they are counted by cgroup.procs' lines; without it none can be signalled, and this
 * throws an UnavailableError that says so (the janitor, in the host's PID namespace, can kill them)
 * rather than report 0 killed.
 */
export async function killCgroupProcesses(layout: CgroupLayout, path: string): Promise<number> {
  const relative = path.replace(/^\/+/, "");
  if (relative === "") return 0;
  if (layout.version === 2) {
    const directory = join(layout.root, relative);
    // Counted before the kill, the cgroups below included (cgroup.kill kills them too).
    const there = countV2Processes(directory);
    try {
      // Written whatever the members read: it kills the cgroups below too, and who joined since.
      writeFileSync(join(directory, "cgroup.kill"), "1");
      return there;
    } catch {
      const { pids, hidden } = cgroupMembers([directory]);
      const signalled = killCheckedMembers(pids, `0::/${relative}`);
      if (hidden > 0) throw outOfReach(relative, signalled, `${hidden} processes`, "this kernel (before Linux 5.14)");
      return signalled;
    }
  }
  const freezer = join(layout.root, "freezer", relative);
  const state = join(freezer, "freezer.state");
  let frozen = false;
  try {
    writeFileSync(state, "FROZEN");
    frozen = true;
    // Freezing takes a moment (FREEZING until every member stopped); one that will not freeze is
    // signalled all the same, its pid checked like without a freezer.
    for (let waited = 0; waited < 1_000 && readFileSync(state, "utf8").trim() !== "FROZEN"; waited += 5) await sleep(5);
    if (readFileSync(state, "utf8").trim() === "FROZEN") {
      const members = cgroupMembers([freezer]);
      for (const pid of members.pids) signalKill(pid);
      const hidden = members.pids.length > 0 ? members.hidden : await unseenV1Tasks(layout.root, relative, members.hidden);
      if (hidden > 0) throw outOfReach(relative, members.pids.length, `${hidden} tasks`, "cgroup v1");
      return members.pids.length;
    }
  } catch (error) {
    if (error instanceof UnavailableError) throw error;
    // no freezer hierarchy, or no such cgroup in it
  } finally {
    // Thawed, the members signalled die; left frozen they would not. A cgroup gone meanwhile (its
    // last member exited, the runtime removed it) needs no thaw.
    if (frozen) thaw(state);
  }
  const members = cgroupMembers(v1Hierarchies(layout.root).map((hierarchy) => join(hierarchy, relative)));
  const signalled = killCheckedMembers(members.pids, `:/${relative}`);
  const hidden = members.pids.length > 0 ? members.hidden : await unseenV1Tasks(layout.root, relative, members.hidden);
  if (hidden > 0) throw outOfReach(relative, signalled, `${hidden} tasks`, "cgroup v1");
  return signalled;
}

/**
 * The processes of the cgroup at `path` and of the cgroups below it, by their pids in this process's
 * PID namespace (v1: its pids hierarchy's, else every hierarchy's); empty when there are none, or
 * when they are in another PID namespace (an agent Pod without hostPID sees none by pid).
 */
export function cgroupProcessIds(layout: CgroupLayout, path: string): number[] {
  const relative = path.replace(/^\/+/, "");
  if (relative === "") return [];
  const roots =
    layout.version === 2
      ? [join(layout.root, relative)]
      : existsSync(join(layout.root, "pids", relative))
        ? [join(layout.root, "pids", relative)]
        : v1Hierarchies(layout.root).map((hierarchy) => join(hierarchy, relative));
  const directories: string[] = [];
  const pending = [...roots];
  while (pending.length > 0) {
    const directory = pending.pop()!;
    directories.push(directory);
    try {
      for (const entry of readdirSync(directory, { withFileTypes: true })) if (entry.isDirectory()) pending.push(join(directory, entry.name));
    } catch {
      // not there (any more)
    }
  }
  return cgroupMembers(directories).pids;
}

/**
 * v1, where the cgroup's cgroup.procs lists no process: the tasks its pids hierarchy counts all the
 * same (`zeros`, the 0s a listing gave, at least), which are in another PID namespace (v1 leaves them
 * out of the listing) — unless a cgroup below has them, or they are exiting: those get a moment to go.
 */
async function unseenV1Tasks(root: string, relative: string, zeros: number): Promise<number> {
  const directory = join(root, "pids", relative);
  for (let waited = 0; ; waited += 50) {
    const counted = Math.max(zeros, readNumber(join(directory, "pids.current")));
    if (counted === 0 || hasListedProcess(directory)) return 0;
    if (waited >= 200) return counted;
    await sleep(50);
  }
}

/** Whether a cgroup below `directory` lists a process by its pid (one this process can signal). */
function hasListedProcess(directory: string): boolean {
  let entries: Dirent[];
  try {
    entries = readdirSync(directory, { withFileTypes: true });
  } catch {
    return false;
  }
  return entries.some(
    (entry) => entry.isDirectory() && (cgroupMembers([join(directory, entry.name)]).pids.length > 0 || hasListedProcess(join(directory, entry.name))),
  );
}

/**
 * The error of a kill that could not reach the cgroup's processes: they are in another PID namespace
 * and the kernel has no cgroup.kill. `count` says how many, in the unit the kernel gives.
 */
function outOfReach(relative: string, signalled: number, count: string, kernel: string): UnavailableError {
  const also = signalled > 0 ? ` (${signalled} others were)` : "";
  return new UnavailableError(
    `could not kill the processes of cgroup /${relative}: ${count} there are outside this process's PID namespace (a Pod without hostPID), ` +
      `which cannot signal them, and ${kernel} has no cgroup.kill; none of those was killed${also}. The janitor, in the host's PID namespace, can kill them`,
  );
}

/** v2: the processes in the cgroup at `directory` and those below it: the lines of their cgroup.procs, 0s included. */
function countV2Processes(directory: string): number {
  let count = readLines(join(directory, "cgroup.procs")).length;
  try {
    for (const entry of readdirSync(directory, { withFileTypes: true })) {
      if (entry.isDirectory()) count += countV2Processes(join(directory, entry.name));
    }
  } catch {
    // not there (any more)
  }
  return count;
}

function thaw(state: string): void {
  for (let attempt = 1; ; attempt++) {
    try {
      writeFileSync(state, "THAWED");
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
      if (attempt >= 3) throw error;
    }
  }
}

/**
 * The pids in the cgroup.procs of each of `directories` (a missing one has none), and how many
 * lines are 0 (in one of them): processes outside the reader's PID namespace, as v2 lists them.
 */
function cgroupMembers(directories: string[]): { pids: number[]; hidden: number } {
  const members = new Set<number>();
  let hidden = 0;
  for (const directory of directories) {
    const lines = readLines(join(directory, "cgroup.procs"));
    for (const pid of lines.map((line) => Number.parseInt(line, 10))) if (pid > 0) members.add(pid);
    // Each v1 hierarchy lists the same processes.
    hidden = Math.max(hidden, lines.filter((line) => Number.parseInt(line, 10) === 0).length);
  }
  return { pids: [...members], hidden };
}

/** SIGKILLs each of `pids` whose /proc/PID/cgroup still has a line ending in `suffix`; how many it signalled. */
function killCheckedMembers(pids: number[], suffix: string): number {
  let signalled = 0;
  for (const pid of pids) {
    let lines: string[];
    try {
      lines = readFileSync(`/proc/${pid}/cgroup`, "utf8").split("\n");
    } catch {
      continue; // gone
    }
    if (lines.some((line) => line.endsWith(suffix)) && signalKill(pid)) signalled += 1;
  }
  return signalled;
}

function signalKill(pid: number): boolean {
  try {
    process.kill(pid, "SIGKILL");
    return true;
  } catch {
    return false; // gone already
  }
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
