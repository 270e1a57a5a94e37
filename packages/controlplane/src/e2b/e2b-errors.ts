/**
 * The E2B-compatible API's error edge: every FsbError becomes an HTTP status and E2B's error body
 * `{"code": <status>, "message": "…"}`. E2B's JS SDK branches on the body's `code` (404: not found,
 * 409: conflict), its Python SDK on the status, so both carry the same number.
 */
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
}

export interface E2bError {
  status: number;
  body: E2bErrorBody;
}

/** The status and body of anything thrown. */
export function e2bErrorOf(error: unknown): E2bError {
  const fsb = FsbError.from(error);
  const status = STATUS_OF[fsb.code];
  return { status, body: { code: status, message: fsb.message } };
}

/** The body of an answer the server gives itself (no route, a body too large). */
export function e2bError(status: number, message: string): E2bError {
  return { status, body: { code: status, message } };
}
