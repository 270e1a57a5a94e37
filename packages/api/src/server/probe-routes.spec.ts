import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { listenCleartext, type CleartextServer } from "./cleartext-server.js";
import { withProbeRoutes, type Probes } from "./probe-routes.js";

describe("withProbeRoutes", () => {
  let server: CleartextServer;
  let base: string;
  let notReady: string | undefined;
  let readyThrows = false;
  const reached: string[] = [];
  const probes: Probes = {
    notReadyReason: () => (readyThrows ? Promise.reject(new Error("store is closed")) : Promise.resolve(notReady)),
    metrics: () => Promise.resolve({ contentType: "text/plain; version=0.0.4; charset=utf-8", text: "fsb_up 1\n" }),
  };

  before(async () => {
    // Stands in for the Connect handler behind its token check.
    const api = withProbeRoutes((request, response) => {
      reached.push(`${request.method ?? ""} ${request.url ?? ""}`);
      response.writeHead(401, { "content-type": "text/plain" });
      response.end("unauthenticated\n");
    }, probes);
    server = await listenCleartext(api, "127.0.0.1", 0);
    base = `http://127.0.0.1:${server.port}`;
  });
  after(() => server.close());

  it("answers /healthz with 200 without reaching the API handler", async () => {
    const response = await fetch(`${base}/healthz`);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "ok\n");
    assert.deepEqual(reached, []);
  });

  it("answers /readyz with 200 when ready, 503 and the reason when not, 503 when the check throws", async () => {
    notReady = undefined;
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    notReady = "writes are held until every agent has reported";
    const held = await fetch(`${base}/readyz`);
    assert.equal(held.status, 503);
    assert.equal(await held.text(), "not ready: writes are held until every agent has reported\n");
    notReady = undefined;
    readyThrows = true;
    const broken = await fetch(`${base}/readyz?verbose`);
    assert.equal(broken.status, 503);
    assert.equal(await broken.text(), "not ready: store is closed\n");
    readyThrows = false;
  });

  it("serves /metrics with the registry's content type, over HTTP/1.1 and HTTP/2, and HEAD without a body", async () => {
    const response = await fetch(`${base}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    assert.equal(await response.text(), "fsb_up 1\n");
    const head = await fetch(`${base}/metrics`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");

    const session = http2.connect(base);
    try {
      const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
        const stream = session.request({ ":method": "GET", ":path": "/metrics" });
        let status = 0;
        let text = "";
        stream.on("response", (headers) => (status = Number(headers[":status"])));
        stream.on("data", (chunk: Buffer) => (text += chunk.toString()));
        stream.on("end", () => resolve({ status, text }));
        stream.on("error", reject);
      });
      assert.deepEqual(body, { status: 200, text: "fsb_up 1\n" });
    } finally {
      session.close();
    }
  });

  it("hands every other path and every other method on the probe paths to the API handler", async () => {
    reached.length = 0;
    assert.equal((await fetch(`${base}/fastsandbox.v1.SandboxService/ListSandboxes`, { method: "POST", body: "{}" })).status, 401);
    assert.equal((await fetch(`${base}/metrics`, { method: "POST", body: "" })).status, 401);
    assert.equal((await fetch(`${base}/healthz/extra`)).status, 401);
    assert.deepEqual(reached, ["POST /fastsandbox.v1.SandboxService/ListSandboxes", "POST /metrics", "GET /healthz/extra"]);
  });
});
