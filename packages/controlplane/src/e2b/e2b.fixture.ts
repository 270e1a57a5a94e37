/**
 * Test fixture of the E2B-compatible API: E2bSandboxes over the SandboxManager fixture (a real
 * manager, an in-memory store, fake agents that give Isolated sandboxes addresses), with a fake
 * daemon check that records its calls and fails when told to. Test code only: excluded from the
 * build, like the specs.
 */
import { pino } from "pino";
import type { Sandbox, SandboxPool } from "@fast-sandbox/api";
import { SandboxManagerFixture, poolOf, type FakeAgentClient } from "../fastpath/sandbox-manager.fixture.js";
import { E2bSandboxes } from "./e2b-sandboxes.js";
import type { HostResources } from "./host-resources.js";

export const HOST: HostResources = { cpuCount: 8, memoryMB: 16_000, diskSizeMB: 100_000 };
export const DEFAULT_IMAGE = "fast-sandbox.io/base:latest";

export class E2bFixture {
  readonly fixture = new SandboxManagerFixture({ pool: poolOf("default", { maxSandboxesPerPod: 16, image: DEFAULT_IMAGE }) });
  readonly agent: FakeAgentClient;
  /** The sandboxes whose daemon was waited for, in order. */
  readonly envdWaits: { sandboxID: string; address: string }[] = [];
  /** When set, the daemon check fails with it. */
  envdFailure: Error | undefined;
  readonly sandboxes: E2bSandboxes;

  constructor() {
    this.agent = this.fixture.addAgent("default-0", { capacity: 16 });
    this.sandboxes = new E2bSandboxes({
      manager: this.fixture.manager,
      store: this.fixture.store,
      lookup: async (sandboxID) => (await this.fixture.store.list("Sandbox")).items.find((sandbox) => sandbox.status?.sandboxID === sandboxID),
      envdReady: async (sandbox) => {
        this.envdWaits.push(sandbox);
        if (this.envdFailure) throw this.envdFailure;
      },
      tokenSecret: Buffer.alloc(32, 7),
      host: HOST,
      logger: pino({ level: "silent" }),
      clock: this.fixture.clock,
    });
  }

  /** Stores the default pool (the manager knows it already) so templates resolve. */
  async start(): Promise<this> {
    await this.fixture.store.create("SandboxPool", poolOf("default", { maxSandboxesPerPod: 16, image: DEFAULT_IMAGE }));
    return this;
  }

  /** A pool the manager and the store know, with an agent. */
  async addPool(name: string, spec: Partial<SandboxPool["spec"]> = {}): Promise<SandboxPool> {
    const pool = poolOf(name, { maxSandboxesPerPod: 16, image: `${name}-image`, ...spec });
    this.fixture.manager.setPool(pool);
    this.fixture.addAgent(`${name}-0`, { pool: name, capacity: 16 });
    return this.fixture.store.create("SandboxPool", pool);
  }

  async stored(): Promise<Sandbox[]> {
    return (await this.fixture.store.list("Sandbox")).items;
  }

  async storedById(sandboxID: string): Promise<Sandbox | undefined> {
    return (await this.stored()).find((sandbox) => sandbox.status?.sandboxID === sandboxID);
  }

  close(): Promise<void> {
    return this.fixture.close();
  }
}
