import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createClient, createRouterTransport } from "@connectrpc/connect";
import { FailedPreconditionError, ValidationError, fromConnectError, pb } from "@fast-sandbox/api";
import { hashApiKey } from "../e2b/api-key.js";
import { MemoryApiKeyStore } from "../e2b/memory-api-key-store.js";
import { createE2bService, type E2bApiAccess } from "./e2b-service.js";

function clientOf(access: E2bApiAccess | undefined) {
  return createClient(
    pb.E2bService,
    createRouterTransport((router) => router.service(pb.E2bService, createE2bService(access))),
  );
}

describe("E2bService.CreateApiKey", () => {
  it("issues a new key each time, stores only its hash, and says where E2B's SDKs go", async () => {
    const apiKeys = new MemoryApiKeyStore();
    const client = clientOf({ apiKeys, apiUrl: "http://127.0.0.1:7073", sandboxUrl: "http://127.0.0.1:7072" });
    const first = await client.createApiKey({});
    const second = await client.createApiKey({});
    assert.match(first.apiKey, /^e2b_[0-9a-f]{40}$/);
    assert.notEqual(first.apiKey, second.apiKey);
    assert.equal(first.apiUrl, "http://127.0.0.1:7073");
    assert.equal(first.sandboxUrl, "http://127.0.0.1:7072");
    assert.equal(await apiKeys.has(hashApiKey(first.apiKey)), true);
    assert.equal(await apiKeys.has(hashApiKey(second.apiKey)), true);
  });

  it("fails with failed_precondition on a control plane that does not serve the E2B API", async () => {
    await assert.rejects(
      clientOf(undefined)
        .createApiKey({})
        .catch((error: unknown) => {
          throw fromConnectError(error);
        }),
      (error: unknown) => error instanceof FailedPreconditionError && /does not serve the E2B-compatible API/.test(error.message),
    );
  });
});

describe("E2bService.RevokeApiKey", () => {
  it("revokes the key it is given (E2B's API refuses it from then on), only that one, and says when there was none", async () => {
    const apiKeys = new MemoryApiKeyStore();
    const client = clientOf({ apiKeys, apiUrl: "http://127.0.0.1:7073", sandboxUrl: "http://127.0.0.1:7072" });
    const kept = await client.createApiKey({});
    const revoked = await client.createApiKey({});
    assert.deepEqual((await client.revokeApiKey({ apiKey: revoked.apiKey })).revoked, true);
    assert.equal(await apiKeys.has(hashApiKey(revoked.apiKey)), false);
    assert.equal(await apiKeys.has(hashApiKey(kept.apiKey)), true);
    assert.deepEqual((await client.revokeApiKey({ apiKey: revoked.apiKey })).revoked, false);
  });

  it("refuses what is not a key, saying what one looks like", async () => {
    const client = clientOf({ apiKeys: new MemoryApiKeyStore(), apiUrl: "http://127.0.0.1:7073", sandboxUrl: "http://127.0.0.1:7072" });
    await assert.rejects(
      client.revokeApiKey({ apiKey: "e2b_XYZ" }).catch((error: unknown) => {
        throw fromConnectError(error);
      }),
      (error: unknown) => error instanceof ValidationError && /40 lower-case hex digits/.test(error.message),
    );
  });
});
