/**
 * E2B API keys: what E2B's SDKs send as `X-API-KEY` to the E2B-compatible control API. They have
 * E2B's own shape, `e2b_` and 40 lower-case hex digits, because recent SDKs refuse any other key
 * before sending a request (`^e2b_[0-9a-f]+$`, unless E2B_VALIDATE_API_KEY=false). The control plane
 * hands a key out once and keeps only its sha256 (`ApiKeyStore`): 160 random bits need no salt or
 * slow hash, there is nothing to guess.
 */
import { createHash, randomBytes } from "node:crypto";

export const API_KEY_PREFIX = "e2b_";
/** `e2b_` and 40 lower-case hex digits (20 random bytes). */
export const API_KEY_PATTERN = /^e2b_[0-9a-f]{40}$/;
const HASH_PREFIX = "sha256:";

/** A new random key, e.g. `e2b_3f9c…` (44 characters). */
export function newApiKey(): string {
  return `${API_KEY_PREFIX}${randomBytes(20).toString("hex")}`;
}

/** Whether `value` has the shape of a key this control plane issues. */
export function isWellFormedApiKey(value: string): boolean {
  return API_KEY_PATTERN.test(value);
}

/** What the store keeps of a key: `sha256:<64 hex>`. */
export function hashApiKey(key: string): string {
  return `${HASH_PREFIX}${createHash("sha256").update(key, "utf8").digest("hex")}`;
}
