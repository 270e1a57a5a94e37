/**
 * E2B's `Idempotency-Key` on sandbox creation (`POST /v2/sandboxes`; the legacy `POST /sandboxes`
 * takes it too): E2B's SDKs send it when `Sandbox.create` is given `idempotency_key` /
 * `idempotencyKey`, and send it again on their own retries (429, 502, 503, 504 without
 * `Should-Retry: false`), so that a create whose answer was lost is not made twice.
 *
 * A key maps onto the fast path's request id (sandbox-manager.ts): the sandbox's name is derived
 * from it, so a repeat finds the same sandbox on any control-plane replica, after a restart, or
 * while the first create still runs. Keys are scoped as request ids are, to the namespace of the
 * E2B API: its API keys are one team's (each sees, connects to and kills every sandbox of the
 * namespace), so the namespace is the team. The request id is the key behind a prefix of its own, so
 * that a fast-path client's request id never names an E2B create's sandbox.
 *
 * A repeat with the same body is answered with the same sandbox, id and access tokens alike; one
 * with another body (template, timeout, metadata, envs, internet access) is refused with 409 and
 * E2B's `error_code` `idempotency_request_mismatch`, the sandbox left as it is. A key is
 * remembered as long as the sandbox it made is: once that sandbox is killed (its record gone), the
 * key creates anew.
 */
import { createHash } from "node:crypto";
import { ConflictError, ValidationError } from "@fast-sandbox/api";
import type { NewSandboxRequest } from "./e2b-requests.js";

/** The header, as E2B's SDKs name it (HTTP header names are case-insensitive; Node gives them in lower case). */
export const IDEMPOTENCY_KEY_HEADER = "idempotency-key";
/** The longest key (E2B's SDKs' limit). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
/** What a key is made of (E2B's SDKs' check): lower-case letters, digits and hyphens. */
const KEY_PATTERN = /^[a-z0-9-]+$/;
/** Before the key in the request id: E2B creates' ids never meet the fast path's own. */
const REQUEST_ID_PREFIX = "e2b:";
/** The longest request id the fast path keeps (validation.ts: 253 characters). */
const MAX_REQUEST_ID_LENGTH = 253;
/**
 * The sha256 of the create's request (`requestFingerprint`) on a sandbox made with a key: a repeat
 * with another request is told so instead of being given this sandbox.
 */
export const CREATE_REQUEST_ANNOTATION = "e2b.sandbox.fast.io/create-request-sha256";
/** E2B's `error_code` of a key used again for a different request. */
export const IDEMPOTENCY_MISMATCH_CODE = "idempotency_request_mismatch";

/**
 * The `Idempotency-Key` header's key: undefined without the header; a ValidationError (400) for a
 * key E2B's SDKs would refuse themselves (1 to 255 lower-case letters, digits or hyphens). A header
 * sent twice reaches here joined with ", ", which no key holds.
 */
export function parseIdempotencyKey(value: string | string[] | undefined): string | undefined {
  if (value === undefined) return undefined;
  const key = Array.isArray(value) ? value.join(", ") : value;
  const field = "Idempotency-Key";
  if (key.length < 1 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    throw new ValidationError(field, `must be 1 to ${MAX_IDEMPOTENCY_KEY_LENGTH} characters (e.g. a lower-case UUID); got ${key.length}`);
  }
  if (!KEY_PATTERN.test(key)) {
    throw new ValidationError(
      field,
      `may hold only lower-case letters, digits and hyphens (e.g. a lower-case UUID); got ${JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}…` : key)}`,
    );
  }
  return key;
}

/**
 * The fast path's request id of a create with `key`: `e2b:<key>`, or `e2b:sha256:<hex>` when that
 * would be longer than a request id may be (no key holds a colon, so the two never meet).
 */
export function idempotencyRequestId(key: string): string {
  const plain = `${REQUEST_ID_PREFIX}${key}`;
  if (plain.length <= MAX_REQUEST_ID_LENGTH) return plain;
  return `${REQUEST_ID_PREFIX}sha256:${createHash("sha256").update(key, "utf8").digest("hex")}`;
}

function sortedEntries(map: Record<string, string>): [string, string][] {
  return Object.entries(map).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * What makes two creates the same request, hashed: the template, the timeout (the route's default
 * filled in), the metadata and envs whatever their order, and internet access. Not when it is sent:
 * a repeat's end is not its own, it is the sandbox's.
 */
export function requestFingerprint(request: NewSandboxRequest): string {
  const canonical = JSON.stringify([
    request.templateID,
    request.timeoutSeconds,
    sortedEntries(request.metadata),
    sortedEntries(request.envVars),
    request.allowInternetAccess ?? null,
  ]);
  return createHash("sha256").update(canonical, "utf8").digest("hex");
}

/** A key used again for another request (409, E2B's `idempotency_request_mismatch`): nothing was created or changed. */
export class IdempotencyMismatchError extends ConflictError {
  readonly e2bErrorCode = IDEMPOTENCY_MISMATCH_CODE;

  constructor(detail: string) {
    super(
      `Idempotency-Key was used before for a different create request (${detail}); ` +
        "a repeat must send the same template, timeout, metadata, envs and internet access, or use a new key for a new sandbox",
    );
  }
}
