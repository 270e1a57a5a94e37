import { existsSync } from "node:fs";
import { basename, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { stderrLogger } from "@fast-sandbox/agent/stderr-logger";
import { FsbError } from "@fast-sandbox/sdk";
import { sweepAfterShutdown } from "@fast-sandbox/janitor";
import {
  clearStaleInstance,
  files,
  isRunning,
  looksLikeFsbUp,
  readLock,
  readSettings,
  resolveDataDir,
  upCommandFor,
  type ProcessIdentity,
} from "../data-dir.js";
import { forgetAllAccessTokens } from "../access-tokens.js";
import { connectOwnInstance } from "../connection.js";
import { releaseContainerdNamespace } from "../namespace-claim.js";

/** How many times `down --delete-sandboxes` lists and deletes what is left before it gives up. */
const DELETE_ROUNDS = 6;

/** How long `down` waits for `fsb up` to stop after SIGTERM before it sends SIGKILL. */
const STOP_GRACE_MS = 20_000;

/**
 * Stops the `fsb up` of the data directory: the process its lock names, and only when that is still
 * the same process (pid and start time as recorded) running `fsb up`. A lock or pid file of a process
 * that is gone (SIGKILL, a crash, a reboot) is stale: removed, and no process is signalled.
 *
 * `--delete-sandboxes` deletes the sandboxes of that same instance, at the URL its data directory
 * holds: --url and FSB_URL are ignored (with a note when they name another), since FSB_URL is often
 * exported for the other commands and may name another instance, whose sandboxes are not this one's.
 */
export async function down(options: { dataDir?: string; url?: string; deleteSandboxes?: boolean }): Promise<void> {
  const dataDir = resolveDataDir(options.dataDir);
  const lock = readLock(dataDir);
  const holder = lock?.holder;
  if (!holder || !isRunning(holder) || !looksLikeFsbUp(holder.pid)) {
    const stale = [files.lock(dataDir), files.pid(dataDir), files.url(dataDir)].filter((path) => existsSync(path));
    clearStaleInstance(dataDir, lock);
    const why = holder ? `the process of its lock, pid ${holder.pid}, ${isRunning(holder) ? "does not run 'fsb up'" : "is gone"}` : "no process holds its lock";
    const notRunning = `Fast Sandbox is not running for ${dataDir}${stale.length > 0 ? ` (${why}; removed the stale ${stale.map((path) => basename(path)).join(", ")})` : ""}`;
    // Its sandboxes are deleted through its control plane, and only then is its containerd namespace
    // released: without it running nothing was deleted, which must not pass for done. A directory
    // whose `fsb up` never ran (no settings) has neither.
    if (options.deleteSandboxes && readSettings(dataDir)) {
      throw new FsbError(
        "failed_precondition",
        `${notRunning}: --delete-sandboxes deletes the sandboxes of a running one, then frees its containerd namespace; nothing was deleted. ` +
          `Start it with '${upCommandFor(dataDir)}' first, then run 'fsb down --delete-sandboxes --data-dir ${dataDir}'`,
      );
    }
    process.stdout.write(`${notRunning}\n`);
    return;
  }
  const pid = holder.pid;
  if (options.deleteSandboxes) {
    if (!existsSync(files.url(dataDir))) {
      throw new FsbError("unavailable", `Fast Sandbox (pid ${pid}) is still starting for ${dataDir}; run 'fsb down --delete-sandboxes' again once it serves`);
    }
    const { client, url } = connectOwnInstance(dataDir);
    const named = options.url ?? process.env.FSB_URL;
    if (named && named.replace(/\/+$/, "") !== url.replace(/\/+$/, "")) {
      process.stderr.write(
        `note: ${options.url !== undefined ? "--url" : "FSB_URL"} ${named} is ignored: 'fsb down' deletes the sandboxes of the Fast Sandbox it stops, ${url} (${dataDir})\n`,
      );
    }
    // Again until none is left: a create that was in flight during the first round shows up in the
    // next, and a delete its agent could not finish yet (busy, restarting) is tried again.
    let deleted = 0;
    let failures: string[] = [];
    for (let round = 0; round < DELETE_ROUNDS; round++) {
      const sandboxes = await client.sandboxes.list({ namespace: "*" });
      if (sandboxes.length === 0) {
        failures = [];
        break;
      }
      const results = await Promise.allSettled(
        sandboxes.map((s) => client.sandboxes.delete(s.metadata.name, { namespace: s.metadata.namespace ?? "default" })),
      );
      failures = results.flatMap((result, i) =>
        result.status === "rejected" ? [`${sandboxes[i]?.metadata.namespace ?? "default"}/${sandboxes[i]?.metadata.name}: ${String(result.reason)}`] : [],
      );
      deleted += results.length - failures.length;
      if (failures.length > 0) await sleep(Math.min(5_000, 500 * 2 ** round));
    }
    const left = await client.sandboxes.list({ namespace: "*" });
    if (left.length > 0) {
      throw new FsbError(
        "unavailable",
        `${left.length} sandboxes are still there after ${DELETE_ROUNDS} rounds of deletes${failures[0] ? ` (last error: ${failures[0]})` : ""}; Fast Sandbox keeps running — run 'fsb down --delete-sandboxes' again`,
      );
    }
    // Their access tokens went with them (and the tokens of those that expired or were deleted otherwise before).
    forgetAllAccessTokens(dataDir);
    process.stdout.write(`deleted ${deleted} sandbox${deleted === 1 ? "" : "es"}\n`);
  }
  signal(holder, "SIGTERM");
  for (let waited = 0; waited < STOP_GRACE_MS && isRunning(holder); waited += 100) await sleep(100);
  if (isRunning(holder)) {
    signal(holder, "SIGKILL");
    for (let waited = 0; waited < 5_000 && isRunning(holder); waited += 100) await sleep(100);
    if (isRunning(holder)) {
      throw new FsbError("unavailable", `Fast Sandbox (pid ${pid}) did not exit after SIGKILL; its lock in ${dataDir} stays until it does`);
    }
  }
  // A stop that finished removed these; a SIGKILL left them.
  clearStaleInstance(dataDir, lock);
  process.stdout.write(`Fast Sandbox stopped (pid ${pid})\n`);
  if (options.deleteSandboxes) await removeAnchors(dataDir);
}

/** Signals `target` if it is still that process: a pid freed in the meantime may belong to another by now. */
function signal(target: ProcessIdentity, name: NodeJS.Signals): void {
  if (!isRunning(target)) return;
  try {
    process.kill(target.pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

/**
 * With the control plane and its agents gone for good, nothing of this data directory's containerd
 * namespace is in use: the janitor's sweep removes the agents' shim anchors (and so their shims stop)
 * and anything a create left behind, at once.
 */
async function removeAnchors(dataDir: string): Promise<void> {
  const settings = readSettings(dataDir);
  if (!settings) {
    process.stderr.write(`warning: ${dataDir} does not say which containerd namespace 'fsb up' used; its agents' shim anchors were left running\n`);
    return;
  }
  const result = await sweepAfterShutdown({
    containerdNamespaces: [settings.containerdNamespace],
    containerdSocket: settings.containerdSocket,
    agentsDir: join(dataDir, "agents"),
    cgroupRoot: settings.cgroupRoot,
    logger: stderrLogger({ name: "fsb-down", level: "warn" }),
  });
  if (result.outcome !== "completed" || result.failures > 0) {
    throw new FsbError(
      "unavailable",
      `could not remove everything of containerd namespace ${settings.containerdNamespace}: ${result.error?.message ?? `${result.failures} objects failed`}; run 'fsb down --delete-sandboxes' again once containerd answers`,
    );
  }
  const anchors = result.reclaimed.anchor_orphaned;
  const leftovers = result.reclaimed.agent_gone + result.reclaimed.record_gone;
  // Nothing of this instance is left in the namespace: another data directory's `fsb up` may use it.
  releaseContainerdNamespace(settings.containerdNamespace, dataDir);
  process.stdout.write(`removed ${anchors} shim anchors${leftovers > 0 ? ` and ${leftovers} leftover containers` : ""}\n`);
}
