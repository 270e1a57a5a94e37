import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UnavailableError } from "@fast-sandbox/api";
import type { AgentClient } from "../agent-client/agent-client.js";
import type { Informer } from "../controller/informer.js";
import type { SandboxManager } from "../fastpath/sandbox-manager.js";
import type { AgentConnections } from "../fleet/agent-connections.js";
import type { AgentRegistry } from "../registry/agent-registry.js";
import type { AllocationSync } from "./allocation-sync.js";
import { poolControllerHooks } from "./pool-controller-hooks.js";

/** An agent as this replica's connections see it: its client (while its Pod is Ready) and whether its heartbeats answer. */
interface FakeConnection {
  connected: boolean;
  /** What `retire` answers (or throws); undefined: no client (its Pod is not Ready). */
  retire?: (cancel: boolean) => Promise<{ retired: boolean; sandboxes: number }>;
}

/** The part of AgentConnections the hooks use, over `agents`; `calls` records every retire asked. */
function fakeConnections(agents: Map<string, FakeConnection>, calls: string[] = []): AgentConnections {
  const fake: Pick<AgentConnections, "get" | "agentConnectivity" | "observedStatus"> = {
    get: (name) => {
      const retire = agents.get(name)?.retire;
      if (!retire) return undefined;
      const client: Pick<AgentClient, "retire"> = {
        retire: (cancel = false) => {
          calls.push(`${cancel ? "cancel" : "retire"} ${name}`);
          return retire(cancel);
        },
      };
      return client as AgentClient;
    },
    agentConnectivity: (name) => {
      const agent = agents.get(name);
      return agent ? { connected: agent.connected, since: new Date(0) } : undefined;
    },
    observedStatus: () => undefined,
  };
  return fake as AgentConnections;
}

/** The hooks over fake connections; the rest of the core is not used by retireAgent and agentUsable. */
function hooksOver(connections: AgentConnections): ReturnType<typeof poolControllerHooks> {
  const sandboxes: Pick<Informer<"Sandbox">, "addHandlers"> = { addHandlers: () => () => undefined };
  const allocations: Pick<AllocationSync, "holdsSandboxes" | "pendingIn" | "agentRegistered"> = {
    holdsSandboxes: () => false,
    pendingIn: () => 0,
    agentRegistered: () => undefined,
  };
  return poolControllerHooks({
    connections,
    registry: {} as AgentRegistry,
    allocations: allocations as AllocationSync,
    manager: {} as SandboxManager,
    sandboxes: sandboxes as Informer<"Sandbox">,
  });
}

describe("poolControllerHooks.retireAgent", () => {
  it("asks the agent even when this replica's heartbeats to it fail: another replica may have placed on it", async () => {
    const calls: string[] = [];
    const agents = new Map<string, FakeConnection>([
      ["busy", { connected: false, retire: async () => ({ retired: false, sandboxes: 1 }) }],
      ["idle", { connected: false, retire: async () => ({ retired: true, sandboxes: 0 }) }],
    ]);
    const { retireAgent } = hooksOver(fakeConnections(agents, calls));
    assert.ok(retireAgent);
    assert.equal(await retireAgent("busy"), false, "it holds a sandbox another replica placed: kept");
    assert.equal(await retireAgent("idle"), true);
    assert.deepEqual(calls, ["retire busy", "retire idle"]);
  });

  it("keeps an agent it cannot ask: no client (its Pod not Ready), or a call that fails", async () => {
    const calls: string[] = [];
    const agents = new Map<string, FakeConnection>([
      ["silent", { connected: false, retire: () => Promise.reject(new UnavailableError("deadline exceeded")) }],
      ["starting", { connected: false }],
    ]);
    const { retireAgent } = hooksOver(fakeConnections(agents, calls));
    assert.ok(retireAgent);
    assert.equal(await retireAgent("silent"), false);
    assert.equal(await retireAgent("starting"), false);
    assert.equal(await retireAgent("unknown"), false);
    assert.deepEqual(calls, ["retire silent"]);
  });

  it("undoes a retirement at the agent when it can, and answers true either way (a retirement lapses by itself)", async () => {
    const calls: string[] = [];
    const agents = new Map<string, FakeConnection>([
      ["reachable", { connected: true, retire: async () => ({ retired: false, sandboxes: 0 }) }],
      ["silent", { connected: false, retire: () => Promise.reject(new UnavailableError("deadline exceeded")) }],
    ]);
    const { retireAgent } = hooksOver(fakeConnections(agents, calls));
    assert.ok(retireAgent);
    assert.equal(await retireAgent("reachable", true), true);
    assert.equal(await retireAgent("silent", true), true);
    assert.equal(await retireAgent("gone", true), true);
    assert.deepEqual(calls, ["cancel reachable", "cancel silent"]);
  });
});
