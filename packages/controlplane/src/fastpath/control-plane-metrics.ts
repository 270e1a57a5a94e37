/**
 * The control plane's Prometheus metrics (prom-client, a registry of its own), served on the
 * fast-path API's port at `/metrics` without a token: counts and latencies only, labelled by phase,
 * pool and agent, never by sandbox.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { SandboxPhase, type Sandbox } from "@fast-sandbox/api";
import type { AgentRegistry } from "../registry/agent-registry.js";

/** Every phase a sandbox can be in; each has a series from the start (0 when none). */
const PHASES: readonly string[] = SandboxPhase.anyOf.map((literal) => literal.const);

/** Create latency buckets, in seconds: warm creates take tens of milliseconds, image pulls and wake-ups seconds. */
const CREATE_BUCKETS_SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface ControlPlaneMetricsSources {
  /** The sandboxes as the control plane last saw them (an informer's cache: no store read per scrape). */
  sandboxes(): Iterable<Sandbox>;
  registry: AgentRegistry;
}

export class ControlPlaneMetrics {
  readonly registry = new Registry();
  private sources: ControlPlaneMetricsSources | undefined;

  private readonly createDuration = new Histogram({
    name: "fsb_sandbox_create_duration_seconds",
    help: "CreateSandbox calls from request to answer (placement, agent create, status write), by outcome: ok or the error code.",
    labelNames: ["outcome"] as const,
    buckets: CREATE_BUCKETS_SECONDS,
    registers: [this.registry],
  });

  private readonly heartbeats = new Counter({
    name: "fsb_agent_heartbeats_total",
    help: "Heartbeats of the control plane to each agent, by result (ok, failed).",
    labelNames: ["agent", "result"] as const,
    registers: [this.registry],
  });

  constructor() {
    // collect() runs with the metric as `this`; the sources are read through this closure.
    const sources = () => this.sources;
    new Gauge({
      name: "fsb_sandboxes",
      help: "Sandboxes by phase; a sandbox being deleted counts as Terminating.",
      labelNames: ["phase"] as const,
      registers: [this.registry],
      collect() {
        const counts = new Map<string, number>(PHASES.map((phase) => [phase, 0]));
        for (const sandbox of sources()?.sandboxes() ?? []) {
          const phase = sandbox.metadata.deletionTimestamp ? "Terminating" : (sandbox.status?.phase ?? "Pending");
          counts.set(phase, (counts.get(phase) ?? 0) + 1);
        }
        this.reset();
        for (const [phase, count] of counts) this.labels({ phase }).set(count);
      },
    });
    new Gauge({
      name: "fsb_pool_slots",
      help: "Sandbox slots of each pool's agents: capacity (all agents), allocated, free (ready agents, usable now).",
      labelNames: ["namespace", "pool", "state"] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [namespace, pool, usage] of poolUsages(sources()?.registry)) {
          this.labels({ namespace, pool, state: "capacity" }).set(usage.capacity);
          this.labels({ namespace, pool, state: "allocated" }).set(usage.allocated);
          this.labels({ namespace, pool, state: "free" }).set(usage.free);
        }
      },
    });
    new Gauge({
      name: "fsb_pool_agents",
      help: "Agents of each pool: registered, and ready among them.",
      labelNames: ["namespace", "pool", "state"] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [namespace, pool, usage] of poolUsages(sources()?.registry)) {
          this.labels({ namespace, pool, state: "registered" }).set(usage.agents);
          this.labels({ namespace, pool, state: "ready" }).set(usage.readyAgents);
        }
      },
    });
  }

  /** Where the gauges read from at each scrape; until then they show no pools and zero sandboxes. */
  observe(sources: ControlPlaneMetricsSources): void {
    this.sources = sources;
  }

  createFinished(outcome: string, seconds: number): void {
    this.createDuration.labels({ outcome }).observe(seconds);
  }

  heartbeat(agent: string, ok: boolean): void {
    this.heartbeats.labels({ agent, result: ok ? "ok" : "failed" }).inc();
  }

  /** The Prometheus text exposition. */
  async exposition(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }
}

/** [namespace, pool, usage] of every pool that has agents. */
function poolUsages(registry: AgentRegistry | undefined): [string, string, ReturnType<AgentRegistry["poolUsage"]>][] {
  if (!registry) return [];
  const pools = new Map<string, [string, string]>();
  for (const agent of registry.listAgents()) pools.set(`${agent.namespace}/${agent.pool}`, [agent.namespace, agent.pool]);
  return [...pools.values()].map(([namespace, pool]) => [namespace, pool, registry.poolUsage(namespace, pool)]);
}
