import { mkdirSync } from "node:fs";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { listenCleartext, pb, requireBearerToken, withProbeRoutes } from "@fast-sandbox/api/core";
import type { Runtime } from "../runtime/runtime.js";
import { LogRotation } from "../log-rotation.js";
import { sandboxLogDir } from "../state-layout.js";
import { Admission } from "./admission.js";
import { createAgentService, type AgentIdentity } from "./agent-service.js";
import { CheckpointsInFlight } from "./checkpoint-service.js";
import { CreatesInFlight } from "./creates-in-flight.js";
import { AgentMetrics } from "./agent-metrics.js";
import { createSandboxRelay } from "./sandbox-relay.js";
import { StatsHistory } from "./stats-history.js";

export interface AgentServerOptions {
  identity: AgentIdentity;
  runtime: Runtime;
  token: string;
  stateDir: string;
  host: string;
  port: number;
  /** Served at `/metrics`; pass the one the runtime reports create steps to. @default a new one */
  metrics?: AgentMetrics;
  /** Each running sandbox's resource use sampled for GetSandboxStatsHistory (stats-history.ts). @default every 5 s, 720 kept */
  statsHistory?: { intervalMs: number; retain: number };
  /** Each sandbox's log is rotated past `maxBytes`, checked every `checkIntervalMs` (log-rotation.ts). @default 10 MiB, every 2 s */
  logs?: { maxBytes: number; checkIntervalMs?: number };
  /** Where the log rotation reports what it could not do. */
  logger?: Pick<Logger, "warn" | "debug">;
}

export interface AgentServer {
  /** host:port the agent API listens on. */
  endpoint: string;
  /**
   * Refuses new creates (Unavailable) and stops taking calls, lets creates and checkpoints in flight
   * finish (together up to `drainTimeoutMs`: a checkpoint cut short leaves its sandbox stopped), then closes.
   */
  close(drainTimeoutMs?: number): Promise<void>;
}

/**
 * Serves the agent API (Connect, gRPC and gRPC-Web over cleartext HTTP/2 and HTTP/1.1) on one
 * port, token required; the relay to its own sandboxes' ports (HTTP/1.1 CONNECT, sandbox-relay.ts),
 * token required; and without a token `/healthz` (the process is up), `/readyz` (containerd
 * answers, not draining) and `/metrics`.
 */
export async function startAgentServer(options: AgentServerOptions): Promise<AgentServer> {
  const logDir = sandboxLogDir(options.stateDir);
  mkdirSync(logDir, { recursive: true });
  const creates = new CreatesInFlight();
  const checkpoints = new CheckpointsInFlight();
  // Every container the runtime has for this agent holds a slot (and its ports) from the start.
  const admission = new Admission(options.identity.name);
  admission.adopt(await options.runtime.list());
  const metrics = options.metrics ?? new AgentMetrics();
  metrics.observeCreatesInFlight(() => creates.ids().length);
  const statsHistory = new StatsHistory({ runtime: options.runtime, intervalMs: options.statsHistory?.intervalMs, retain: options.statsHistory?.retain });
  statsHistory.start();
  const logRotation = new LogRotation({ dir: logDir, maxBytes: options.logs?.maxBytes, intervalMs: options.logs?.checkIntervalMs, logger: options.logger });
  logRotation.start();
  let draining = false;
  const api = connectNodeAdapter({
    interceptors: [requireBearerToken(options.token), metrics.interceptor()],
    routes: (router) => {
      router.service(
        pb.AgentService,
        createAgentService({ identity: options.identity, runtime: options.runtime, logDir, creates, checkpoints, admission, statsHistory }),
      );
    },
  });
  const handler = withProbeRoutes(api, {
    notReadyReason: async () => {
      if (draining) return "stopping: letting creates and checkpoints in flight finish";
      if (admission.refusing) return "retired: its pool is stopping it";
      // The runtime is prepared before the server starts; this checks containerd still answers.
      await options.runtime.list();
      return undefined;
    },
    metrics: () => metrics.exposition(),
  });
  // CONNECT to a port of one of this agent's Isolated sandboxes (the sandbox proxy's way in).
  const relay = createSandboxRelay({ token: options.token, sandboxes: () => options.runtime.list(), observe: (result) => metrics.relayTunnel(result) });
  const server = await listenCleartext(handler, options.host, options.port, { onConnect: relay.onConnect });
  return {
    endpoint: `${options.host}:${server.port}`,
    close: async (drainTimeoutMs = 0) => {
      draining = true;
      admission.stop();
      relay.close();
      await Promise.all([statsHistory.stop(), logRotation.stop()]);
      const closed = server.close();
      await Promise.all([creates.drain(drainTimeoutMs), checkpoints.drain(drainTimeoutMs)]);
      await closed;
    },
  };
}
