/**
 * Entry point of an agent process. Prints one JSON line `{"event":"listening","endpoint":...}` on
 * stdout when it serves; exits when its stdin closes (its pool manager is gone) or on SIGTERM.
 * Sandboxes keep running when the agent exits; the next agent of the same name adopts them, once
 * the one before has exited: its state directory's lock (agent-instance-lock.ts) waits for it.
 *
 * `main.js install-node-binaries DIR` is the install mode of the agent Pods' init container instead:
 * it copies the in-sandbox helper and runsc into DIR and exits (install-node-binaries.ts).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { FsbError } from "@fast-sandbox/api/core";
import { stderrLogger } from "./stderr-logger.js";
import { agentConfigFromEnv } from "./agent-config.js";
import { acquireAgentInstanceLock } from "./agent-instance-lock.js";
import { cgroupExists, detectCgroupLayout, joinCgroup, limitCgroup } from "./cgroup.js";
import { createContainerdRuntime } from "./containerd/containerd-runtime.js";
import { INSTALL_NODE_BINARIES, runInstallNodeBinaries } from "./install-node-binaries.js";
import { networkSettingsFromEnv } from "./network/network-settings.js";
import { exposeSharedNetwork, withdrawSharedNetwork } from "./shared-network.js";
import { startAgentServer } from "./server/agent-server.js";
import { AgentMetrics } from "./server/agent-metrics.js";

/** FSB_LOG_LEVEL: pino level (trace, debug, info, warn, error, fatal, silent); info by default. */
const logger = stderrLogger({ name: "fsb-agent", level: process.env.FSB_LOG_LEVEL || "info" });
/** How long a stopping agent lets its creates and checkpoints in flight finish. */
const DRAIN_TIMEOUT_MS = 10_000;

async function main(): Promise<void> {
  const config = agentConfigFromEnv();
  const log = logger.child({ agent: config.name, pool: `${config.namespace}/${config.pool}` });
  // Termination is handled from the first moment: `fsb up` stops agents still starting (a pool
  // shrinking, its own stop), and SIGTERM's default would end this one with half of its start done
  // and nothing cleaned up. Until the agent serves, a stop ends it at once while nothing of its name
  // is touched, else after the start's step in progress, cleaning up what the steps made.
  let stopReason: string | undefined;
  let startTouchedAnything = false;
  /** How a stop ends the agent once it serves: its drain first. */
  const serving: { stop?: () => void } = {};
  const stop = (reason: string) => {
    if (stopReason !== undefined) return;
    stopReason = reason;
    log.info({ reason }, "agent stopping; sandboxes keep running");
    // Whatever a drain or a step of the start waits for (a containerd that does not answer), the agent ends.
    setTimeout(() => process.exit(0), DRAIN_TIMEOUT_MS + 2000).unref();
    if (serving.stop) serving.stop();
    else if (!startTouchedAnything) process.exit(0);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  if (process.env.FSB_AGENT_EXIT_ON_STDIN_CLOSE === "1") {
    process.stdin.on("end", () => stop("parent closed stdin")).resume();
  }
  // Before anything of its name is touched: a predecessor still draining (its `fsb up` was killed)
  // would remove what this one prepares, and this one what it cleans up. Held until the process exits.
  const lock = await acquireAgentInstanceLock(config.stateDir, { logger: log });
  process.on("exit", () => lock.release());
  if (stopReason !== undefined) process.exit(0);
  // From here on a stop cleans up after the step in progress instead of exiting at once.
  startTouchedAnything = true;
  if (!existsSync(config.helperPath)) {
    throw new FsbError(
      "failed_precondition",
      `the in-sandbox helper is missing at ${config.helperPath}: run 'npm run build' (scripts/build-helper.sh) or set FSB_HELPER_PATH`,
    );
  }
  const layout = detectCgroupLayout();
  if (config.cgroupParent) joinCgroup(layout, `${config.cgroupParent}/agent`, process.pid);
  // Without a cgroup of its own, the agent's sandboxes still get a parent of their own: several
  // agents share a node's containerd namespace (Kubernetes mode), and their anchors' and
  // sandboxes' cgroups must not collide.
  const sandboxesCgroup = config.cgroupParent ? `${config.cgroupParent}/sandboxes` : `/${config.containerdNamespace}/${config.name}`;
  // Every sandbox's cgroup is made below this one: together they stay within the agent's limits.
  // Without limits, those a cgroup kept from this agent's last start may have are lifted.
  const limited = config.limits.cpuMillis !== undefined || config.limits.memoryBytes !== undefined;
  if (limited || cgroupExists(layout, sandboxesCgroup)) {
    try {
      limitCgroup(layout, sandboxesCgroup, config.limits);
      if (limited) log.info({ cgroup: sandboxesCgroup, ...config.limits }, "the agent's limits bound its sandboxes together");
    } catch (error) {
      // E.g. a memory limit below what the sandboxes it adopts hold already: that bound stays as it was.
      log.error({ cgroup: sandboxesCgroup, ...config.limits, err: error }, "could not bound the agent's sandboxes by its limits as asked");
    }
  }
  const metrics = new AgentMetrics();
  // In a Pod's network, Shared runc sandboxes join the agent's namespace (runc would leave them in the node's).
  const sharedNetwork = config.ownNetwork ? await exposeSharedNetwork({ agentName: config.name, stateDir: config.stateDir }) : undefined;
  if (sharedNetwork) log.info({ netns: sharedNetwork.netnsPath }, "Shared sandboxes join the agent's own network namespace");
  const runtime = createContainerdRuntime({
    socketPath: config.containerdSocket,
    namespace: config.containerdNamespace,
    agentName: config.name,
    ...(config.uid ? { agentUid: config.uid } : {}),
    stateDir: config.stateDir,
    cgroupParent: sandboxesCgroup,
    ...(config.limits.cpuMillis !== undefined ? { cpuBoundMillis: config.limits.cpuMillis } : {}),
    helperPath: config.helperPath,
    ...(config.envdPath ? { envdPath: config.envdPath } : {}),
    ...(config.runscPath ? { runscPath: config.runscPath } : {}),
    checkpointDir: config.checkpointDir,
    ...(config.registryConfigPath ? { registryConfigPath: config.registryConfigPath } : {}),
    // The node's sandbox network (FSB_NETWORK_*), for isolated sandboxes; nothing of it is set up
    // before the agent serves its first one.
    network: networkSettingsFromEnv(),
    ...(sharedNetwork ? { sharedNetwork } : {}),
    onCreateTimings: ({ prepared, ...timings }) => metrics.createStepsFinished(prepared ? { claimMs: timings.totalMs } : { ...timings }),
    ...(config.preparedInstances ? { preparedInstances: config.preparedInstances } : {}),
    logger: log,
  });
  // What a stop undoes of the agent's start, also of one cut short (what prepare() made, or nothing).
  const removeLeftovers = async (): Promise<void> => {
    // An agent with no sandboxes left (scale-down, pool deleted, `fsb down`) leaves no shim
    // anchors and no prepared network namespaces behind either; one with sandboxes keeps them
    // for its successor, which adopts them.
    // Prepared instances are never adopted by a successor: removed in any case.
    await runtime.removePreparedInstances();
    if ((await runtime.list()).length === 0) {
      await runtime.unprepare();
      log.info("no sandboxes left: removed the shim anchors and prepared network namespaces");
    }
    // The name only: the Shared sandboxes that still run keep the namespace; a successor names it again.
    if (sharedNetwork) await withdrawSharedNetwork(config.name);
  };
  const exitAfter = (work: Promise<void>): void =>
    void work
      .catch((error: unknown) => log.warn({ err: error }, "could not remove the shim anchors or network namespaces; the janitor reclaims them"))
      .finally(() => {
        runtime.close();
        process.exit(0);
      });
  // A stop that came during the steps above: nothing is prepared yet; only the shared network's name to withdraw.
  if (stopReason !== undefined) return exitAfter(sharedNetwork ? withdrawSharedNetwork(config.name) : Promise.resolve());
  await runtime.prepare();
  if (stopReason !== undefined) return exitAfter(removeLeftovers());
  metrics.observePreparedInstances(() => runtime.preparedInstanceCount);
  const recovered = await runtime.list();
  log.info({ sandboxes: recovered.length }, "adopted the sandboxes containerd holds for this agent");
  if (stopReason !== undefined) return exitAfter(removeLeftovers());
  const server = await startAgentServer({
    identity: { name: config.name, namespace: config.namespace, pool: config.pool, nodeName: config.nodeName },
    runtime,
    token: config.token,
    stateDir: config.stateDir,
    host: config.listenHost,
    port: config.listenPort,
    metrics,
    statsHistory: { intervalMs: config.statsIntervalMs, retain: config.statsHistorySamples },
    diskCheck: { intervalMs: config.diskCheckIntervalMs },
    logs: { maxBytes: config.logMaxBytes },
    logger: log,
  });
  // Creates and checkpoints in flight finish first (bounded): a half-made container helps nobody,
  // and a checkpoint or fork cut short leaves its source sandbox stopped.
  serving.stop = () => exitAfter(server.close(DRAIN_TIMEOUT_MS).then(removeLeftovers));
  if (stopReason !== undefined) return serving.stop();
  process.stdout.write(`${JSON.stringify({ event: "listening", endpoint: server.endpoint, pid: process.pid })}\n`);
  log.info({ endpoint: server.endpoint, logs: join(config.stateDir, "logs") }, "agent serving");
}

if (process.argv[2] === INSTALL_NODE_BINARIES) {
  process.exitCode = runInstallNodeBinaries(process.argv.slice(3));
} else {
  main().catch((error: unknown) => {
    logger.fatal({ err: error }, "agent failed to start");
    process.exit(1);
  });
}
