import { mkdirSync } from "node:fs";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { FsbError, listenCleartext, pb, requireBearerToken, withProbeRoutes } from "@fast-sandbox/api/core";
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
import { EphemeralStorageGuard } from "../runtime/ephemeral-storage-guard.js";

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
  /** How often each sandbox's disk use is held to its limit (EphemeralStorageGuard). @default every 10 s */
  diskCheck?: { intervalMs: number };
  /** Each sandbox's log is rotated past `maxBytes`, checked every `checkIntervalMs` (log-rotation.ts). @default 10 MiB, every 2 s */
  logs?: { maxBytes: number; checkIntervalMs?: number };
  /** Where the log rotation reports what it could not do. */
  logger?: Pick<Logger, "warn" | "debug">;
  /** How `/readyz` judges containerd (ContainerdReadiness). @default answer within 500 ms, stale after 60 s */
  readiness?: ContainerdReadinessOptions;
}

export interface ContainerdReadinessOptions {
  /** How long `/readyz` waits for its check of containerd before it answers from what it knows. @default 500 */
  answerWithinMs?: number;
  /** How long containerd may go without answering a list (busy) before the agent is not ready. @default 60000 */
  staleAfterMs?: number;
}

/**
 * Whether containerd answers, for `/readyz`, by the heartbeat's rule (agent-service.ts's Status):
 * containerd slow to list is busy, the agent alive and ready; containerd refusing (its socket gone,
 * restarting) is not. The probe must not wait on a slow containerd: a churn of deletes makes its
 * task list wait on every busy shim for longer than the kubelet's probe timeout, and a NotReady Pod
 * is a lost agent to the fleet, its sandboxes handed to the failure policy, while its heartbeats
 * answer busy. So each probe starts a check (one at a time), waits for it `answerWithinMs` at most,
 * and otherwise answers from the last check to finish; only containerd answering no list at all
 * for `staleAfterMs` (stuck, not busy) makes the agent not ready.
 */
export class ContainerdReadiness {
  private readonly answerWithinMs: number;
  private readonly staleAfterMs: number;
  /** The server starts after its first list answered. */
  private answeredAt = performance.now();
  /** Why the last check to finish failed, undefined when it answered or was merely slow. */
  private failure: string | undefined;
  private checking: Promise<void> | undefined;

  constructor(
    private readonly list: () => Promise<unknown>,
    options: ContainerdReadinessOptions = {},
  ) {
    this.answerWithinMs = options.answerWithinMs ?? 500;
    this.staleAfterMs = options.staleAfterMs ?? 60_000;
  }

  async notReadyReason(): Promise<string | undefined> {
    const check = (this.checking ??= this.check());
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([check, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.answerWithinMs)))]);
    clearTimeout(timer);
    if (this.failure !== undefined) return this.failure;
    const silentMs = performance.now() - this.answeredAt;
    if (silentMs > this.staleAfterMs) return `containerd has answered no list for ${Math.round(silentMs / 1000)} s`;
    return undefined;
  }

  private check(): Promise<void> {
    return this.list()
      .then(
        () => {
          this.answeredAt = performance.now();
          this.failure = undefined;
        },
        (error: unknown) => {
          // A list past its deadline is containerd slow (busy), as in Status; anything else is containerd away.
          const slow = error instanceof FsbError && error.code === "deadline_exceeded";
          this.failure = slow ? undefined : `containerd does not answer: ${error instanceof Error ? error.message : String(error)}`;
        },
      )
      .finally(() => {
        this.checking = undefined;
      });
  }
}

/**
 * The largest request the agent API reads, decompressed (Connect's default: 4 GiB). Its largest
 * requests carry a sandbox's command, arguments and environment (CreateSandbox, Exec), which Linux
 * caps at a quarter of the stack limit together (2 MiB with the usual 8 MiB): twice that.
 */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;

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
 * answers or is merely busy, not draining) and `/metrics`.
 */
/** Idle time before TCP keep-alive probes on the agent's connections (as the sandbox proxy's). */
const TCP_KEEPALIVE_MS = 60_000;

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
  const diskGuard = new EphemeralStorageGuard({
    runtime: options.runtime,
    intervalMs: options.diskCheck?.intervalMs,
    logger: options.logger,
    onEvicted: () => metrics.evicted(),
  });
  diskGuard.start();
  const logRotation = new LogRotation({ dir: logDir, maxBytes: options.logs?.maxBytes, intervalMs: options.logs?.checkIntervalMs, logger: options.logger });
  logRotation.start();
  let draining = false;
  const auth = requireBearerToken(options.token);
  const api = connectNodeAdapter({
    readMaxBytes: MAX_REQUEST_BYTES,
    interceptors: [auth, metrics.interceptor()],
    routes: (router) => {
      router.service(
        pb.AgentService,
        createAgentService({ identity: options.identity, runtime: options.runtime, logDir, creates, checkpoints, admission, statsHistory, logRotation }),
      );
    },
  });
  // The runtime is prepared before the server starts; this checks containerd still answers.
  const containerd = new ContainerdReadiness(() => options.runtime.list(), options.readiness);
  // A request without the token is refused before its body is read; the interceptor, after, stays.
  const handler = withProbeRoutes(auth.guard(api), {
    notReadyReason: async () => {
      if (draining) return "stopping: letting creates and checkpoints in flight finish";
      if (admission.refusing) return "retired: its pool is stopping it";
      return containerd.notReadyReason();
    },
    metrics: () => metrics.exposition(),
  });
  // CONNECT to a port of one of this agent's Isolated sandboxes (the sandbox proxy's way in).
  const relay = createSandboxRelay({ token: options.token, sandboxes: () => options.runtime.list(), observe: (result) => metrics.relayTunnel(result) });
  // TCP keep-alives find a caller that vanished without a word (its node off, a NAT that forgot the
  // connection): its relay tunnels and exec or log streams would otherwise be held for ever.
  const server = await listenCleartext(handler, options.host, options.port, { onConnect: relay.onConnect, tcpKeepAliveMs: TCP_KEEPALIVE_MS });
  return {
    endpoint: `${options.host}:${server.port}`,
    close: async (drainTimeoutMs = 0) => {
      draining = true;
      admission.stop();
      relay.close();
      await Promise.all([statsHistory.stop(), diskGuard.stop(), logRotation.stop()]);
      const closed = server.close();
      await Promise.all([creates.drain(drainTimeoutMs), checkpoints.drain(drainTimeoutMs)]);
      await closed;
    },
  };
}
