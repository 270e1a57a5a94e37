import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { JanitorMetrics, parseLoopbackListen, startMetricsServer } from "./metrics.js";

describe("parseLoopbackListen", () => {
  it("accepts loopback addresses only", () => {
    assert.deepEqual(parseLoopbackListen("127.0.0.1:9464"), { host: "127.0.0.1", port: 9464 });
    assert.deepEqual(parseLoopbackListen("[::1]:0"), { host: "::1", port: 0 });
    assert.deepEqual(parseLoopbackListen("localhost:80"), { host: "localhost", port: 80 });
    assert.throws(
      () => parseLoopbackListen("0.0.0.0:9464"),
      (error: unknown) => error instanceof ValidationError && /not a loopback address/.test(error.message),
    );
    assert.throws(() => parseLoopbackListen("10.0.0.1:9464"), ValidationError);
    assert.throws(() => parseLoopbackListen("127.0.0.1"), /not host:port/);
    assert.throws(() => parseLoopbackListen("127.0.0.1:70000"), /not host:port/);
  });
});

describe("the metrics endpoint", () => {
  it("serves the counts as Prometheus text on /metrics, every reason from the start", async () => {
    const metrics = new JanitorMetrics();
    metrics.orphanReclaimed("agent_gone");
    metrics.objectRemoved("fifo", "agent_gone");
    metrics.passFinished("completed", 2, 1_700_000_000_000);
    const server = await startMetricsServer(metrics, { host: "127.0.0.1", port: 0 });
    try {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const response = await fetch(server.url);
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
      const text = await response.text();
      assert.match(text, /^fsb_janitor_orphans_reclaimed_total\{reason="agent_gone"\} 1$/m);
      assert.match(text, /^fsb_janitor_orphans_reclaimed_total\{reason="record_gone"\} 0$/m);
      assert.match(text, /^fsb_janitor_orphans_reclaimed_total\{reason="anchor_orphaned"\} 0$/m);
      assert.match(text, /^fsb_janitor_objects_removed_total\{kind="fifo",reason="agent_gone"\} 1$/m);
      assert.match(text, /^fsb_janitor_protected_orphans 2$/m);
      assert.match(text, /^fsb_janitor_last_completed_pass_timestamp_seconds 1700000000$/m);
      assert.equal((await fetch(server.url.replace("/metrics", "/other"))).status, 404);
    } finally {
      await server.close();
    }
  });

  it("answers /healthz always, and /readyz only while the last pass completed", async () => {
    const metrics = new JanitorMetrics();
    const server = await startMetricsServer(metrics, { host: "127.0.0.1", port: 0 });
    const probe = async (path: string) => {
      const response = await fetch(server.url.replace("/metrics", path));
      return `${response.status} ${await response.text()}`;
    };
    try {
      assert.equal(await probe("/healthz"), "200 ok\n");
      assert.equal(await probe("/readyz"), "503 not ready: no pass has finished yet\n");
      metrics.passFinished("completed", 0, 1_700_000_000_000);
      assert.equal(await probe("/readyz"), "200 ok\n");
      metrics.passFinished("inventory_unavailable", 0, 1_700_000_010_000);
      assert.equal(await probe("/readyz"), "503 not ready: the last pass could not ask the control plane which agents and sandboxes exist\n");
      metrics.passFinished("failed", 0, 1_700_000_020_000);
      assert.equal(await probe("/readyz"), "503 not ready: the last pass failed\n");
      assert.equal(await probe("/healthz"), "200 ok\n");
    } finally {
      await server.close();
    }
  });
});
