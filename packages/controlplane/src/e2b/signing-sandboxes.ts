/**
 * The sandboxes the E2B-compatible API created, with their access tokens derived again (their
 * nonce annotation under the control plane's secret): what the sandbox proxy checks E2B's presigned
 * file URLs against (proxy/signed-file-url.ts), since those URLs name no sandbox; and which sandboxes
 * are E2B's, whose every port the proxy reaches.
 */
import type { Sandbox } from "@fast-sandbox/api";
import { envdAccessToken } from "./envd-access-token.js";
import { TOKEN_NONCE_ANNOTATION } from "./e2b-sandbox-view.js";

export function* signingSandboxes(sandboxes: Iterable<Sandbox>, secret: Buffer): Generator<{ sandbox: Sandbox; token: string }> {
  for (const sandbox of sandboxes) {
    const nonce = sandbox.metadata.annotations?.[TOKEN_NONCE_ANNOTATION];
    if (nonce) yield { sandbox, token: envdAccessToken(secret, nonce) };
  }
}

/** Whether the E2B-compatible API created the sandbox (E2B's sandboxes reach every port through the proxy). */
export function createdThroughE2b(sandbox: Sandbox): boolean {
  return Boolean(sandbox.metadata.annotations?.[TOKEN_NONCE_ANNOTATION]);
}
