/**
 * What the janitor removed, as Prometheus metrics (prom-client, a registry of its own), served on
 * an optional loopback endpoint with `/metrics`, `/healthz` and `/readyz`.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import { isIP } from "node:net";
import { Counter, Gauge, Registry } from "prom-client";
import { ValidationError, withProbeRoutes } from "@fast-sandbox/api/core";
import { ORPHAN_REASONS, type OrphanReason } from "./orphans.js";
import type { PoolCheckpointReason } from "./pool-checkpoints.js";

export type RemovedKind = "task" | "container" | "snapshot" | "cgroup" | "run_dir" | "log_file" | "fifo" | "state_dir" | "network" | "checkpoint_dir" | "lease";

/** Why a pass removed an object: an orphan's reason, or a gone pool's (its checkpoint directory). */
export type RemovalReason = OrphanReason | PoolCheckpointReason;

/** The reasons of the failure counter: every orphan's, and a gone pool's checkpoint directory. */
const FAILURE_REASONS: readonly RemovalReason[] = [...ORPHAN_REASONS, "pool_gone"];

export type PassOutcome = "completed" | "inventory_unavailable" | "failed";

const PASS_OUTCOMES: readonly PassOutcome[] = ["completed", "inventory_unavailable", "failed"];

export class JanitorMetrics {
  readonly registry = new Registry();
  private readonly orphans = new Counter({
    name: "fsb_janitor_orphans_reclaimed_total",
    help: "Orphaned containers (or bare snapshots) reclaimed with everything they held, by reason.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  private readonly objects = new Counter({
    name: "fsb_janitor_objects_removed_total",
    help: "Objects removed (task, container, snapshot, cgroup, run_dir, log_file, fifo, state_dir: a gone agent's state directory, network: a sandbox's network namespace or the name of a gone agent's, checkpoint_dir: a gone pool's checkpoint directory or its namespace's once empty, reason pool_gone, lease: a gone agent's pull lease with the partial downloads it alone kept), by kind and reason.",
    labelNames: ["kind", "reason"] as const,
    registers: [this.registry],
  });
  private readonly failures = new Counter({
    name: "fsb_janitor_reclaim_failures_total",
    help: "Orphans (and gone pools' checkpoint directories, reason pool_gone) that could not be removed completely in a pass (a later pass retries), by reason.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  private readonly passes = new Counter({
    name: "fsb_janitor_passes_total",
    help: "Janitor passes by outcome; inventory_unavailable passes remove nothing.",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  private readonly waiting = new Gauge({
    name: "fsb_janitor_protected_orphans",
    help: "Orphans seen in the last completed pass that are still inside the protection window (and gone pools' checkpoint directories inside their grace period).",
    registers: [this.registry],
  });
  private readonly lastCompleted = new Gauge({
    name: "fsb_janitor_last_completed_pass_timestamp_seconds",
    help: "When the last pass that could read the inventory finished (Unix time).",
    registers: [this.registry],
  });

  /** How the last pass ended; undefined before the first. */
  private lastOutcome: PassOutcome | undefined;

  constructor() {
    // Every series exists from the start, so a rate() over a fresh janitor is 0, not absent.
    for (const reason of ORPHAN_REASONS) this.orphans.labels({ reason }).inc(0);
    for (const reason of FAILURE_REASONS) this.failures.labels({ reason }).inc(0);
    for (const outcome of PASS_OUTCOMES) this.passes.labels({ outcome }).inc(0);
  }

  orphanReclaimed(reason: OrphanReason): void {
    this.orphans.labels({ reason }).inc();
  }

  objectRemoved(kind: RemovedKind, reason: RemovalReason): void {
    this.objects.labels({ kind, reason }).inc();
  }

  reclaimFailed(reason: RemovalReason): void {
    this.failures.labels({ reason }).inc();
  }

  passFinished(outcome: PassOutcome, protectedOrphans: number, finishedAtMs: number): void {
    this.passes.labels({ outcome }).inc();
    this.lastOutcome = outcome;
    if (outcome === "completed") {
      this.waiting.set(protectedOrphans);
      this.lastCompleted.set(finishedAtMs / 1000);
    }
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Undefined when the last pass completed (`/readyz` answers 200); otherwise why the janitor is not doing its job. */
  notReadyReason(): string | undefined {
    switch (this.lastOutcome) {
      case "completed":
        return undefined;
      case undefined:
        return "no pass has finished yet";
      case "inventory_unavailable":
        return "the last pass could not ask the control plane which agents and sandboxes exist";
      default:
        return "the last pass failed";
    }
  }
}

export interface MetricsServer {
  /** `http://host:port/metrics` */
  url: string;
  close(): Promise<void>;
}

/** `host:port` → its parts; the host must be a loopback address (the endpoint has no authentication). */
export function parseLoopbackListen(listen: string, field = "--metrics"): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen);
  const port = Number(match?.[3]);
  const host = match?.[1] ?? match?.[2] ?? "";
  if (!match || port > 65535) throw new ValidationError(field, `${JSON.stringify(listen)} is not host:port (e.g. 127.0.0.1:9464)`);
  const loopback = host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."));
  if (!loopback) throw new ValidationError(field, `${JSON.stringify(host)} is not a loopback address; the metrics endpoint has no authentication`);
  return { host, port };
}

export async function startMetricsServer(metrics: JanitorMetrics, listen: { host: string; port: number }): Promise<MetricsServer> {
  const notFound = withProbeRoutes(
    (_request, response) => {
      (response as ServerResponse).writeHead(404, { "content-type": "text/plain" }).end("not found; try /metrics, /healthz or /readyz\n");
    },
    {
      notReadyReason: () => Promise.resolve(metrics.notReadyReason()),
      metrics: async () => ({ contentType: metrics.registry.contentType, text: await metrics.text() }),
    },
  );
  const server: Server = createServer(notFound);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : listen.port;
  const host = listen.host.includes(":") ? `[${listen.host}]` : listen.host;
  return {
    url: `http://${host}:${port}/metrics`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
