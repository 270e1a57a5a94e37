/**
 * Removes what test runs leave on the host when they are stopped midway. A test file removes its own
 * objects in its `after` hooks, but a run ended by a signal (a CI timeout, Ctrl-C) skips them: its
 * sandboxes keep running (a gVisor one spins a little CPU for ever), its network namespaces, nftables
 * tables and routes stay, and a later run may trip on them (the server namespace's metadata route
 * refuses a second one). `npm test` (scripts/test.sh) sweeps before and after every run.
 *
 * Only objects with the tests' names are touched: containerd namespaces and top-level cgroups named
 * `fsb-e2e-*` / `fsb-test-*`, network records owned by those namespaces (in any network's state
 * directory, the embedded default's included), and the tests' own networks (`fsbt<hex>` bridges and
 * tables, `fsb-fsbt<hex>-*` namespaces, `fsbt-srv-*` server namespaces with their `fsbs*` veths and
 * `fsbt-dnat-*` tables). Never run it beside a live test run: it removes that run's objects too.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { AttachmentStore, DEFAULT_NETWORK_STATE_ROOT, teardownAttachment, toolsForRecord, type AttachmentRecord } from "@fast-sandbox/agent";
import { cgroupRoots, removeCgroupTree, removeNamespace } from "./containerd.js";

export interface SweepOptions {
  /** Containerd namespaces and top-level cgroups to remove, and whose network records to tear down. */
  namespaces?: RegExp;
  /** Host network objects to remove: network namespaces, links, nftables tables, by name. */
  networkObjects?: RegExp;
  /** Directories holding network state directories (each `<dir>/attachments`). */
  networkStateRoots?: string[];
}

/** The names tests give their objects (see the file comment). */
export const TEST_NAMESPACES = /^fsb-(e2e|test)-/;
export const TEST_NETWORK_OBJECTS = /^(fsbt|fsbs|fsb-fsbt)/;
/** testNetworkSettings' state directories: `<tmp>/fsb-test-network-*`. */
const TEST_NETWORK_STATE_DIR = /^fsb-test-network-/;

export interface SweepResult {
  /** What was removed, one line each (`containerd namespace x`, `netns y`, …). */
  removed: string[];
  /** What could not be removed, with why. */
  problems: string[];
}

const lines = (text: string) =>
  text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);

function output(command: string, ...args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return "";
  }
}

/** Every process in a cgroup subtree (each hierarchy lists its own members). */
function processesUnder(path: string): number[] {
  const pids: number[] = [];
  const visit = (dir: string) => {
    try {
      for (const pid of lines(readFileSync(join(dir, "cgroup.procs"), "utf8"))) pids.push(Number(pid));
      for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) visit(join(dir, entry.name));
    } catch {
      // gone meanwhile
    }
  };
  visit(path);
  return [...new Set(pids)];
}

function signalKill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // exited meanwhile
  }
}

/** Kills every process of the cgroup trees (sandboxes whose task containerd can no longer kill), for up to 5 s. */
async function killCgroupMembers(paths: string[]): Promise<number[]> {
  const left = () => [...new Set(paths.flatMap(processesUnder))];
  for (let attempt = 0; attempt < 50; attempt++) {
    const pids = left();
    if (pids.length === 0) return [];
    for (const pid of pids) signalKill(pid);
    await sleep(100);
  }
  return left();
}

async function tearDownRecords(stateDir: string, owned: (record: AttachmentRecord) => boolean, result: SweepResult) {
  for (const { record } of new AttachmentStore(stateDir).list()) {
    if (!owned(record)) continue;
    try {
      await teardownAttachment(toolsForRecord(record, stateDir), record);
      result.removed.push(`network namespace ${record.netnsName} (${record.owner.containerdNamespace}, ${record.state})`);
    } catch (error) {
      result.problems.push(`network namespace ${record.netnsName}: ${(error as Error).message}`);
    }
  }
}

export async function sweepTestLeftovers(options: SweepOptions = {}): Promise<SweepResult> {
  const namespaces = options.namespaces ?? TEST_NAMESPACES;
  const networkObjects = options.networkObjects ?? TEST_NETWORK_OBJECTS;
  const result: SweepResult = { removed: [], problems: [] };

  const cgroups = cgroupRoots().flatMap((root) =>
    readdirSync(root, { withFileTypes: true })
      .filter((entry) => entry.isDirectory() && namespaces.test(entry.name))
      .map((entry) => join(root, entry.name)),
  );

  // 1. Containerd namespaces: tasks, containers, images, snapshots. When containerd cannot remove a
  //    task — a gVisor one once killed (runsc finds its sandbox not running and the shim's delete
  //    fails), a shim that lost its directory — the namespace's shims are killed (containerd then
  //    drops their tasks), and the sandboxes' processes with them, through their cgroups; then once more.
  for (const namespace of lines(output("ctr", "namespaces", "ls", "-q")).filter((name) => namespaces.test(name))) {
    let refusal: string;
    try {
      removeNamespace(namespace);
      result.removed.push(`containerd namespace ${namespace}`);
      continue;
    } catch (error) {
      const text = (error as { stderr?: string }).stderr || (error as Error).message;
      refusal = lines(text).join(" / ").slice(0, 400);
    }
    const shims = lines(output("pgrep", "-f", `containerd-shim.* -namespace ${namespace} `)).map(Number);
    for (const pid of shims) signalKill(pid);
    await killCgroupMembers(cgroups.filter((path) => path.endsWith(`/${namespace}`)));
    await sleep(1_000);
    try {
      removeNamespace(namespace);
      result.removed.push(`containerd namespace ${namespace} (its ${shims.length} shims killed after: ${refusal})`);
    } catch (error) {
      result.problems.push(`containerd namespace ${namespace}: ${(error as Error).message.split("\n")[0]}`);
    }
  }

  // 2. Whatever still runs in the tests' cgroups.
  const survivors = await killCgroupMembers(cgroups);
  if (survivors.length > 0) result.problems.push(`processes ${survivors.join(", ")} survived SIGKILL`);

  // 3. Cgroups, now that nothing lives in them.
  const topLevel = [...new Set(cgroups.map((path) => path.slice(path.lastIndexOf("/"))))];
  for (const name of topLevel) removeCgroupTree(name);
  for (const path of cgroups) {
    if (existsSync(path)) result.problems.push(`cgroup ${path} is left`);
    else result.removed.push(`cgroup ${path}`);
  }

  // 4. Network namespaces of the tests' sandboxes, in any network (the embedded default's included).
  const owned = (record: AttachmentRecord) => namespaces.test(record.owner.containerdNamespace) || networkObjects.test(record.network.name);
  const roots = options.networkStateRoots ?? [DEFAULT_NETWORK_STATE_ROOT];
  const stateDirs = roots.flatMap((root) => (existsSync(root) ? readdirSync(root).map((name) => join(root, name)) : []));
  const testStateDirs = readdirSync(tmpdir())
    .filter((name) => TEST_NETWORK_STATE_DIR.test(name))
    .map((name) => join(tmpdir(), name));
  for (const stateDir of [...stateDirs, ...testStateDirs]) await tearDownRecords(stateDir, owned, result);
  // A test network's state directory goes with its network (its IPAM directory names it).
  for (const stateDir of testStateDirs) {
    const networks = existsSync(join(stateDir, "ipam")) ? readdirSync(join(stateDir, "ipam")) : [];
    if (networks.length > 0 && networks.every((name) => networkObjects.test(name)) && new AttachmentStore(stateDir).list().length === 0) {
      rmSync(stateDir, { recursive: true, force: true });
      result.removed.push(`network state directory ${stateDir}`);
    }
  }

  // 5. The tests' host network objects: namespaces (a server's processes with them), tables, links.
  for (const name of lines(output("ip", "netns", "list"))
    .map((line) => line.split(" ")[0] ?? "")
    .filter((name) => networkObjects.test(name))) {
    for (const pid of lines(output("ip", "netns", "pids", name))) signalKill(Number(pid));
    output("ip", "netns", "delete", name);
    const left = lines(output("ip", "netns", "list")).some((line) => line.split(" ")[0] === name);
    if (left) result.problems.push(`netns ${name} is left`);
    else result.removed.push(`netns ${name}`);
  }
  for (const table of lines(output("nft", "list", "tables"))) {
    const [, family, name] = table.split(" ");
    if (!family || !name || !networkObjects.test(name)) continue;
    output("nft", "delete", "table", family, name);
    result.removed.push(`nftables table ${family} ${name}`);
  }
  // Deleting a link deletes the routes through it (the server namespace's metadata routes).
  for (const line of lines(output("ip", "-o", "link", "show"))) {
    const name = line.split(":")[1]?.trim().split("@")[0] ?? "";
    if (!networkObjects.test(name)) continue;
    output("ip", "link", "delete", name);
    result.removed.push(`link ${name}`);
  }
  return result;
}
