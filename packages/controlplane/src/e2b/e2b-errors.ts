/**
 * The E2B-compatible API's error edge: every FsbError becomes an HTTP status and E2B's error body
 * `{"code": <status>, "message": "…"}`. E2B's JS SDK branches on the body's `code` (404: not found,
 * 409: conflict), its Python SDK on the status, so both carry the same number. An error that has
 * one of E2B's machine-readable codes (`e2bErrorCode`, e.g. idempotency_request_mismatch) adds it as
 * E2B's `error_code`.
 */
import { randomBytes } from "node:crypto";
import { FsbError, type ErrorCode } from "@fast-sandbox/api";

const STATUS_OF: Record<ErrorCode, number> = {
  invalid_argument: 400,
  not_found: 404,
  already_exists: 409,
  conflict: 409,
  // E2B answers 429 when a team has as many sandboxes as it may run.
  no_capacity: 429,
  unauthenticated: 401,
  permission_denied: 403,
  failed_precondition: 400,
  unavailable: 503,
  deadline_exceeded: 504,
  internal: 500,
};

export interface E2bErrorBody {
  code: number;
  message: string;
  /** E2B's semantic error code, when the error has one (E2B's `Error.error_code`). */
  error_code?: string;
}

export interface E2bError {
  status: number;
  body: E2bErrorBody;
  /** Headers the answer carries besides the body (`Retry-After`). */
  headers?: Record<string, string>;
}

/**
 * A limit spent (429) that passes by itself: the answer says in `Retry-After` when a try may succeed.
 * Not a pool at its capacity, which no wait is sure to end.
 */
export class RateLimitedError extends FsbError {
  readonly retryAfterSeconds: number;

  constructor(message: string, retryAfterSeconds: number) {
    super("no_capacity", message);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** An id that ties an internal error's answer to its line in the control plane's log. */
export function newRequestId(): string {
  return randomBytes(8).toString("hex");
}

/**
 * The status and body of anything thrown. An internal error (500: a bug, or a failure nothing
 * expected) is told only as such, with `requestId` when given: its message is about the control
 * plane's insides (file paths, records, SQL), which are none of the client's business, so the
 * caller logs the error whole under that id.
 */
export function e2bErrorOf(error: unknown, requestId?: string): E2bError {
  const fsb = FsbError.from(error);
  const status = STATUS_OF[fsb.code];
  const message = fsb.code === "internal" ? `internal error (see the control plane's log${requestId ? `, request ${requestId}` : ""})` : fsb.message;
  const errorCode = (fsb as { e2bErrorCode?: unknown }).e2bErrorCode;
  return {
    status,
    body: { code: status, message, ...(typeof errorCode === "string" ? { error_code: errorCode } : {}) },
    ...(fsb instanceof RateLimitedError ? { headers: { "retry-after": String(fsb.retryAfterSeconds) } } : {}),
  };
}

/** The body of an answer the server gives itself (no route, a body too large). */
export function e2bError(status: number, message: string): E2bError {
  return { status, body: { code: status, message } };
}
