/**
 * What the janitor removed, as Prometheus metrics (prom-client, a registry of its own), served on
 * an optional loopback `/metrics` endpoint.
 */
import { createServer, type Server } from "node:http";
import { isIP } from "node:net";
import { Counter, Gauge, Registry } from "prom-client";
import { ValidationError } from "@fast-sandbox/api";
import { ORPHAN_REASONS, type OrphanReason } from "./orphans.js";

export type RemovedKind = "task" | "container" | "snapshot" | "cgroup" | "run_dir" | "log_file" | "fifo";

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
    help: "Objects removed (task, container, snapshot, cgroup, run_dir, log_file, fifo), by kind and reason.",
    labelNames: ["kind", "reason"] as const,
    registers: [this.registry],
  });
  private readonly failures = new Counter({
    name: "fsb_janitor_reclaim_failures_total",
    help: "Orphans that could not be removed completely in a pass (a later pass retries), by reason.",
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
    help: "Orphans seen in the last completed pass that are still inside the protection window.",
    registers: [this.registry],
  });
  private readonly lastCompleted = new Gauge({
    name: "fsb_janitor_last_completed_pass_timestamp_seconds",
    help: "When the last pass that could read the inventory finished (Unix time).",
    registers: [this.registry],
  });

  constructor() {
    // Every series exists from the start, so a rate() over a fresh janitor is 0, not absent.
    for (const reason of ORPHAN_REASONS) {
      this.orphans.labels({ reason }).inc(0);
      this.failures.labels({ reason }).inc(0);
    }
    for (const outcome of PASS_OUTCOMES) this.passes.labels({ outcome }).inc(0);
  }

  orphanReclaimed(reason: OrphanReason): void {
    this.orphans.labels({ reason }).inc();
  }

  objectRemoved(kind: RemovedKind, reason: OrphanReason): void {
    this.objects.labels({ kind, reason }).inc();
  }

  reclaimFailed(reason: OrphanReason): void {
    this.failures.labels({ reason }).inc();
  }

  passFinished(outcome: PassOutcome, protectedOrphans: number, finishedAtMs: number): void {
    this.passes.labels({ outcome }).inc();
    if (outcome === "completed") {
      this.waiting.set(protectedOrphans);
      this.lastCompleted.set(finishedAtMs / 1000);
    }
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
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
  const server: Server = createServer((request, response) => {
    if (request.method !== "GET" || (request.url ?? "").split("?")[0] !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found; try /metrics\n");
      return;
    }
    metrics.text().then(
      (text) => response.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
      (error: unknown) => response.writeHead(500, { "content-type": "text/plain" }).end(`${String(error)}\n`),
    );
  });
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
