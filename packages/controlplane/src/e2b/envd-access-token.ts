/**
 * The access token of a sandbox created through the E2B-compatible API (E2B's `envdAccessToken`,
 * which its SDKs send as `X-Access-Token` through the sandbox proxy). E2B hands the same token to
 * every `connect` of a sandbox, while Fast Sandbox keeps only a token's hash in the record; so the
 * token is not random but derived: HMAC-SHA256 of a nonce (an annotation of the sandbox, not secret)
 * under a secret of the control plane (embedded: a file of the data directory, mode 0600; Kubernetes:
 * a Secret every replica reads, kubernetes-token-secret.ts). `connect` derives
 * it again and checks it against `status.accessTokenHash`. `fsb token NAME` replaces it with a
 * random one, which E2B clients then cannot be given.
 */
import { createHmac, randomBytes } from "node:crypto";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { FailedPreconditionError } from "@fast-sandbox/api";

/** The file name of the secret in the data directory. */
export const TOKEN_SECRET_FILE = "e2b-token-secret";
const SECRET_BYTES = 32;

/** The secret at `path` (64 hex digits), made (mode 0600) when the file does not exist. */
export function loadOrCreateTokenSecret(path: string): Buffer {
  if (!existsSync(path)) writeFileSync(path, `${randomBytes(SECRET_BYTES).toString("hex")}\n`, { mode: 0o600, flag: "wx" });
  chmodSync(path, 0o600);
  const text = readFileSync(path, "utf8").trim();
  if (!/^[0-9a-f]{64}$/.test(text)) {
    throw new FailedPreconditionError(`${path} does not hold a secret of 64 hex digits; remove it to make a new one (E2B clients then need to connect again)`);
  }
  return Buffer.from(text, "hex");
}

/** A new nonce for a sandbox's token: 16 random bytes, base64url. */
export function newTokenNonce(): string {
  return randomBytes(16).toString("base64url");
}

/**
 * E2B's `trafficAccessToken` of the sandbox: what reaches its own ports through the sandbox proxy
 * (`E2B-Traffic-Access-Token`), never its daemon's (49983: commands, files), so that it can be handed
 * to the clients of a service the sandbox runs, as E2B's documentation has users do. Derived from the
 * nonce and the hash of the sandbox's current access token, so the proxy derives it from the record
 * alone, and a new access token (`fsb token NAME`) makes a new one.
 */
export function e2bTrafficAccessToken(secret: Buffer, nonce: string, accessTokenHash: string): string {
  return createHmac("sha256", secret).update(`fast-sandbox e2b traffic access token\0${nonce}\0${accessTokenHash}`, "utf8").digest("base64url");
}

/** The token of the sandbox whose nonce is `nonce`: 43 base64url characters, like the fast path's tokens. */
export function envdAccessToken(secret: Buffer, nonce: string): string {
  return createHmac("sha256", secret).update(`fast-sandbox e2b envd access token\0${nonce}`, "utf8").digest("base64url");
}
