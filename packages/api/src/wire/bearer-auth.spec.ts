import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Interceptor } from "@connectrpc/connect";
import { UnauthenticatedError } from "../errors.js";
import { SandboxPoolSchema } from "../gen/fastsandbox/v1alpha1/resources_pb.js";
import { PoolService } from "../gen/fastsandbox/v1alpha1/sandbox_service_pb.js";
import { requireBearerToken, sendBearerToken } from "./bearer-auth.js";
import { fromConnectError } from "./connect-errors.js";

const TOKEN = "s3cret-token-0123456789";

/** A PoolService whose getSandboxPool answers with the requested name, behind requireBearerToken. */
function client(clientInterceptors: Interceptor[]) {
  const transport = createRouterTransport(
    ({ service }) => {
      service(PoolService, {
        getSandboxPool(request) {
          return create(SandboxPoolSchema, {
            kind: "SandboxPool",
            metadata: { name: request.name },
          });
        },
      });
    },
    {
      router: { interceptors: [requireBearerToken(TOKEN)] },
      transport: { interceptors: clientInterceptors },
    },
  );
  return createClient(PoolService, transport);
}

const setHeader =
  (value: string): Interceptor =>
  (next) =>
  (request) => {
    request.header.set("authorization", value);
    return next(request);
  };

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ConnectError, String(error));
    return error;
  }
  assert.fail("the call should have been refused");
}

describe("requireBearerToken", () => {
  it("lets a call with the right token through", async () => {
    const pool = await client([sendBearerToken(TOKEN)]).getSandboxPool({
      name: "p1",
    });
    assert.equal(pool.metadata?.name, "p1");
  });

  it("refuses a call without an authorization header and says how to send one", async () => {
    const error = await rejection(client([]).getSandboxPool({ name: "p1" }));
    assert.equal(error.code, Code.Unauthenticated);
    assert.match(error.rawMessage, /missing bearer token: send 'authorization: Bearer <token>'/);
    assert.ok(fromConnectError(error) instanceof UnauthenticatedError);
  });

  it("refuses a wrong token, a token that is a prefix of the right one, and other schemes", async () => {
    for (const header of [
      `Bearer ${TOKEN}x`,
      `Bearer ${TOKEN.slice(0, -1)}`,
      "Bearer wrong-token-0123456789",
      `Basic ${TOKEN}`,
      `bearer ${TOKEN}`,
      "Bearer ",
    ]) {
      const error = await rejection(client([setHeader(header)]).getSandboxPool({ name: "p1" }));
      assert.equal(error.code, Code.Unauthenticated, header);
      assert.match(error.rawMessage, /invalid bearer token/, header);
    }
  });

  it("refuses a token from a different sendBearerToken", async () => {
    const error = await rejection(
      client([sendBearerToken("another-token-abcdefgh")]).getSandboxPool({
        name: "p1",
      }),
    );
    assert.equal(error.code, Code.Unauthenticated);
  });

  it("guard: refuses a request without the token from its headers alone, as the interceptor's error in Connect's shape, and hands one with it on", async () => {
    let handled = 0;
    const server = http.createServer(
      requireBearerToken(TOKEN).guard((_request, response) => {
        handled += 1;
        response.end("handled");
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    /** A POST whose body is never ended: only a server that does not wait for it answers. */
    const post = (headers: http.OutgoingHttpHeaders) =>
      new Promise<{ status: number; code: string | undefined; body: string }>((resolve, reject) => {
        const request = http.request({ host: "127.0.0.1", port, path: "/fastsandbox.v1alpha1.PoolService/GetSandboxPool", method: "POST", headers });
        request.on("error", reject);
        request.on("response", (response) => {
          let body = "";
          response.setEncoding("utf8");
          response.on("data", (chunk: string) => (body += chunk));
          response.on("end", () => {
            request.destroy();
            resolve({ status: response.statusCode ?? 0, code: response.headers["fsb-error-code"] as string | undefined, body });
          });
        });
        request.write("{");
      });
    try {
      const missing = await post({ "content-type": "application/json" });
      assert.deepEqual(
        { ...missing, body: JSON.parse(missing.body) },
        {
          status: 401,
          code: "unauthenticated",
          body: { code: "unauthenticated", message: "missing bearer token: send 'authorization: Bearer <token>' (fsb reads it from its data directory)" },
        },
      );
      const wrong = await post({ "content-type": "application/json", authorization: `Basic ${TOKEN}` });
      assert.equal(wrong.status, 401);
      assert.match(wrong.body, /invalid bearer token/);
      assert.equal(handled, 0);
      const right = await post({ authorization: `Bearer ${TOKEN}` });
      assert.equal(handled, 1);
      assert.equal(right.body, "handled");
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it("refuses to be built with a token shorter than 16 characters", () => {
    assert.throws(() => requireBearerToken("short"), /shorter than 16 characters/);
    assert.throws(() => requireBearerToken("a".repeat(15)), /shorter than 16 characters/);
    assert.doesNotThrow(() => requireBearerToken("a".repeat(16)));
  });
});
