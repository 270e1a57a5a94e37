/**
 * The baseline: `ctr run -d` of the same image on the same containerd (same namespace, same
 * snapshotter, same command), timed as a whole CLI invocation, and the clean-up helpers.
 */
import { execFile } from "node:child_process";
import { readFileSync, readdirSync, rmSync, rmdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { writeRunscWrapper } from "../packages/agent/src/containerd/gvisor-binary.js";

const execFileAsync = promisify(execFile);

export interface CtrOptions {
  /** containerd namespace. */
  namespace: string;
  /** containerd socket. @default "/run/containerd/containerd.sock" */
  address?: string;
  /** `ctr run --runc-binary`: the runtime binary of the baseline's containers (a runsc wrapper for gVisor). @default runc */
  runcBinary?: string;
}

/**
 * The baseline on gVisor: `ctr run --runc-binary` a wrapper of the runsc the agents take
 * (FSB_RUNSC_PATH, default /usr/bin/runsc) with the agents' flags for a Shared sandbox
 * (`--network=none`, the memory root overlay, host FIFOs, the OCI seccomp profile: gvisor-binary.ts),
 * written into `stateDir` (which must outlive the run's containers). runsc refuses the host's
 * network namespace, and `ctr run` makes no other: `--network=none` is what a plain `ctr run` can have.
 */
export function runscCtrOptions(namespace: string, stateDir: string): CtrOptions {
  const runscPath = process.env.FSB_RUNSC_PATH || "/usr/bin/runsc";
  return { namespace, runcBinary: writeRunscWrapper(stateDir, runscPath) };
}

function ctrArgs(options: CtrOptions, args: string[]): string[] {
  return ["--address", options.address ?? "/run/containerd/containerd.sock", "-n", options.namespace, ...args];
}

export async function ctr(options: CtrOptions, ...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync("ctr", ctrArgs(options, args), { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/**
 * Runs `ctr -n NS run -d [--runc-binary B] IMAGE ID COMMAND...` and returns how long the whole command took (process
 * spawn to exit, ms). `ctr run -d` returns after containerd's Tasks.Start, as CreateSandbox does.
 */
export async function timedCtrRun(options: CtrOptions, image: string, id: string, command: readonly string[]): Promise<number> {
  const started = performance.now();
  const binary = options.runcBinary ? ["--runc-binary", options.runcBinary] : [];
  await execFileAsync("ctr", ctrArgs(options, ["run", "-d", ...binary, image, id, ...command]), { encoding: "utf8" });
  return performance.now() - started;
}

/** Kills and removes one container `ctr run` made (task, container and, with it, its snapshot). Not timed. */
export async function removeCtrContainer(options: CtrOptions, id: string): Promise<void> {
  await ctr(options, "task", "kill", "-a", "-s", "SIGKILL", id).catch(() => undefined);
  // `task rm -f` waits for the killed process and deletes the task even if the kill raced its exit.
  await ctr(options, "task", "rm", "-f", id).catch(() => undefined);
  await ctr(options, "container", "rm", id).catch(() => undefined);
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "");
}

/**
 * Removes every task, container and active (container) snapshot of the namespace; keeps images and
 * their committed layer snapshots, so the next run finds the image unpacked. The namespace must be
 * the benchmark's own. Returns what it removed.
 */
export async function cleanNamespace(options: CtrOptions): Promise<{ tasks: number; containers: number; snapshots: number; bundles: number }> {
  const tasks = lines(await ctr(options, "task", "ls", "-q"));
  for (const task of tasks) {
    await ctr(options, "task", "kill", "-a", "-s", "SIGKILL", task).catch(() => undefined);
    await ctr(options, "task", "rm", "-f", task).catch(() => undefined);
  }
  const containers = lines(await ctr(options, "container", "ls", "-q"));
  for (const container of containers) await ctr(options, "container", "rm", container).catch(() => undefined);
  // `ctr snapshots ls`: KEY PARENT KIND; container snapshots are Active, image layers Committed.
  const active = lines(await ctr(options, "snapshots", "ls"))
    .slice(1)
    .map((line) => line.split(/\s+/))
    .filter((fields) => fields[fields.length - 1] === "Active")
    .map((fields) => fields[0]!);
  for (const key of active) await ctr(options, "snapshots", "rm", key).catch(() => undefined);
  const bundles = removeStaleBundles(options.namespace, new Set(lines(await ctr(options, "container", "ls", "-q"))));
  return { tasks: tasks.length, containers: containers.length, snapshots: active.length, bundles };
}

/**
 * containerd 1.6 leaves a task's bundle directory behind when Tasks.Create fails while the shim
 * starts; the next Tasks.Create of the same id then fails with "file exists". Removes such
 * directories of this namespace: no container of that id and nothing mounted below it.
 */
function removeStaleBundles(namespace: string, containers: ReadonlySet<string>, stateDir = "/run/containerd/io.containerd.runtime.v2.task"): number {
  const dir = join(stateDir, namespace);
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return 0;
  }
  const mountPoints = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "");
  let removed = 0;
  for (const id of entries) {
    if (containers.has(id)) continue;
    const bundle = join(dir, id);
    if (mountPoints.some((mount) => mount === bundle || mount.startsWith(`${bundle}/`))) continue;
    rmSync(bundle, { recursive: true, force: true });
    removed += 1;
  }
  return removed;
}

/** Names (tasks, containers) still present in the namespace, for the final check. */
export async function leftovers(options: CtrOptions): Promise<{ tasks: string[]; containers: string[] }> {
  return { tasks: lines(await ctr(options, "task", "ls", "-q")), containers: lines(await ctr(options, "container", "ls", "-q")) };
}

/**
 * Removes the cgroup subtree `root` (e.g. `/fsb-bench`) from every hierarchy (cgroup v1
 * controllers, the v2 unified tree), deepest directories first. Directories still holding processes
 * stay (rmdir fails with EBUSY); returns how many were left.
 */
export function removeCgroupTree(root: string): number {
  const base = "/sys/fs/cgroup";
  const candidates = [join(base, root)];
  try {
    for (const entry of readdirSync(base)) candidates.push(join(base, entry, root));
  } catch {
    return 0;
  }
  let left = 0;
  const remove = (dir: string): void => {
    let entries: string[];
    try {
      if (!statSync(dir).isDirectory()) return;
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const entry of entries) {
      const child = join(dir, entry);
      try {
        if (statSync(child).isDirectory()) remove(child);
      } catch {
        // vanished meanwhile
      }
    }
    try {
      rmdirSync(dir);
    } catch {
      left += 1;
    }
  };
  for (const candidate of new Set(candidates)) remove(candidate);
  return left;
}
