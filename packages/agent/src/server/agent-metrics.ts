/**
 * The agent's Prometheus metrics (prom-client, a registry of its own), served on the agent API's
 * port at `/metrics` without a token: creates, deletes and execs by outcome, and create latency.
 */
import type { Interceptor } from "@connectrpc/connect";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { fromConnectError, pb } from "@fast-sandbox/api/core";

export type AgentOperation = "create" | "delete" | "exec";

export type RelayResult = "opened" | "unauthorized" | "forbidden" | "bad_request" | "unreachable";

/** The agent API's methods that are counted, by their protobuf name. */
const OPERATIONS: ReadonlyMap<string, AgentOperation> = new Map([
  ["CreateSandbox", "create"],
  ["DeleteSandbox", "delete"],
  ["Exec", "exec"],
]);

/** Create latency buckets, in seconds (a warm runc create takes tens of milliseconds; a pull, seconds). */
const CREATE_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class AgentMetrics {
  readonly registry = new Registry();

  private readonly operations = new Counter({
    name: "fsb_agent_sandbox_operations_total",
    help: "Sandbox creates, deletes and execs (an exec counts when its stream ends), by outcome: ok or the error code.",
    labelNames: ["operation", "outcome"] as const,
    registers: [this.registry],
  });

  private readonly createDuration = new Histogram({
    name: "fsb_agent_create_duration_seconds",
    help: "Sandbox creates on this agent, from request to answer (image pull when missing, container, task start), by outcome.",
    labelNames: ["outcome"] as const,
    buckets: CREATE_BUCKETS_SECONDS,
    registers: [this.registry],
  });

  private readonly createStepDuration = new Histogram({
    name: "fsb_agent_create_step_duration_seconds",
    help: "Steps of successful creates on this agent: image, snapshot, container, task, start, command_start.",
    labelNames: ["step"] as const,
    buckets: CREATE_BUCKETS_SECONDS,
    registers: [this.registry],
  });

  private readonly relayTunnels = new Counter({
    name: "fsb_agent_relay_tunnels_total",
    help: "CONNECT tunnels asked of this agent's relay (the sandbox proxy reaching an Isolated sandbox), by result: opened, unauthorized, forbidden (not its sandbox's address, or the address of another sandbox than the one named), bad_request, unreachable.",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  private readonly evictions = new Counter({
    name: "fsb_agent_sandboxes_evicted_total",
    help: "Sandboxes this agent stopped because their disk use went past their limit (sandboxResources.ephemeralStorage).",
    registers: [this.registry],
  });

  private createsInFlight: (() => number) | undefined;
  private preparedInstances: (() => number) | undefined;

  constructor() {
    for (const operation of OPERATIONS.values()) this.operations.labels({ operation, outcome: "ok" }).inc(0);
    const inFlight = () => this.createsInFlight?.() ?? 0;
    new Gauge({
      name: "fsb_agent_creates_in_flight",
      help: "Sandbox creates running on this agent now.",
      registers: [this.registry],
      collect() {
        this.set(inFlight());
      },
    });
    const prepared = () => this.preparedInstances?.() ?? 0;
    new Gauge({
      name: "fsb_agent_prepared_instances",
      help: "Prepared instances ready to be claimed on this agent now (its pool's preparedInstances, as refilled).",
      registers: [this.registry],
      collect() {
        this.set(prepared());
      },
    });
  }

  /** Where the prepared-instances gauge reads from at each scrape. */
  observePreparedInstances(count: () => number): void {
    this.preparedInstances = count;
  }

  /** Where the creates-in-flight gauge reads from at each scrape. */
  observeCreatesInFlight(count: () => number): void {
    this.createsInFlight = count;
  }

  /** A successful create's steps in milliseconds, keyed `<step>Ms` (the runtime's `CreateTimings`); `totalMs` is skipped. */
  createStepsFinished(timingsMs: Readonly<Record<string, number>>): void {
    for (const [key, ms] of Object.entries(timingsMs)) {
      if (key === "totalMs" || !key.endsWith("Ms")) continue;
      const step = key.slice(0, -2).replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
      this.createStepDuration.labels({ step }).observe(ms / 1000);
    }
  }

  finished(operation: AgentOperation, outcome: string, seconds?: number): void {
    this.operations.labels({ operation, outcome }).inc();
    if (operation === "create" && seconds !== undefined) this.createDuration.labels({ outcome }).observe(seconds);
  }

  /** A CONNECT to the relay, by how it ended up: opened, or why it was refused. */
  relayTunnel(result: RelayResult): void {
    this.relayTunnels.labels({ result }).inc();
  }

  /** A sandbox evicted past its disk limit (EphemeralStorageGuard). */
  evicted(): void {
    this.evictions.inc();
  }

  /** The Prometheus text exposition. */
  async exposition(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }

  /** Counts creates, deletes and execs (place it after the token check: refused calls do not count). */
  interceptor(): Interceptor {
    return (next) => async (request) => {
      const operation = request.service.typeName === pb.AgentService.typeName ? OPERATIONS.get(request.method.name) : undefined;
      if (!operation) return next(request);
      const started = process.hrtime.bigint();
      const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
      const outcomeOf = (error: unknown) => fromConnectError(error).code;
      let response;
      try {
        response = await next(request);
      } catch (error) {
        this.finished(operation, outcomeOf(error), seconds());
        throw error;
      }
      if (!response.stream) {
        this.finished(operation, "ok", seconds());
        return response;
      }
      // A stream (exec) ends later: count it when it ends, with how it ended.
      const finished = (outcome: string) => this.finished(operation, outcome, seconds());
      const messages = response.message;
      return {
        ...response,
        message: (async function* () {
          let outcome = "canceled";
          try {
            yield* messages;
            outcome = "ok";
          } catch (error) {
            outcome = outcomeOf(error);
            throw error;
          } finally {
            // "canceled" when the client went away before the end.
            finished(outcome);
          }
        })(),
      };
    };
  }
}
