/**
 * Test fixture of the SandboxManager, shared by its own spec and the reconcilers' that drive it: an
 * in-memory SQLite store, a registry, fake agents and the manager wired to them. Test code only:
 * excluded from the build, like the specs.
 */
import assert from "node:assert/strict";
import { API_VERSION, NotFoundError, type Sandbox, type SandboxPool, type SandboxSpec, type SandboxStats, type SandboxStatus } from "@fast-sandbox/api";
import { pino } from "pino";
import type {
  AgentClient,
  AgentLogsOptions,
  AgentSandbox,
  AgentSandboxSpec,
  AgentStatus,
  ExecEvent,
  ExecRequest,
  PullProgress,
} from "../agent-client/agent-client.js";
import { FakeClock } from "../controller/clock.js";
import { AgentRegistry } from "../registry/agent-registry.js";
import { openSqliteResourceStore, type SqliteResourceStore } from "../store/sqlite-resource-store.js";
import { CLEANUP_FINALIZER, SandboxManager, type AgentClients } from "./sandbox-manager.js";

/** When a fixture's clock starts unless the test says otherwise. */
export const FIXTURE_NOW = new Date("2026-03-04T05:06:07.000Z");

export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * An agent that keeps its sandboxes in memory and records every create and delete (`calls`); it can
 * be told to fail a create, or to hold one until released.
 */
export class FakeAgentClient implements AgentClient {
  /** `create <id>` and `delete <id> <gracePeriodMs>`, in order. */
  readonly calls: string[] = [];
  readonly createRequests: AgentSandboxSpec[] = [];
  readonly execRequests: ExecRequest[] = [];
  /** What the agent runs, by sandbox id. */
  readonly sandboxes = new Map<string, AgentSandbox>();
  /** When set, createSandbox fails with it (after recording the call). */
  createError: Error | undefined;
  /** When set, createSandbox waits for it (after recording the call). */
  createGate: Promise<void> | undefined;
  /** Resolved each time createSandbox is entered. */
  createEntered = deferred();
  /** Runs when createSandbox is entered, before it answers (e.g. the heartbeat that marks a dying agent unready). */
  onCreate: ((spec: AgentSandboxSpec) => void) | undefined;
  /** Runs when deleteSandbox is entered, before it answers (e.g. what another replica does meanwhile). */
  onDelete: ((sandboxId: string) => Promise<void>) | undefined;
  /** What every exec streams. */
  execEvents: ExecEvent[] = [{ type: "exit", exitCode: 0 }];
  /** Images pulled, in order. */
  readonly pulls: string[] = [];
  /** What every pull streams. */
  pullProgress: PullProgress[] = [];
  /** Pulls never end until their signal aborts them. */
  pullHangs = false;
  /** Addresses given to Isolated sandboxes so far (`10.88.0.<n>`); Shared ones get none, as the agent API says. */
  private addresses = 0;

  constructor(readonly name = "agent") {}

  async status(): Promise<AgentStatus> {
    return { name: this.name, namespace: "default", pool: "default", nodeName: "", images: [], sandboxes: [...this.sandboxes.values()], pid: 1 };
  }

  async createSandbox(spec: AgentSandboxSpec): Promise<AgentSandbox> {
    this.calls.push(`create ${spec.sandboxId}`);
    this.createRequests.push(spec);
    this.createEntered.resolve();
    this.onCreate?.(spec);
    if (this.createGate) await this.createGate;
    if (this.createError) throw this.createError;
    const sandbox: AgentSandbox = {
      sandboxId: spec.sandboxId,
      namespace: spec.namespace,
      name: spec.name,
      image: spec.image,
      state: "running",
      pid: 100,
      oomKilled: false,
      ...(spec.network.mode === "Isolated" ? { address: `10.88.0.${++this.addresses}` } : {}),
    };
    this.sandboxes.set(spec.sandboxId, sandbox);
    return sandbox;
  }

  async deleteSandbox(sandboxId: string, gracePeriodMs: number): Promise<void> {
    this.calls.push(`delete ${sandboxId} ${gracePeriodMs}`);
    await this.onDelete?.(sandboxId);
    this.sandboxes.delete(sandboxId);
  }

  async listSandboxes(): Promise<AgentSandbox[]> {
    return [...this.sandboxes.values()];
  }

  async retire(cancel = false): Promise<{ retired: boolean; sandboxes: number }> {
    return { retired: !cancel && this.sandboxes.size === 0, sandboxes: this.sandboxes.size };
  }

  /** What `stats` answers for a sandbox it holds. */
  statsAnswer: SandboxStats = {
    timestampMs: 1_700_000_000_000,
    cpuUsageNanos: 0,
    cpuUsedMillis: 0,
    cpuLimitMillis: 0,
    memoryUsedBytes: 0,
    memoryCacheBytes: 0,
    memoryLimitBytes: 0,
    pids: 0,
    diskUsedBytes: 0,
    diskLimitBytes: 0,
    nodeCpus: 1,
    nodeMemoryBytes: 0,
  };

  async stats(sandboxId: string): Promise<SandboxStats> {
    this.calls.push(`stats ${sandboxId}`);
    if (!this.sandboxes.has(sandboxId)) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    return this.statsAnswer;
  }

  /** The samples `statsHistoryAnswer` holds, as the agent would filter them. */
  statsHistoryAnswer: SandboxStats[] = [];

  async statsHistory(sandboxId: string, sinceMs: number, untilMs: number): Promise<SandboxStats[]> {
    this.calls.push(`statsHistory ${sandboxId} ${sinceMs} ${untilMs}`);
    if (!this.sandboxes.has(sandboxId)) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
    return this.statsHistoryAnswer.filter((sample) => sample.timestampMs >= sinceMs && (untilMs <= 0 || sample.timestampMs <= untilMs));
  }

  /** The Logs calls, as the agent got them. */
  readonly logsRequests: { sandboxId: string; options: AgentLogsOptions }[] = [];
  /** What Logs answers. */
  logChunks: Uint8Array[] = [];

  async *logs(sandboxId: string, options: AgentLogsOptions): AsyncIterable<Uint8Array> {
    this.logsRequests.push({ sandboxId, options });
    yield* this.logChunks;
  }

  async *exec(request: ExecRequest): AsyncIterable<ExecEvent> {
    this.execRequests.push(request);
    yield* this.execEvents;
  }

  async *pullImage(image: string, signal?: AbortSignal): AsyncIterable<PullProgress> {
    this.pulls.push(image);
    // A pull that never ends (a registry that accepts connections and never answers), until its signal aborts it.
    if (this.pullHangs) {
      await new Promise((_resolve, reject) => {
        if (signal?.aborted) reject(new Error("the pull was cancelled"));
        signal?.addEventListener("abort", () => reject(new Error("the pull was cancelled")), { once: true });
      });
    }
    yield* this.pullProgress;
  }

  close(): void {}
}

/** A pool of the `default` namespace. */
export function poolOf(name: string, overrides: Partial<SandboxPool["spec"]> = {}): SandboxPool {
  return {
    apiVersion: API_VERSION,
    kind: "SandboxPool",
    metadata: { name, namespace: "default" },
    spec: { capacity: { poolMin: 1, poolMax: 2 }, maxSandboxesPerPod: 2, ...overrides },
  };
}

/** A sandbox spec of the `default` pool, with strong consistency (its status is stored when create answers). */
export function sandboxSpec(overrides: Partial<SandboxSpec> = {}): SandboxSpec {
  return { image: "python:3.12", poolRef: "default", consistencyMode: "strong", ...overrides };
}

export interface SandboxManagerFixtureOptions {
  /** When the fixture's clock starts. @default FIXTURE_NOW */
  start?: Date;
  /** The `default` pool the manager knows. @default poolOf("default") */
  pool?: SandboxPool;
}

/** A SandboxManager over an in-memory store and a registry, with fake agents added by `addAgent`. */
export class SandboxManagerFixture {
  /** The manager's clock: its waits (capacity, pauses between placement tries) end only when the test moves it. */
  readonly clock: FakeClock;
  readonly store: SqliteResourceStore = openSqliteResourceStore({ path: ":memory:" });
  readonly registry = new AgentRegistry();
  /** The agents' clients, by agent name. */
  readonly clients = new Map<string, FakeAgentClient>();
  /** Keys of the sandboxes whose slot the registry released, in order. */
  readonly released: string[] = [];
  /** While false, no agent has a client (none is connected). */
  connected = true;
  /** What the manager asks for an agent's client. */
  readonly agents: AgentClients = { get: (name) => (this.connected ? this.clients.get(name) : undefined) };
  readonly manager: SandboxManager;

  constructor(options: SandboxManagerFixtureOptions = {}) {
    this.clock = new FakeClock(options.start ?? FIXTURE_NOW);
    const release = this.registry.release.bind(this.registry);
    this.registry.release = (key: string) => {
      const placement = release(key);
      if (placement) this.released.push(key);
      return placement;
    };
    this.manager = new SandboxManager({
      store: this.store,
      registry: this.registry,
      agents: this.agents,
      logger: pino({ level: "silent" }),
      clock: this.clock,
    });
    this.manager.setPool(options.pool ?? poolOf("default"));
  }

  /** Registers a ready agent (the n-th on `127.0.0.1:700n`, node `node-n`) with a connected client, and returns the client. */
  addAgent(name: string, { pool = "default", capacity = 2 }: { pool?: string; capacity?: number } = {}): FakeAgentClient {
    const ordinal = this.clients.size + 1;
    this.registry.upsertAgent({
      name,
      namespace: "default",
      pool,
      endpoint: `127.0.0.1:${7000 + ordinal}`,
      capacity,
      hostIP: "127.0.0.1",
      nodeName: `node-${ordinal}`,
      images: [],
    });
    const client = new FakeAgentClient(name);
    this.clients.set(name, client);
    return client;
  }

  /** The client of an agent added before. */
  client(name: string): FakeAgentClient {
    return this.clients.get(name) ?? assert.fail(`no client for ${name}`);
  }

  /** The stored record of a sandbox of the `default` namespace. */
  stored(name: string): Promise<Sandbox | undefined> {
    return this.store.get("Sandbox", { namespace: "default", name });
  }

  /** Slots taken in a pool of the `default` namespace. */
  allocated(pool = "default"): number {
    return this.registry.poolUsage("default", pool).allocated;
  }

  /** Writes a record straight to the store (as `fsb apply`, or a create cut short by a crash, leaves it), optionally with a status. */
  /** A record as its user writes it (kubectl apply), or with `annotations` (e.g. FAST_PATH_ANNOTATION: as a fast-path create writes it). */
  async storeRecord(name: string, status?: SandboxStatus, overrides: Partial<SandboxSpec> = {}, annotations?: Record<string, string>): Promise<Sandbox> {
    const created = await this.store.create("Sandbox", {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name, namespace: "default", finalizers: [CLEANUP_FINALIZER], ...(annotations ? { annotations } : {}) },
      spec: sandboxSpec(overrides),
    });
    return status ? this.store.updateStatus("Sandbox", { ...created, status }) : created;
  }

  /** Waits for the manager's work in flight, then closes the store. */
  async close(): Promise<void> {
    await this.manager.drain();
    await this.store.close();
  }
}
