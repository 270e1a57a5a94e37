/**
 * Test fixture of the E2B-compatible API: E2bSandboxes over the SandboxManager fixture (a real
 * manager, an in-memory store, fake agents that give Isolated sandboxes addresses), with a fake
 * daemon check that records its calls and fails when told to, and real checkpoints, pauses and
 * forks over fake agents that keep checkpoints (pools of runtimeType gvisor). Test code only:
 * excluded from the build, like the specs.
 */
import { pino, type Logger } from "pino";
import type { Sandbox, SandboxPool } from "@fast-sandbox/api";
import { FakeCheckpointingAgent, NodeCheckpoints } from "../fastpath/checkpoint-agents.fixture.js";
import { CheckpointManager } from "../fastpath/checkpoint-manager.js";
import { SandboxPauses } from "../fastpath/checkpoint-pauses.js";
import { SandboxManagerFixture, poolOf, type FakeAgentClient } from "../fastpath/sandbox-manager.fixture.js";
import { E2bSandboxes } from "./e2b-sandboxes.js";
import type { HostResources } from "./host-resources.js";

export const HOST: HostResources = { cpuCount: 8, memoryMB: 16_000, diskSizeMB: 100_000 };
export const DEFAULT_IMAGE = "fast-sandbox.io/base:latest";

/** The sandbox proxy's domain the fixture's E2B API names (getHost). */
export const E2B_DOMAIN = "sandboxes.example.com:7072";

/** `gate`, or the abort of `signal` (thrown), whichever comes first. */
function untilOrAborted(gate: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return gate;
  signal.throwIfAborted();
  return new Promise<void>((resolve, reject) => {
    const aborted = () => reject(signal.reason as Error);
    signal.addEventListener("abort", aborted, { once: true });
    gate.then(
      () => {
        signal.removeEventListener("abort", aborted);
        resolve();
      },
      (error: unknown) => reject(error as Error),
    );
  });
}

export class E2bFixture {
  /** The control plane's secret the E2B sandboxes' tokens derive from. */
  readonly tokenSecret = Buffer.alloc(32, 7);
  readonly fixture = new SandboxManagerFixture({ pool: poolOf("default", { maxSandboxesPerPod: 16, image: DEFAULT_IMAGE }) });
  readonly agent: FakeAgentClient;
  /** The sandboxes whose daemon was waited for, in order. */
  readonly envdWaits: { sandboxID: string; address: string }[] = [];
  /** When set, the daemon check fails with it. */
  envdFailure: Error | undefined;
  /** When set, the daemon check waits for it first (or for its signal's abort, which it then throws). */
  envdGate: Promise<void> | undefined;
  /** The checkpoints of the node of the gVisor pools' agents. */
  readonly node = new NodeCheckpoints();
  readonly checkpoints: CheckpointManager;
  readonly pauses: SandboxPauses;
  readonly sandboxes: E2bSandboxes;

  /** `logger`: what E2bSandboxes logs to. @default silent */
  constructor(options: { logger?: Logger } = {}) {
    this.agent = this.fixture.addAgent("default-0", { capacity: 16 });
    const logger = pino({ level: "silent" });
    const { manager, store, registry, agents, clock } = this.fixture;
    this.checkpoints = new CheckpointManager({ manager, store, registry, agents, logger, unansweredCheckpoints: { pollMs: 5, patienceMs: 10_000 } });
    this.pauses = new SandboxPauses({ manager, store, registry, agents, checkpoints: this.checkpoints, logger, clock });
    manager.setSavedStateCleanup((sandbox) => this.pauses.removeSavedState(sandbox));
    this.sandboxes = new E2bSandboxes({
      manager: this.fixture.manager,
      store: this.fixture.store,
      lookup: async (sandboxID) => (await this.fixture.store.list("Sandbox")).items.find((sandbox) => sandbox.status?.sandboxID === sandboxID),
      envdReady: async (sandbox, signal) => {
        this.envdWaits.push(sandbox);
        if (this.envdGate) await untilOrAborted(this.envdGate, signal);
        if (this.envdFailure) throw this.envdFailure;
      },
      tokenSecret: this.tokenSecret,
      host: HOST,
      logger: options.logger ?? logger,
      clock,
      pauses: this.pauses,
      checkpoints: this.checkpoints,
      domain: E2B_DOMAIN,
    });
  }

  /** Stores the default pool (the manager knows it already) so templates resolve. */
  async start(): Promise<this> {
    await this.fixture.store.create("SandboxPool", poolOf("default", { maxSandboxesPerPod: 16, image: DEFAULT_IMAGE }));
    return this;
  }

  /** A pool the manager and the store know, with an agent (one that keeps checkpoints, on `node`, for runtimeType gvisor). */
  async addPool(name: string, spec: Partial<SandboxPool["spec"]> = {}): Promise<SandboxPool> {
    const pool = poolOf(name, { maxSandboxesPerPod: 16, image: `${name}-image`, ...spec });
    this.fixture.manager.setPool(pool);
    this.fixture.addAgent(`${name}-0`, { pool: name, capacity: 16 });
    if (spec.runtimeType === "gvisor") this.fixture.clients.set(`${name}-0`, new FakeCheckpointingAgent(`${name}-0`, this.node, name));
    return this.fixture.store.create("SandboxPool", pool);
  }

  /** The fake agent of a pool added with runtimeType gvisor. */
  checkpointingAgent(pool: string): FakeCheckpointingAgent {
    const client = this.fixture.client(`${pool}-0`);
    if (!(client instanceof FakeCheckpointingAgent)) throw new Error(`pool ${pool} was not added with runtimeType gvisor`);
    return client;
  }

  async stored(): Promise<Sandbox[]> {
    return (await this.fixture.store.list("Sandbox")).items;
  }

  async storedById(sandboxID: string): Promise<Sandbox | undefined> {
    return (await this.stored()).find((sandbox) => sandbox.status?.sandboxID === sandboxID);
  }

  close(): Promise<void> {
    this.checkpoints.close();
    return this.fixture.close();
  }
}
