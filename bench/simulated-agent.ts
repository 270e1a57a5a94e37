/**
 * Simulated agents for benchmarks of the control plane at scale (scale.ts): the embedded control
 * plane's agent port (`EmbeddedAgents`: a process per agent, a client per endpoint) answered in
 * memory, so the registry, the reconcilers, the SQLite store and the API are the real ones while no
 * process and no container exists.
 *
 * An agent answers every call at once, keeps its sandboxes in memory and decides admission as the
 * real one does: its slots (`spec.slots`, creates in flight included) and, on a Shared network, ports
 * exclusive on the agent. A sandbox whose command is `true` reports its command exited (code 0), as a
 * real one does from its next heartbeat on (the sandbox stays up, for exec); every other command runs
 * for ever. Its "process" answers on the next turn of the event loop after `start()`;
 * `kill()` makes it lost and ready again after `restartDelayMs` (same sandboxes, a new endpoint, as a
 * restarted agent adopts what its predecessor ran); `stop()` leaves its sandboxes in memory, as
 * containers outlive their agent.
 */
import { NoCapacityError, NotFoundError, UnavailableError, normalizeImageName, type SandboxStats } from "@fast-sandbox/api";
import type {
  AgentClient,
  AgentProcess,
  AgentSandbox,
  AgentSandboxSpec,
  AgentStatus,
  EmbeddedAgents,
  ExecEvent,
  LocalAgentEvents,
  LocalAgentSettings,
  PullProgress,
} from "@fast-sandbox/controlplane";

export interface SimulatedAgentsOptions {
  /** Images every agent's node holds from the start (its pool's, typically). @default none */
  images?: readonly string[];
  /** How long a killed agent stays lost before it answers again. @default 200 */
  restartDelayMs?: number;
  /** The node name agents report. @default "simulated" */
  nodeName?: string;
}

/** The in-memory agents of one control plane; pass it as `agents` of `startEmbeddedControlPlane`. */
export class SimulatedAgents implements EmbeddedAgents {
  private readonly options: SimulatedAgentsOptions;
  private readonly byName = new Map<string, SimulatedAgent>();
  private readonly byEndpoint = new Map<string, SimulatedAgent>();
  private addresses = 0;

  constructor(options: SimulatedAgentsOptions = {}) {
    this.options = options;
  }

  createProcess(settings: LocalAgentSettings, events: LocalAgentEvents): AgentProcess {
    let agent = this.byName.get(settings.name);
    if (!agent) {
      agent = new SimulatedAgent(settings, this.options, () => this.nextAddress());
      this.byName.set(settings.name, agent);
    }
    return new SimulatedAgentProcess(agent, events, this.options.restartDelayMs ?? 200, (endpoint, serving) => {
      if (serving) this.byEndpoint.set(endpoint, agent);
      else this.byEndpoint.delete(endpoint);
    });
  }

  /** A client of the agent serving at `endpoint`; its calls fail (unavailable) once that incarnation is gone. */
  connect(endpoint: string): AgentClient {
    return new SimulatedAgentClient(endpoint, () => this.byEndpoint.get(endpoint));
  }

  /** The agent of that name, once a process of it was created. */
  get(name: string): SimulatedAgent | undefined {
    return this.byName.get(name);
  }

  /** Every agent ever started, by name. */
  list(): SimulatedAgent[] {
    return [...this.byName.values()];
  }

  /** Sandboxes held by all agents. */
  get sandboxCount(): number {
    let count = 0;
    for (const agent of this.byName.values()) count += agent.sandboxes.size;
    return count;
  }

  /** Isolated sandboxes get unique addresses from 10.128.0.1 on. */
  private nextAddress(): string {
    const n = ++this.addresses;
    return `10.${128 + ((n >>> 16) & 127)}.${(n >>> 8) & 255}.${n & 255}`;
  }
}

/** One agent's state: what its containerd would hold. */
export class SimulatedAgent {
  readonly name: string;
  readonly namespace: string;
  readonly pool: string;
  readonly images: Set<string>;
  /** Its sandboxes by sandbox id. */
  readonly sandboxes = new Map<string, AgentSandbox>();
  /** Exposed ports of its Shared-network sandboxes, by sandbox id. */
  private readonly sharedPorts = new Map<string, readonly number[]>();
  private readonly nodeName: string;
  private readonly nextAddress: () => string;
  /** Retired (AgentClient.retire): refuses creates. */
  private retired = false;

  constructor(settings: LocalAgentSettings, options: SimulatedAgentsOptions, nextAddress: () => string) {
    this.name = settings.name;
    this.namespace = settings.namespace;
    this.pool = settings.pool;
    this.nodeName = options.nodeName ?? "simulated";
    this.images = new Set((options.images ?? []).flatMap((image) => [image, normalizeImageName(image)]));
    this.nextAddress = nextAddress;
  }

  status(): AgentStatus {
    return {
      name: this.name,
      namespace: this.namespace,
      pool: this.pool,
      nodeName: this.nodeName,
      images: [...this.images],
      sandboxes: [...this.sandboxes.values()].map((sandbox) => ({ ...sandbox })),
      pid: 0,
    };
  }

  /** Admission as the real agent decides it: slots, then ports of Shared sandboxes; an existing id is answered again. */
  create(spec: AgentSandboxSpec): AgentSandbox {
    const existing = this.sandboxes.get(spec.sandboxId);
    if (existing) return { ...existing };
    if (this.retired) throw new UnavailableError(`agent ${this.name} is retired; place the sandbox on another agent`);
    if (spec.slots !== undefined && this.sandboxes.size >= spec.slots) {
      throw new NoCapacityError(`agent ${this.name} has no free slot (${this.sandboxes.size} of ${spec.slots} in use)`);
    }
    if (spec.network.mode === "Shared") {
      const taken = spec.exposedPorts.filter((port) => this.portHolder(port) !== undefined);
      if (taken.length > 0) throw new NoCapacityError(`agent ${this.name}: port ${taken.join(", ")} is in use by another sandbox`);
    }
    this.images.add(spec.image);
    this.images.add(normalizeImageName(spec.image));
    const sandbox: AgentSandbox = {
      sandboxId: spec.sandboxId,
      namespace: spec.namespace,
      name: spec.name,
      image: spec.image,
      state: "running",
      oomKilled: false,
      ...(spec.command.length === 1 && spec.command[0] === "true" ? { exitCode: 0 } : {}),
      ...(spec.network.mode === "Isolated" ? { address: this.nextAddress() } : {}),
    };
    this.sandboxes.set(spec.sandboxId, sandbox);
    this.sharedPorts.set(spec.sandboxId, spec.network.mode === "Shared" ? spec.exposedPorts : []);
    return { ...sandbox };
  }

  delete(sandboxId: string): void {
    this.sandboxes.delete(sandboxId);
    this.sharedPorts.delete(sandboxId);
  }

  retire(cancel: boolean): { retired: boolean; sandboxes: number } {
    if (cancel) this.retired = false;
    else if (this.sandboxes.size === 0) this.retired = true;
    return { retired: !cancel && this.retired, sandboxes: this.sandboxes.size };
  }

  pull(image: string): PullProgress[] {
    const name = normalizeImageName(image);
    this.images.add(image);
    this.images.add(name);
    return [{ image: name, phase: "done", layersTotal: 1, layersDone: 1, bytesTotal: 0, bytesDone: 0, digest: "" }];
  }

  private portHolder(port: number): string | undefined {
    for (const [sandboxId, ports] of this.sharedPorts) if (ports.includes(port)) return sandboxId;
    return undefined;
  }
}

/**
 * The "process" of a simulated agent: serving from the next turn of the event loop after `start()`,
 * at an endpoint of its own per incarnation (a restarted agent listens on a new port).
 */
class SimulatedAgentProcess implements AgentProcess {
  readonly pid = undefined;
  endpoint = "";
  private incarnation = 0;
  private running = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly agent: SimulatedAgent,
    private readonly events: LocalAgentEvents,
    private readonly restartDelayMs: number,
    private readonly serving: (endpoint: string, serving: boolean) => void,
  ) {}

  get name(): string {
    return this.agent.name;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule(0);
  }

  /** Sandboxes stay (in the agent's memory), as containers outlive a stopped agent. */
  stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    this.goDown();
    return Promise.resolve();
  }

  /** A crash: lost now, serving again (new endpoint) after the restart delay. */
  kill(): void {
    if (!this.running) return;
    clearTimeout(this.timer);
    const wasServing = this.endpoint !== "";
    this.goDown();
    if (wasServing) this.events.onLost(this, "simulated agent killed");
    this.schedule(this.restartDelayMs);
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      if (!this.running) return;
      this.endpoint = `simulated:${this.agent.name}#${++this.incarnation}`;
      this.serving(this.endpoint, true);
      this.events.onReady(this, this.agent.status());
    }, delayMs);
  }

  private goDown(): void {
    if (this.endpoint) this.serving(this.endpoint, false);
    this.endpoint = "";
  }
}

/** A connection to one incarnation of a simulated agent. */
class SimulatedAgentClient implements AgentClient {
  private closed = false;

  constructor(
    private readonly endpoint: string,
    private readonly lookup: () => SimulatedAgent | undefined,
  ) {}

  status(): Promise<AgentStatus> {
    return this.call((agent) => agent.status());
  }

  createSandbox(spec: AgentSandboxSpec): Promise<AgentSandbox> {
    return this.call((agent) => agent.create(spec));
  }

  deleteSandbox(sandboxId: string): Promise<void> {
    return this.call((agent) => agent.delete(sandboxId));
  }

  listSandboxes(): Promise<AgentSandbox[]> {
    return this.call((agent) => agent.status().sandboxes);
  }

  retire(cancel = false): Promise<{ retired: boolean; sandboxes: number }> {
    return this.call((agent) => agent.retire(cancel));
  }

  /** A simulated sandbox uses nothing. */
  stats(sandboxId: string): Promise<SandboxStats> {
    return this.call((agent) => {
      if (!agent.status().sandboxes.some((sandbox) => sandbox.sandboxId === sandboxId)) throw new NotFoundError(`sandbox ${sandboxId} is not on this agent`);
      return {
        timestampMs: Date.now(),
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
    });
  }

  /** A simulated agent samples nothing: one reading now. */
  async statsHistory(sandboxId: string): Promise<SandboxStats[]> {
    return [await this.stats(sandboxId)];
  }

  async *logs(): AsyncIterable<Uint8Array> {
    await this.call(() => undefined);
  }

  async *exec(): AsyncIterable<ExecEvent> {
    await this.call(() => undefined);
    yield { type: "exit", exitCode: 0 };
  }

  async *pullImage(image: string): AsyncIterable<PullProgress> {
    yield* await this.call((agent) => agent.pull(image));
  }

  close(): void {
    this.closed = true;
  }

  /** Runs `fn` on the agent if this connection still reaches it; the answer (or error) comes asynchronously, like a call's. */
  private call<T>(fn: (agent: SimulatedAgent) => T): Promise<T> {
    return Promise.resolve().then(() => {
      const agent = this.closed ? undefined : this.lookup();
      if (!agent) throw new UnavailableError(`simulated agent at ${this.endpoint} is not serving${this.closed ? " (connection closed)" : ""}`);
      return fn(agent);
    });
  }
}
