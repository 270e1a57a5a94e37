/**
 * The fast-path side of the E2B-compatible API: issuing its API keys (`fsb e2b env`) and revoking
 * them (`fsb e2b revoke`). A key is returned once, with the URLs E2B's SDKs need; the control plane
 * keeps only its hash.
 */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { FailedPreconditionError, ValidationError, pb } from "@fast-sandbox/api";
import { systemClock, type Clock } from "../controller/clock.js";
import { hashApiKey, isWellFormedApiKey, newApiKey } from "../e2b/api-key.js";
import type { ApiKeyStore } from "../e2b/api-key-store.js";
import { edge } from "./sandbox-service.js";

/** Where the E2B-compatible API is served and where its keys are kept. */
export interface E2bApiAccess {
  apiKeys: ApiKeyStore;
  /** E2B_API_URL: the E2B-compatible API, e.g. http://127.0.0.1:7073. */
  apiUrl: string;
  /** E2B_SANDBOX_URL: the sandbox proxy, e.g. http://127.0.0.1:7072. */
  sandboxUrl: string;
}

/** `access` undefined: this control plane does not serve the E2B-compatible API (a controller with FSB_E2B_LISTEN=off). */
export function createE2bService(access: E2bApiAccess | undefined, clock: Clock = systemClock): ServiceImpl<typeof pb.E2bService> {
  const served = (): E2bApiAccess => {
    if (!access) {
      throw new FailedPreconditionError(
        "this control plane does not serve the E2B-compatible API: its controller runs with FSB_E2B_LISTEN=off; set it to host:port (e.g. 0.0.0.0:7073) to serve it",
      );
    }
    return access;
  };
  return {
    createApiKey: () =>
      edge(async () => {
        const { apiKeys, apiUrl, sandboxUrl } = served();
        const apiKey = newApiKey();
        await apiKeys.add(hashApiKey(apiKey), clock.now());
        return create(pb.CreateApiKeyResponseSchema, { apiKey, apiUrl, sandboxUrl });
      }),
    revokeApiKey: (request) =>
      edge(async () => {
        const { apiKeys } = served();
        if (!isWellFormedApiKey(request.apiKey)) {
          throw new ValidationError("api_key", "is not an E2B API key as `fsb e2b env` issues them: e2b_ followed by 40 lower-case hex digits");
        }
        return create(pb.RevokeApiKeyResponseSchema, { revoked: await apiKeys.remove(hashApiKey(request.apiKey)) });
      }),
  };
}
