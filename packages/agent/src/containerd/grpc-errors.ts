/**
 * The one place where containerd's gRPC status codes become Fast Sandbox errors.
 * Everything above the client sees only FsbError subclasses.
 */
import { status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";
import { AlreadyExistsError, FailedPreconditionError, FsbError, NotFoundError, UnavailableError } from "@fast-sandbox/api/core";

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as Partial<ServiceError>).code === "number" && "metadata" in error;
}

/**
 * Translates a grpc-js error from a containerd call into an FsbError.
 * @param operation the containerd method, e.g. `containerd.services.tasks.v1.Tasks/Create`, for the message.
 */
export function translateGrpcError(error: unknown, operation: string): FsbError {
  if (error instanceof FsbError) return error;
  if (!isServiceError(error)) return FsbError.from(error);
  const message = `containerd ${operation}: ${error.details || error.message}`;
  switch (error.code) {
    case GrpcStatus.NOT_FOUND:
      return new NotFoundError(message, { cause: error });
    case GrpcStatus.ALREADY_EXISTS: {
      const translated = new AlreadyExistsError(message);
      return Object.assign(translated, { cause: error });
    }
    case GrpcStatus.FAILED_PRECONDITION: {
      const translated = new FailedPreconditionError(message);
      return Object.assign(translated, { cause: error });
    }
    case GrpcStatus.UNAVAILABLE:
      return new UnavailableError(`${message} (is containerd running and is its socket reachable?)`, { cause: error });
    case GrpcStatus.DEADLINE_EXCEEDED:
      return new FsbError("deadline_exceeded", message, { cause: error });
    case GrpcStatus.INVALID_ARGUMENT:
      return new FsbError("invalid_argument", message, { cause: error });
    case GrpcStatus.PERMISSION_DENIED:
      return new FsbError("permission_denied", message, { cause: error });
    case GrpcStatus.UNAUTHENTICATED:
      return new FsbError("unauthenticated", message, { cause: error });
    default:
      // containerd forwards a shim's expired context as UNKNOWN "context deadline exceeded".
      if (/context deadline exceeded/.test(message)) return new FsbError("deadline_exceeded", message, { cause: error });
      return new FsbError("internal", message, { cause: error });
  }
}

/** True for an error that means "that object is already gone": the idempotent paths ignore it. */
export function isNotFound(error: unknown): boolean {
  return error instanceof NotFoundError;
}

/** True for an error containerd may not give again: it is away (restarting, its socket gone) or answered too late. */
export function isTransient(error: unknown): boolean {
  return error instanceof UnavailableError || (error instanceof FsbError && error.code === "deadline_exceeded");
}
