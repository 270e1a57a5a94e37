/**
 * The API edge: FsbError ⇄ ConnectError. Servers translate on the way out, clients on the way in,
 * so code on both sides only ever sees FsbError subclasses.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AlreadyExistsError,
  BusyError,
  ConflictError,
  ExpiredError,
  FailedPreconditionError,
  FsbError,
  NoCapacityError,
  NotFoundError,
  PermissionDeniedError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
  UpstreamUnavailableError,
  ValidationError,
  type ErrorCode,
} from "../errors.js";

const CODE_TO_CONNECT: Record<ErrorCode, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  conflict: Code.Aborted,
  no_capacity: Code.ResourceExhausted,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  failed_precondition: Code.FailedPrecondition,
  unavailable: Code.Unavailable,
  deadline_exceeded: Code.DeadlineExceeded,
  internal: Code.Internal,
};

/** Header carrying the stable Fast Sandbox error code (and the field of a validation error). */
export const ERROR_CODE_HEADER = "fsb-error-code";
const ERROR_CODE_KEY = ERROR_CODE_HEADER;
/** URI-encoded: a field path may contain any character of a label key, and header values are bytes. */
const ERROR_FIELD_KEY = "fsb-error-field";
/** Distinguishes subclasses that share a code (ExpiredError is a failed_precondition a watcher must answer by relisting). */
const ERROR_REASON_KEY = "fsb-error-reason";
const EXPIRED_REASON = "expired";
const BUSY_REASON = "busy";
const UPSTREAM_REASON = "upstream";

export function toConnectError(error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  const fsb = FsbError.from(error);
  const metadata = new Headers({ [ERROR_CODE_KEY]: fsb.code });
  if (fsb instanceof ValidationError) metadata.set(ERROR_FIELD_KEY, encodeURIComponent(fsb.field));
  if (fsb instanceof ExpiredError) metadata.set(ERROR_REASON_KEY, EXPIRED_REASON);
  if (fsb instanceof BusyError) metadata.set(ERROR_REASON_KEY, BUSY_REASON);
  if (fsb instanceof UpstreamUnavailableError) metadata.set(ERROR_REASON_KEY, UPSTREAM_REASON);
  return new ConnectError(fsb.message, CODE_TO_CONNECT[fsb.code], metadata, undefined, fsb);
}

export function fromConnectError(error: unknown): FsbError {
  if (error instanceof FsbError) return error;
  const connect = ConnectError.from(error);
  const message = connect.rawMessage;
  const code = (connect.metadata.get(ERROR_CODE_KEY) ?? "") as ErrorCode | "";
  // Aborted without a Fast Sandbox code is the transport's (a connection reset mid-call), not a
  // server's conflict: the peer went away.
  if (!code && connect.code === Code.Aborted) return new UnavailableError(`the connection was lost: ${message}`, { cause: connect });
  switch (code || connectCodeToErrorCode(connect.code)) {
    case "invalid_argument": {
      const field = decodeField(connect.metadata.get(ERROR_FIELD_KEY));
      // ValidationError prefixes its message with the field; strip exactly that prefix so it is not doubled.
      return new ValidationError(field, field && message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message);
    }
    case "not_found":
      return new NotFoundError(message);
    case "already_exists":
      return new AlreadyExistsError(message);
    case "conflict":
      return new ConflictError(message);
    case "no_capacity":
      return new NoCapacityError(message);
    case "unauthenticated":
      return new UnauthenticatedError(message);
    case "permission_denied":
      return new PermissionDeniedError(message);
    case "failed_precondition":
      if (connect.metadata.get(ERROR_REASON_KEY) === EXPIRED_REASON) return new ExpiredError(message);
      return new FailedPreconditionError(message);
    case "unavailable":
      if (connect.metadata.get(ERROR_REASON_KEY) === BUSY_REASON) return new BusyError(message, { cause: connect });
      if (connect.metadata.get(ERROR_REASON_KEY) === UPSTREAM_REASON) return new UpstreamUnavailableError(message, { cause: connect });
      return new UnavailableError(message, { cause: connect });
    case "deadline_exceeded":
      return new TimeoutError(message, { cause: connect });
    default:
      return new FsbError(code || connectCodeToErrorCode(connect.code), message, { cause: connect });
  }
}

function decodeField(header: string | null): string {
  if (!header) return "";
  try {
    return decodeURIComponent(header);
  } catch {
    return header;
  }
}

function connectCodeToErrorCode(code: Code): ErrorCode {
  for (const [key, value] of Object.entries(CODE_TO_CONNECT)) if (value === code) return key as ErrorCode;
  return "internal";
}
