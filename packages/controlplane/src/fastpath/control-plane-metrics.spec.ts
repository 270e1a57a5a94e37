import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { API_VERSION, type Sandbox } from "@fast-sandbox/api";
import { AgentRegistry } from "../registry/agent-registry.js";
import { ControlPlaneMetrics } from "./control-plane-metrics.js";

function sandbox(name: string, phase: NonNullable<Sandbox["status"]>["phase"] | undefined, deleting = false): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name, namespace: "default", ...(deleting ? { deletionTimestamp: "2026-01-01T00:00:00Z" } : {}) },
    spec: { image: "img", poolRef: "default" },
    ...(phase ? { status: { phase } } : {}),
  };
}

function agent(name: string, pool: string, capacity: number) {
  return { name, namespace: "default", pool, endpoint: `127.0.0.1:${name.length}`, capacity, hostIP: "127.0.0.1", images: [] };
}

async function text(metrics: ControlPlaneMetrics): Promise<string> {
  return (await metrics.exposition()).text;
}

describe("ControlPlaneMetrics", () => {
  it("records create latencies by outcome in fsb_sandbox_create_duration_seconds", async () => {
    const metrics = new ControlPlaneMetrics();
    metrics.createFinished("ok", 0.03);
    metrics.createFinished("ok", 0.2);
    metrics.createFinished("resource_exhausted", 0.001);
    const exposition = await text(metrics);
    assert.match(exposition, /^fsb_sandbox_create_duration_seconds_count\{outcome="ok"\} 2$/m);
    assert.match(exposition, /^fsb_sandbox_create_duration_seconds_bucket\{le="0.05",outcome="ok"\} 1$/m);
    assert.match(exposition, /^fsb_sandbox_create_duration_seconds_bucket\{le="0.25",outcome="ok"\} 2$/m);
    assert.match(exposition, /^fsb_sandbox_create_duration_seconds_count\{outcome="resource_exhausted"\} 1$/m);
    assert.match(exposition, /^fsb_sandbox_create_duration_seconds_sum\{outcome="ok"\} 0\.23/m);
  });

  it("counts sandboxes by phase at each scrape, every phase present, a sandbox being deleted as Terminating", async () => {
    const metrics = new ControlPlaneMetrics();
    let sandboxes = [sandbox("a", "Running"), sandbox("b", "Running"), sandbox("c", undefined), sandbox("d", "Running", true), sandbox("e", "Lost")];
    metrics.observe({ sandboxes: () => sandboxes, registry: new AgentRegistry() });
    let exposition = await text(metrics);
    assert.match(exposition, /^fsb_sandboxes\{phase="Running"\} 2$/m);
    assert.match(exposition, /^fsb_sandboxes\{phase="Pending"\} 1$/m);
    assert.match(exposition, /^fsb_sandboxes\{phase="Terminating"\} 1$/m);
    assert.match(exposition, /^fsb_sandboxes\{phase="Lost"\} 1$/m);
    assert.match(exposition, /^fsb_sandboxes\{phase="Expired"\} 0$/m);
    sandboxes = [];
    exposition = await text(metrics);
    assert.match(exposition, /^fsb_sandboxes\{phase="Running"\} 0$/m);
    assert.doesNotMatch(exposition, /phase="\w+"\} [1-9]/);
  });

  it("reports each pool's slots and agents from the registry, and forgets a pool whose agents are gone", async () => {
    const registry = new AgentRegistry();
    registry.upsertAgent(agent("default-0", "default", 4));
    registry.upsertAgent(agent("default-1", "default", 4));
    registry.upsertAgent(agent("gpu-0", "gpu", 2));
    registry.setAgentReady("default-1", false);
    registry.place({ sandboxKey: "default/a", namespace: "default", pool: "default", image: "img", ports: [] });
    const metrics = new ControlPlaneMetrics();
    metrics.observe({ sandboxes: () => [], registry });
    let exposition = await text(metrics);
    assert.match(exposition, /^fsb_pool_slots\{namespace="default",pool="default",state="capacity"\} 8$/m);
    assert.match(exposition, /^fsb_pool_slots\{namespace="default",pool="default",state="allocated"\} 1$/m);
    assert.match(exposition, /^fsb_pool_slots\{namespace="default",pool="default",state="free"\} 3$/m);
    assert.match(exposition, /^fsb_pool_slots\{namespace="default",pool="gpu",state="free"\} 2$/m);
    assert.match(exposition, /^fsb_pool_agents\{namespace="default",pool="default",state="registered"\} 2$/m);
    assert.match(exposition, /^fsb_pool_agents\{namespace="default",pool="default",state="ready"\} 1$/m);
    registry.removeAgent("gpu-0");
    exposition = await text(metrics);
    assert.doesNotMatch(exposition, /pool="gpu"/);
  });

  it("counts heartbeats per agent and result", async () => {
    const metrics = new ControlPlaneMetrics();
    metrics.heartbeat("default-0", true);
    metrics.heartbeat("default-0", true);
    metrics.heartbeat("default-0", false);
    const exposition = await text(metrics);
    assert.match(exposition, /^fsb_agent_heartbeats_total\{agent="default-0",result="ok"\} 2$/m);
    assert.match(exposition, /^fsb_agent_heartbeats_total\{agent="default-0",result="failed"\} 1$/m);
  });

  it("shows no pools and zero sandboxes before it is given its sources", async () => {
    const exposition = await text(new ControlPlaneMetrics());
    assert.match(exposition, /^fsb_sandboxes\{phase="Running"\} 0$/m);
    assert.doesNotMatch(exposition, /^fsb_pool_slots\{/m);
  });
});
