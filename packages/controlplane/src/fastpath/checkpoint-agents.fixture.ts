/**
 * Test fixture of checkpoints: fake agents that keep checkpoints in their node's directory (shared
 * by the pool's agents on a node, as in the embedded mode) and record the calls. Test code only:
 * excluded from the build, like the specs.
 */
import assert from "node:assert/strict";
import { NotFoundError } from "@fast-sandbox/api";
import type { AgentSandbox } from "../agent-client/agent-client.js";
import type { AgentCheckpoint, AgentCheckpointClient, AgentCheckpointRequest } from "../agent-client/agent-checkpoints.js";
import { FakeAgentClient } from "./sandbox-manager.fixture.js";

/** Checkpoints on one node: the pool's agents there share its directory. */
export class NodeCheckpoints {
  readonly byId = new Map<string, AgentCheckpoint>();
}

/** A fake agent that also keeps checkpoints (in its node's directory) and records the calls. */
export class FakeCheckpointingAgent extends FakeAgentClient implements AgentCheckpointClient {
  readonly checkpointCalls: AgentCheckpointRequest[] = [];
  /** When set, checkpointSandbox fails with it (runsc refused: the sandbox runs on, unless `stopsOnFailure`). */
  checkpointError: Error | undefined;
  /** With checkpointError: the sandbox was stopped before the save failed. */
  stopsOnFailure = false;
  /** With checkpointError: the call fails (times out) but the agent saves on; `finishLateSave()` completes the save. */
  savesLate = false;
  /** With checkpointError: it is saved before the call fails (runsc saved it; the sandbox could not run on). */
  savesBeforeFailure = false;
  private lateSave: (() => void) | undefined;
  /** The sandbox whose late save goes on. */
  private savingLate: string | undefined;

  constructor(
    name: string,
    readonly node: NodeCheckpoints,
    /** The agent's pool, which its checkpoints are of. */
    readonly pool = "default",
  ) {
    super(name);
  }

  async checkpointSandbox(request: AgentCheckpointRequest): Promise<AgentCheckpoint> {
    this.checkpointCalls.push(request);
    const sandbox = this.sandboxes.get(request.sandboxId);
    if (!sandbox) throw new NotFoundError(`sandbox ${request.sandboxId} does not exist`);
    if (this.checkpointError) {
      if (this.savesBeforeFailure) this.save(request, sandbox);
      if (this.stopsOnFailure) this.sandboxes.set(request.sandboxId, { ...sandbox, state: "stopped" });
      if (this.savesLate) {
        this.lateSave = () => this.save(request, sandbox);
        this.savingLate = request.sandboxId;
      }
      throw this.checkpointError;
    }
    return this.save(request, sandbox);
  }

  /** Completes the save a failed call left going (`savesLate`). */
  finishLateSave(): void {
    assert.ok(this.lateSave, "no save is left going");
    this.lateSave();
    this.lateSave = undefined;
    this.savingLate = undefined;
  }

  /** As the agent reports them: one whose save goes on is checkpointing (and reported running). */
  override async listSandboxes(): Promise<AgentSandbox[]> {
    return (await super.listSandboxes()).map((sandbox) => (sandbox.sandboxId === this.savingLate ? { ...sandbox, checkpointing: true } : sandbox));
  }

  private save(request: AgentCheckpointRequest, sandbox: AgentSandbox): AgentCheckpoint {
    const checkpoint: AgentCheckpoint = {
      checkpointId: request.checkpointId,
      namespace: request.namespace,
      name: request.name,
      pool: this.pool,
      sourceSandboxId: request.sandboxId,
      sourceName: sandbox.name,
      image: sandbox.image,
      runtimeType: "gvisor",
      networkMode: "isolated",
      command: ["sh", "-c", "loop"],
      workingDir: "/work",
      createdAt: new Date(2026, 0, 1, 0, 0, this.node.byId.size).toISOString(),
      sizeBytes: 1000,
    };
    this.node.byId.set(checkpoint.checkpointId, checkpoint);
    // Left stopped: the container stays without a task (no pid), as the agent leaves it.
    if (request.leaveStopped) {
      const { pid: _pid, ...stopped } = sandbox;
      this.sandboxes.set(request.sandboxId, { ...stopped, state: "stopped" });
    }
    return checkpoint;
  }

  async resumeSandbox(): Promise<void> {}

  async listCheckpoints(): Promise<AgentCheckpoint[]> {
    return [...this.node.byId.values()];
  }

  async deleteCheckpoint(checkpointId: string): Promise<void> {
    this.calls.push(`delete-checkpoint ${checkpointId}`);
    this.node.byId.delete(checkpointId);
  }
}
