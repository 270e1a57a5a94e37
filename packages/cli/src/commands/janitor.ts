import { join } from "node:path";
import { stderrLogger } from "@fast-sandbox/agent/stderr-logger";
import { UnavailableError } from "@fast-sandbox/sdk";
import { parseDuration, parseLoopbackListen, runJanitorOnce, startJanitorProcess, type PassResult } from "@fast-sandbox/janitor";
import { defaultCgroupRoot, readSettings, resolveDataDir } from "../data-dir.js";
import { endpoint, type GlobalOptions } from "../connection.js";

export interface JanitorCommandOptions extends GlobalOptions {
  interval: string;
  protection: string;
  once?: boolean;
  metrics?: string;
  containerdNamespace?: string;
  containerdSocket?: string;
  cgroupRoot?: string;
}

/** One line of what a pass did, e.g. `reclaimed 3 orphans (agent_gone 2, record_gone 0, anchor_orphaned 1); 9 objects removed; 1 protected`. */
export function passSummary(result: PassResult): string {
  const counts = Object.entries(result.reclaimed);
  const total = counts.reduce((sum, [, count]) => sum + count, 0);
  return (
    `reclaimed ${total} orphans (${counts.map(([reason, count]) => `${reason} ${count}`).join(", ")}); ` +
    `${result.removed.length} objects removed; ${result.protectedOrphans} inside the protection window` +
    (result.failures > 0 ? `; ${result.failures} could not be removed (a later pass retries)` : "")
  );
}

/**
 * `fsb janitor`: removes what Fast Sandbox left behind in containerd and on the host (see the
 * janitor package). It acts on the containerd namespace, socket and cgroup root of the data
 * directory's `fsb up` unless told otherwise, and asks its control plane which agents and records exist.
 */
export async function janitor(options: JanitorCommandOptions): Promise<void> {
  const dataDir = resolveDataDir(options.dataDir);
  const settings = readSettings(dataDir);
  const intervalMs = parseDuration(options.interval, "--interval");
  const protectionMs = parseDuration(options.protection, "--protection", { allowZero: true });
  const metricsListen = options.metrics ? parseLoopbackListen(options.metrics, "--metrics") : undefined;
  const { url, token } = endpoint(options);
  const containerdNamespace = options.containerdNamespace ?? process.env.FSB_CONTAINERD_NAMESPACE ?? settings?.containerdNamespace ?? "fast-sandbox";
  const scope = {
    url,
    token,
    containerdNamespaces: [containerdNamespace],
    containerdSocket: options.containerdSocket ?? process.env.FSB_CONTAINERD_SOCKET ?? settings?.containerdSocket ?? "/run/containerd/containerd.sock",
    agentsDir: join(dataDir, "agents"),
    checkpointDir: join(dataDir, "checkpoints"),
    // As `fsb up` chooses it: the namespace's own name by default.
    cgroupRoot: options.cgroupRoot ?? process.env.FSB_CGROUP_ROOT ?? settings?.cgroupRoot ?? defaultCgroupRoot(containerdNamespace) ?? "",
    protectionMs,
    logger: stderrLogger({ name: "fsb-janitor" }),
  };

  if (options.once) {
    const result = await runJanitorOnce(scope);
    if (result.outcome !== "completed") {
      throw new UnavailableError(`the janitor removed nothing: ${result.error?.message ?? result.outcome}`, { cause: result.error });
    }
    process.stdout.write(`${passSummary(result)}\n`);
    return;
  }

  const running = await startJanitorProcess({ ...scope, intervalMs, ...(metricsListen ? { metricsListen } : {}) });
  process.stdout.write(
    `janitor running on containerd namespace ${scope.containerdNamespaces.join(", ")}, every ${options.interval}, ` +
      `protection window ${options.protection}${running.metricsUrl ? `; metrics at ${running.metricsUrl}` : ""} (Ctrl-C stops)\n`,
  );
  await new Promise<void>((resolve) => {
    process.once("SIGINT", () => resolve());
    process.once("SIGTERM", () => resolve());
  });
  await running.stop();
}
