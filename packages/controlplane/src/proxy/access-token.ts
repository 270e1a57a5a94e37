/**
 * A sandbox's access token: what a client sends in `X-Access-Token` to reach the sandbox through the
 * sandbox proxy. The control plane hands it out once (create, rotation) and keeps only its hash in
 * `status.accessTokenHash` (`sha256:<hex>`): a leaked record or backup grants nothing. A hash of a
 * 256-bit random token needs no salt or slow function: there is nothing to guess.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
const HASH_PREFIX = "sha256:";

/** A new random token: 32 bytes, base64url (43 characters), e.g. for `curl -H "X-Access-Token: …"`. */
export function newAccessToken(): string {
  return randomBytes(32).toString("base64url");
}

/** What the record keeps of a token: `sha256:<64 hex>`. */
export function hashAccessToken(token: string): string {
  return `${HASH_PREFIX}${createHash("sha256").update(token, "utf8").digest("hex")}`;
}

/** Whether two tokens are the same, in constant time; false when either is missing. */
export function tokensEqual(given: string | undefined, expected: string | undefined): boolean {
  if (!given || !expected) return false;
  const digest = (token: string) => createHash("sha256").update(token, "utf8").digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/** Whether `token` is the one whose hash is `hash`, in constant time; false when either is missing. */
export function accessTokenMatches(token: string | undefined, hash: string | undefined): boolean {
  if (!token || !hash?.startsWith(HASH_PREFIX)) return false;
  const expected = Buffer.from(hash.slice(HASH_PREFIX.length), "hex");
  const actual = createHash("sha256").update(token, "utf8").digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}
