import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport } from "@connectrpc/connect-node";
import { pb, sandboxSpecToMessage, sendBearerToken } from "@fast-sandbox/api";
import { pino } from "pino";
import { MAX_REQUEST_BYTES, startApiServer, type ApiServer } from "./api-server.js";
import { CheckpointManager } from "./checkpoint-manager.js";
import { SandboxManagerFixture, sandboxSpec } from "./sandbox-manager.fixture.js";

const TOKEN = "test-token-0123456789abcdef";

/** Runs `test` against an API server over a fresh fixture, on `host`. */
async function withApiServer(host: string, test: (api: ApiServer, fixture: SandboxManagerFixture) => Promise<void>): Promise<void> {
  const fixture = new SandboxManagerFixture();
  const { manager, store, registry, agents } = fixture;
  const checkpoints = new CheckpointManager({ manager, store, registry, agents, logger: pino({ level: "silent" }) });
  const api = await startApiServer({ manager, store, registry, agents, checkpoints, token: TOKEN, host, port: 0 });
  try {
    await test(api, fixture);
  } finally {
    await api.close();
    checkpoints.close();
    await fixture.close();
  }
}

/**
 * The answer to a POST of `path` whose body is `body` but never ends: only a server that answers
 * without reading the body answers within `withinMs`.
 */
async function answerToUnendedBody(
  baseUrl: string,
  version: "1.1" | "2",
  path: string,
  headers: Record<string, string>,
  body: Buffer,
  withinMs = 5_000,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const session = version === "2" ? http2.connect(baseUrl) : undefined;
  let request: http.ClientRequest | http2.ClientHttp2Stream | undefined;
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer within ${withinMs} ms while the request's body was still open`)), withinMs);
      const answered = (status: number, head: http.IncomingHttpHeaders, stream: NodeJS.ReadableStream) => {
        let text = "";
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => (text += chunk));
        stream.on("end", () => {
          clearTimeout(timer);
          resolve({ status, headers: head, body: text });
        });
      };
      if (session) {
        session.on("error", reject);
        const stream = (request = session.request({ ":method": "POST", ":path": path, ...headers }));
        stream.on("error", reject);
        stream.on("response", (head) => answered(Number(head[":status"]), head, stream));
      } else {
        request = http.request(`${baseUrl}${path}`, { method: "POST", headers });
        request.on("error", reject);
        request.on("response", (response) => answered(response.statusCode ?? 0, response.headers, response));
      }
      request.write(body);
    });
  } finally {
    request?.destroy();
    session?.destroy();
  }
}

describe("startApiServer", () => {
  it("answers with a URL that parses for an IPv6 host too (bracketed), and serves there", async () => {
    await withApiServer("::1", async (api) => {
      assert.match(api.url, /^http:\/\/\[::1\]:\d+$/);
      const url = new URL("/healthz", api.url);
      assert.equal((await fetch(url)).status, 200);
    });
  });

  it("refuses a call without the token before reading its body (an unauthenticated gzip body not yet ended is answered 401 at once); the probes stay open", async () => {
    // 16 KiB on the wire that would grow to 16 MiB, four times the limit.
    const bomb = gzipSync(Buffer.alloc(16 * 1024 * 1024));
    await withApiServer("127.0.0.1", async (api) => {
      for (const version of ["1.1", "2"] as const) {
        for (const authorization of [undefined, `Bearer ${TOKEN.slice(0, -1)}`]) {
          const what = `HTTP/${version}, ${authorization ?? "no authorization"}`;
          const answer = await answerToUnendedBody(
            api.url,
            version,
            "/fastsandbox.v1alpha1.SandboxService/CreateSandbox",
            { "content-type": "application/json", "content-encoding": "gzip", ...(authorization ? { authorization } : {}) },
            bomb,
          );
          assert.equal(answer.status, 401, what);
          assert.equal(answer.headers["fsb-error-code"], "unauthenticated", what);
          const error = JSON.parse(answer.body) as { code: string; message: string };
          assert.equal(error.code, "unauthenticated", what);
          assert.match(error.message, authorization ? /invalid bearer token/ : /missing bearer token/, what);
        }
      }
      for (const path of ["/healthz", "/readyz", "/metrics"]) assert.notEqual((await fetch(new URL(path, api.url))).status, 401, path);
    });
  });

  it("refuses a call with the token whose request is larger than MAX_REQUEST_BYTES, also once decompressed, with ResourceExhausted, creating nothing", async () => {
    await withApiServer("127.0.0.1", async (api, fixture) => {
      const interceptors = [sendBearerToken(TOKEN)];
      for (const transport of [
        createConnectTransport({ baseUrl: api.url, httpVersion: "1.1", interceptors }),
        createConnectTransport({ baseUrl: api.url, httpVersion: "2", interceptors, sendCompression: compressionGzip, useBinaryFormat: true }),
      ]) {
        const sandboxes = createClient(pb.SandboxService, transport);
        const spec = sandboxSpecToMessage(sandboxSpec({ envs: [{ name: "LARGE", value: "x".repeat(MAX_REQUEST_BYTES) }] }));
        await assert.rejects(
          sandboxes.createSandbox({ namespace: "default", name: "large", spec }),
          (error: unknown) => error instanceof ConnectError && error.code === Code.ResourceExhausted && /readMaxBytes/.test(error.rawMessage),
        );
      }
      assert.equal(await fixture.stored("large"), undefined);
    });
  });
});
