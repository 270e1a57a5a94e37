/**
 * The one error hierarchy of Fast Sandbox. Every layer throws these; each I/O edge
 * (Connect, containerd's gRPC, SQLite, Kubernetes) translates its own errors into them
 * in exactly one adapter, and the API edge translates them back into Connect codes.
 */

/** Stable, machine-readable error codes. They map one-to-one onto gRPC/Connect codes at the API edge. */
export type ErrorCode =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "conflict"
  | "no_capacity"
  | "unauthenticated"
  | "permission_denied"
  | "failed_precondition"
  | "unavailable"
  | "deadline_exceeded"
  | "internal";

export class FsbError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }

  /** Normalises anything thrown into an FsbError, keeping the original as `cause`. */
  static from(error: unknown): FsbError {
    if (error instanceof FsbError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new FsbError("internal", message, { cause: error });
  }
}

/** A request field is wrong. `field` is the path of the offending field, e.g. `spec.exposedPorts[0]`. */
export class ValidationError extends FsbError {
  readonly field: string;
  constructor(field: string, message: string) {
    super("invalid_argument", field ? `${field}: ${message}` : message);
    this.field = field;
  }
}

export class NotFoundError extends FsbError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("not_found", message, options);
  }
}

export class AlreadyExistsError extends FsbError {
  constructor(message: string) {
    super("already_exists", message);
  }
}

/** Optimistic concurrency failed: the object changed since it was read (resourceVersion mismatch). */
export class ConflictError extends FsbError {
  constructor(message: string) {
    super("conflict", message);
  }
}

/** No agent in the pool can take the sandbox right now (slots, ports or namespace). */
export class NoCapacityError extends FsbError {
  constructor(message: string) {
    super("no_capacity", message);
  }
}

export class UnauthenticatedError extends FsbError {
  constructor(message: string) {
    super("unauthenticated", message);
  }
}

/** The caller is known but may not do this (e.g. a registry refused access to a repository). */
export class PermissionDeniedError extends FsbError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("permission_denied", message, options);
  }
}

export class UnavailableError extends FsbError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("unavailable", message, options);
  }
}

/**
 * The server answered, but what it depends on (an agent's containerd) did not within the call's
 * deadline: the server itself is alive — a heartbeat that gets this must not replace it — and the
 * call may be tried again later.
 */
export class BusyError extends UnavailableError {}

/**
 * The server answered, but a service beyond it that the call needs is unavailable (an image's
 * registry): the server itself is fine, and another server of the same kind would most likely meet
 * the same — a create is not placed again on another agent for it.
 */
export class UpstreamUnavailableError extends UnavailableError {}

/**
 * Something did not finish within its deadline: a call's `requestTimeoutMs`, a command's `timeoutMs`, a
 * server's own wait. Whether the work itself stopped depends on the call (a command past its
 * `timeoutMs` is killed); the message says which deadline it was and how to change it.
 */
export class TimeoutError extends FsbError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("deadline_exceeded", message, options);
  }
}

export class FailedPreconditionError extends FsbError {
  constructor(message: string) {
    super("failed_precondition", message);
  }
}

/** A watch asked for a resourceVersion older than the store can replay (Kubernetes: 410 Gone); relist and watch again. */
export class ExpiredError extends FsbError {
  constructor(message: string) {
    super("failed_precondition", message);
  }
}
