import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { NotFoundError, pb, toConnectError } from "@fast-sandbox/api";
import { AgentMetrics } from "./agent-metrics.js";

/** An agent API whose create takes 20 ms, whose delete of "missing" fails, and whose exec streams two messages or fails. */
function agentClient(metrics: AgentMetrics) {
  const transport = createRouterTransport(
    ({ service }) => {
      service(pb.AgentService, {
        async createSandbox(request) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          return create(pb.AgentSandboxSchema, { sandboxId: request.sandboxId });
        },
        deleteSandbox(request) {
          if (request.sandboxId === "missing") throw toConnectError(new NotFoundError("sandbox missing does not exist"));
          return create(pb.AgentDeleteSandboxResponseSchema, {});
        },
        async *exec(request) {
          yield create(pb.ExecResponseSchema, { event: { case: "stdout", value: new TextEncoder().encode("hi") } });
          if (request.sandboxId === "missing") throw toConnectError(new NotFoundError("sandbox missing does not exist"));
          yield create(pb.ExecResponseSchema, { event: { case: "exitCode", value: 0 } });
        },
        listSandboxes() {
          return create(pb.AgentListSandboxesResponseSchema, {});
        },
      });
    },
    { router: { interceptors: [metrics.interceptor()] } },
  );
  return createClient(pb.AgentService, transport);
}

async function text(metrics: AgentMetrics): Promise<string> {
  return (await metrics.exposition()).text;
}

describe("AgentMetrics", () => {
  it("counts creates, deletes and execs by outcome, from the start at 0", async () => {
    const metrics = new AgentMetrics();
    assert.match(await text(metrics), /^fsb_agent_sandbox_operations_total\{operation="exec",outcome="ok"\} 0$/m);
    const client = agentClient(metrics);
    await client.createSandbox({ sandboxId: "a" });
    await client.deleteSandbox({ sandboxId: "a" });
    await assert.rejects(client.deleteSandbox({ sandboxId: "missing" }));
    for await (const _ of client.exec({ sandboxId: "a", command: ["true"] }));
    await assert.rejects(async () => {
      for await (const _ of client.exec({ sandboxId: "missing", command: ["true"] }));
    });
    await client.listSandboxes({});
    const exposition = await text(metrics);
    assert.match(exposition, /^fsb_agent_sandbox_operations_total\{operation="create",outcome="ok"\} 1$/m);
    assert.match(exposition, /^fsb_agent_sandbox_operations_total\{operation="delete",outcome="ok"\} 1$/m);
    assert.match(exposition, /^fsb_agent_sandbox_operations_total\{operation="delete",outcome="not_found"\} 1$/m);
    assert.match(exposition, /^fsb_agent_sandbox_operations_total\{operation="exec",outcome="ok"\} 1$/m);
    assert.match(exposition, /^fsb_agent_sandbox_operations_total\{operation="exec",outcome="not_found"\} 1$/m);
    assert.doesNotMatch(exposition, /operation="list/);
  });

  it("records how long creates take in fsb_agent_create_duration_seconds", async () => {
    const metrics = new AgentMetrics();
    await agentClient(metrics).createSandbox({ sandboxId: "a" });
    const exposition = await text(metrics);
    assert.match(exposition, /^fsb_agent_create_duration_seconds_count\{outcome="ok"\} 1$/m);
    assert.match(exposition, /^fsb_agent_create_duration_seconds_bucket\{le="0.01",outcome="ok"\} 0$/m);
    assert.match(exposition, /^fsb_agent_create_duration_seconds_bucket\{le="0.5",outcome="ok"\} 1$/m);
  });

  it("records each step of a create by its name, without the total", async () => {
    const metrics = new AgentMetrics();
    metrics.createStepsFinished({ imageMs: 1, snapshotMs: 4, containerMs: 3, taskMs: 20, startMs: 6, commandStartMs: 2, totalMs: 36 });
    const exposition = await text(metrics);
    for (const step of ["image", "snapshot", "container", "task", "start", "command_start"]) {
      assert.match(exposition, new RegExp(`^fsb_agent_create_step_duration_seconds_count\\{step="${step}"\\} 1$`, "m"), step);
    }
    assert.match(exposition, /^fsb_agent_create_step_duration_seconds_bucket\{le="0.01",step="task"\} 0$/m);
    assert.match(exposition, /^fsb_agent_create_step_duration_seconds_bucket\{le="0.025",step="task"\} 1$/m);
    assert.doesNotMatch(exposition, /step="total"/);
  });

  it("reports the creates in flight at each scrape (0 until told where to look)", async () => {
    let inFlight = 3;
    const metrics = new AgentMetrics();
    assert.match(await text(metrics), /^fsb_agent_creates_in_flight 0$/m);
    metrics.observeCreatesInFlight(() => inFlight);
    assert.match(await text(metrics), /^fsb_agent_creates_in_flight 3$/m);
    inFlight = 0;
    assert.match(await text(metrics), /^fsb_agent_creates_in_flight 0$/m);
  });
});
