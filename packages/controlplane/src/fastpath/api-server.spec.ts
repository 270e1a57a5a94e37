import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport } from "@connectrpc/connect-node";
import { pb, sandboxSpecToMessage, sendBearerToken } from "@fast-sandbox/api";
import { answerToUnendedBody } from "../../../../test/support/unended-body.js";
import { MAX_REQUEST_BYTES, type ApiServer } from "./api-server.js";
import { API_TOKEN, withApiServer as withApiServerOn } from "./api-server.fixture.js";
import { sandboxSpec, type SandboxManagerFixture } from "./sandbox-manager.fixture.js";

const TOKEN = API_TOKEN;

/** Runs `test` against an API server over a fresh fixture, on `host`. */
function withApiServer(host: string, test: (api: ApiServer, fixture: SandboxManagerFixture) => Promise<void>): Promise<void> {
  return withApiServerOn({ host }, test);
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
