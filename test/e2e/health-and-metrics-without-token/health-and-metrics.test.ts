/**
 * `/healthz`, `/readyz` and `/metrics` of the control plane and of an agent, fetched like curl would
 * (no token) from a real embedded Fast Sandbox: they answer, the metrics count a create, and the
 * APIs on the same ports still refuse calls without a token.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { pb } from "@fast-sandbox/api";
import { BASE_IMAGE, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

async function get(url: string): Promise<{ status: number; text: string; contentType: string }> {
  const response = await fetch(url);
  return { status: response.status, text: await response.text(), contentType: response.headers.get("content-type") ?? "" };
}

/** A Connect JSON call without a token, as `curl -X POST -H 'content-type: application/json' -d '{}'` sends it. */
async function callWithoutToken(base: string, service: string, method: string): Promise<number> {
  const response = await fetch(`${base}/${service}/${method}`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
  await response.body?.cancel();
  return response.status;
}

describe("health and metrics endpoints without a token", () => {
  let embedded: EmbeddedCase;

  before(async () => {
    embedded = await startEmbedded({ name: "probes", pools: [pool("default", { maxSandboxesPerPod: 2 })] });
  });

  after(async () => {
    await embedded?.stop();
  });

  it("answers /healthz and /readyz of the control plane with 200, while its API refuses calls without a token", async () => {
    const { url } = embedded.controlPlane;
    assert.deepEqual(await get(`${url}/healthz`).then((r) => [r.status, r.text]), [200, "ok\n"]);
    assert.deepEqual(await get(`${url}/readyz`).then((r) => [r.status, r.text]), [200, "ok\n"]);
    assert.equal(await callWithoutToken(url, pb.SandboxService.typeName, "ListSandboxes"), 401);
    assert.equal(await callWithoutToken(url, pb.PoolService.typeName, "ListSandboxPools"), 401);
  });

  it("shows a create in the latency histogram, the sandbox's phase, the pool's slots and the heartbeats, and no sandbox name", async () => {
    const { client, controlPlane } = embedded;
    const before = await get(`${controlPlane.url}/metrics`);
    assert.equal(before.status, 200);
    assert.match(before.contentType, /^text\/plain/);
    assert.doesNotMatch(before.text, /^fsb_sandbox_create_duration_seconds_count\{outcome="ok"\} [1-9]/m);

    const sandbox = await client.sandboxes.create({ pool: "default", image: BASE_IMAGE, command: ["sleep", "3600"] });
    const { text } = await get(`${controlPlane.url}/metrics`);
    assert.match(text, /^fsb_sandbox_create_duration_seconds_count\{outcome="ok"\} 1$/m);
    assert.match(text, /^fsb_sandbox_create_duration_seconds_bucket\{le="\+Inf",outcome="ok"\} 1$/m);
    assert.match(text, /^fsb_pool_slots\{namespace="default",pool="default",state="allocated"\} 1$/m);
    assert.match(text, /^fsb_pool_slots\{namespace="default",pool="default",state="capacity"\} 2$/m);
    assert.ok(!text.includes(sandbox.metadata.name), "the metrics name no sandbox");
    await waitFor(
      async () => /^fsb_agent_heartbeats_total\{agent="default-0",result="ok"\} [1-9]\d*$/m.test((await get(`${controlPlane.url}/metrics`)).text),
      10_000,
      "a heartbeat of default-0 in fsb_agent_heartbeats_total",
    );
    // The phase gauge reads the reconciler's cache, which the watch fills asynchronously.
    await waitFor(
      async () => /^fsb_sandboxes\{phase="Running"\} 1$/m.test((await get(`${controlPlane.url}/metrics`)).text),
      10_000,
      "the Running sandbox in fsb_sandboxes",
    );
    await client.sandboxes.delete(sandbox.metadata.name);
  });

  it("answers /healthz, /readyz and /metrics of an agent, counting its creates and deletes, while its API refuses calls without a token", async () => {
    const { client } = embedded;
    const [agent] = await client.pools.agents({ pool: "default" });
    assert.ok(agent, "the pool's agent");
    const base = `http://${agent.endpoint}`;
    assert.deepEqual(await get(`${base}/healthz`).then((r) => [r.status, r.text]), [200, "ok\n"]);
    assert.deepEqual(await get(`${base}/readyz`).then((r) => [r.status, r.text]), [200, "ok\n"]);
    assert.equal(await callWithoutToken(base, pb.AgentService.typeName, "ListSandboxes"), 401);

    const { text } = await get(`${base}/metrics`);
    assert.match(text, /^fsb_agent_sandbox_operations_total\{operation="create",outcome="ok"\} 1$/m);
    assert.match(text, /^fsb_agent_sandbox_operations_total\{operation="delete",outcome="ok"\} 1$/m);
    assert.match(text, /^fsb_agent_create_duration_seconds_count\{outcome="ok"\} 1$/m);
    // Its one create was a cold one (steps up to the task) or, once the pool's stock was ready, a claim of a prepared instance.
    assert.match(text, /^fsb_agent_create_step_duration_seconds_count\{step="(task|claim)"\} 1$/m);
    assert.match(text, /^fsb_agent_creates_in_flight 0$/m);
  });
});
