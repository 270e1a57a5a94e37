/**
 * The SDK's errors: the one hierarchy of `@fast-sandbox/api` (`FsbError` and its subclasses, which
 * the SDK re-exports), plus `CommandExitError`, which only the SDK throws. Failures of calls are
 * translated into them at one edge per protocol: `callError` for Connect calls (the control plane's
 * and the daemon's), `httpError` for the daemon's plain-HTTP answers (`/files`, `/health`).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import {
  ERROR_CODE_HEADER,
  FailedPreconditionError,
  FsbError,
  NotFoundError,
  PermissionDeniedError,
  TimeoutError,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
  fromConnectError,
} from "@fast-sandbox/api/core";

/** What a finished command left: its exit code and everything it printed. */
export interface CommandResult {
  /** 0 for success; -1 when it did not exit by itself (killed by a signal, see `error`). */
  exitCode: number;
  stdout: string;
  stderr: string;
  /** Why it ended when it did not exit by itself, e.g. `signal: killed`. */
  error?: string;
}

/**
 * A command ended with an exit code other than 0, or was killed: `commands.run()` and
 * `CommandHandle.wait()` reject with it. It carries the result (`exitCode`, `stdout`, `stderr`), so
 * a caller that expects failures reads them from the error. Code `failed_precondition`: the command
 * ran, and its outcome is what the caller relied on.
 */
export class CommandExitError extends FsbError implements CommandResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly error?: string;

  constructor(result: CommandResult, command = "the command") {
    const how = result.exitCode === -1 && result.error ? `was stopped (${result.error})` : `exited with code ${result.exitCode}`;
    const lastLine = result.stderr.trimEnd().split("\n").at(-1) ?? "";
    super("failed_precondition", `${command} ${how}${lastLine ? `: ${truncate(lastLine, 200)}` : ""}`);
    this.exitCode = result.exitCode;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
    if (result.error !== undefined) this.error = result.error;
  }
}

function truncate(text: string, length: number): string {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

/** How to explain a failed call. */
export interface CallContext {
  /** What was asked, for messages: e.g. `GetSandbox sb-1`, `reading /etc/hosts in sandbox sb-1`. */
  what: string;
  /** The caller's signal: when it aborted, the call rejects with its reason, untranslated. */
  signal?: AbortSignal | undefined;
  /** The deadline the call had, and the option that set it, for a timeout's message. */
  timeoutMs?: number | undefined;
  timeoutOption?: string;
}

/** The reason of an aborted signal, as an Error (what `fetch` and Node's APIs reject with). */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new DOMException(typeof reason === "string" ? reason : "This operation was aborted", "AbortError");
}

/**
 * The one translation of a failed Connect call (control plane or daemon) into the error hierarchy:
 * the caller's own abort stays its abort; a missed deadline becomes a TimeoutError naming the option
 * to change; everything else is mapped by its code (`fromConnectError`).
 */
export function callError(error: unknown, context: CallContext): Error {
  if (context.signal?.aborted) return abortReason(context.signal);
  // Canceled that is not the caller's: the other end (the server, a proxy in between) gave up on the
  // call, which was cut short as by a lost connection — not a fault of the server's ("internal").
  if (error instanceof ConnectError && error.code === Code.Canceled && !error.metadata.has(ERROR_CODE_HEADER)) {
    return new UnavailableError(`${context.what}: the call was cancelled before it finished: ${error.rawMessage}`, { cause: error });
  }
  const translated = fromConnectError(error);
  if (translated.code === "deadline_exceeded" && context.timeoutMs !== undefined && context.timeoutMs > 0 && isClientDeadline(error)) {
    const option = context.timeoutOption ?? "requestTimeoutMs";
    return new TimeoutError(`${context.what} did not finish within ${context.timeoutMs} ms (${option}); pass a larger ${option}, or 0 for no limit`, {
      cause: error,
    });
  }
  return translated;
}

/** A deadline Connect enforced itself (or the server's answer to its Connect-Timeout-Ms), not a server's own timeout message. */
function isClientDeadline(error: unknown): boolean {
  return error instanceof ConnectError && !error.metadata.has(ERROR_CODE_HEADER);
}

/** The errors that are the sandbox proxy's "the instance is gone", not a daemon's own not-found (a missing file or process). */
const goneErrors = new WeakSet<Error>();

/** Whether the error says the sandbox proxy does not know the handle's instance (deleted, expired, or replaced: `replacedError`). */
export function isSandboxGone(error: unknown): boolean {
  return error instanceof Error && goneErrors.has(error);
}

/** The sandbox proxy's 502 for an instance id it does not know: the sandbox was deleted or expired. */
function goneError(detail: string, sandbox: string): NotFoundError {
  const error = new NotFoundError(`${detail} (sandbox ${sandbox} is gone: deleted or expired)`);
  goneErrors.add(error);
  return error;
}

/**
 * The proxy's "gone" for a handle whose sandbox lives on as another instance (`fsb reset`, an
 * AutoRecreate), as one look-up by name found: the handle does not move to it by itself, since
 * nothing of the old instance (its files, its processes) is there. Still a NotFoundError, and
 * "gone" (`isSandboxGone`).
 */
export function replacedError(
  what: string,
  change: { sandbox: string; oldId: string; newId: string; refresh: string; connect: string },
  cause: Error,
): NotFoundError {
  const error = new NotFoundError(
    `${what}: sandbox ${change.sandbox} was reset or replaced: its instance ${change.oldId}, which this handle calls, is gone, and it runs as ${change.newId} now ` +
      `(new files and processes; nothing was done there). ${change.refresh} moves this handle to the new instance, or ${change.connect} gives a handle of it`,
    { cause },
  );
  goneErrors.add(error);
  return error;
}

/** The sandbox proxy's 409: the sandbox is paused (a gVisor checkpoint), and nothing of it runs to answer. */
function pausedError(detail: string, sandbox: string): FailedPreconditionError {
  return new FailedPreconditionError(`${detail} (sandbox ${sandbox} is paused: resume it first — 'fsb resume', or a connect through the E2B API)`);
}

/**
 * The daemon's plain-HTTP failures (`GET|POST /files`, `GET /health`) and the sandbox proxy's own
 * answers in front of it: `{"message", "code"}` bodies with the HTTP status.
 */
export async function httpError(response: Response, context: { what: string; sandbox: string }): Promise<FsbError> {
  const text = await response.text().catch(() => "");
  let message = text.trim();
  try {
    const body = JSON.parse(text) as { message?: unknown };
    if (typeof body.message === "string") message = body.message;
  } catch {
    // Not JSON: the text itself (or nothing) is the message.
  }
  const detail = `${context.what}: ${message || `HTTP ${response.status}`}`;
  // The proxy's own code beside E2B's body (a daemon never sends one).
  if (response.headers.get(ERROR_CODE_HEADER) === "not_found") return goneError(detail, context.sandbox);
  switch (response.status) {
    case 400:
      return new ValidationError("path", detail);
    case 401:
      return new UnauthenticatedError(
        `${detail} (the sandbox proxy refused the access token of sandbox ${context.sandbox}, or the daemon the user; after a rotation only the new token works)`,
      );
    case 403:
      return new PermissionDeniedError(detail);
    case 404:
      return new NotFoundError(detail);
    case 409:
      return pausedError(detail, context.sandbox);
    case 413:
      return new ValidationError("data", detail);
    case 502:
    case 503:
    case 504:
      return new UnavailableError(
        `${detail} (sandbox ${context.sandbox} is not reachable through the sandbox proxy: it may have been deleted, have expired, or not run yet)`,
      );
    case 507:
      return new FsbError("no_capacity", detail);
    default:
      return new FsbError("internal", message ? `${detail} (HTTP ${response.status})` : detail);
  }
}

/**
 * `callError` for calls to a sandbox's daemon, which go through the sandbox proxy: messages start
 * with what was asked of which sandbox, and a proxy that cannot reach the sandbox (502, 503) or a
 * refused access token get messages that say why.
 */
export function daemonCallError(error: unknown, context: CallContext & { sandbox: string }): Error {
  const translated = callError(error, context);
  if (!(translated instanceof FsbError) || translated instanceof TimeoutError) return translated;
  // The proxy's refusals carry its own code in a header (the daemon sends none), which Connect keeps
  // even where it reads no body (a stream's "HTTP 502"); a proxy without it is known by its 409.
  const proxyCode = error instanceof ConnectError ? error.metadata.get(ERROR_CODE_HEADER) : null;
  if (proxyCode === "not_found") return goneError(`${context.what}: ${translated.message}`, context.sandbox);
  if (proxyCode === "failed_precondition" || /\bHTTP 409\b/.test(translated.message)) {
    return pausedError(`${context.what}: ${translated.message}`, context.sandbox);
  }
  if (translated instanceof UnavailableError) {
    return new UnavailableError(
      `${context.what}: ${translated.message} (sandbox ${context.sandbox} is not reachable through the sandbox proxy: it may have been deleted, have expired, or not run yet)`,
      { cause: error },
    );
  }
  if (translated instanceof UnauthenticatedError) {
    return new UnauthenticatedError(
      `${context.what}: ${translated.message} (the sandbox proxy refused the access token of sandbox ${context.sandbox}, or the daemon the user; after a rotation only the new token works)`,
    );
  }
  // The daemon's own message (e.g. "open /x: no such file or directory") after what was asked; the class stays.
  if (!translated.message.startsWith(context.what)) translated.message = `${context.what}: ${translated.message}`;
  return translated;
}

/**
 * A plain-HTTP request to the daemon that got no answer: the caller's abort, the deadline
 * (`timedOut`), or the network between the SDK and the sandbox proxy.
 */
export function fetchError(error: unknown, context: { what: string; signal?: AbortSignal | undefined; timedOut: boolean; timeoutMs: number }): Error {
  if (error instanceof FsbError) return error;
  if (context.signal?.aborted) return abortReason(context.signal);
  if (context.timedOut) {
    return new TimeoutError(
      `${context.what} did not finish within ${context.timeoutMs} ms (requestTimeoutMs); pass a larger requestTimeoutMs, or 0 for no limit`,
      {
        cause: error,
      },
    );
  }
  const cause = error instanceof Error && error.cause instanceof Error ? error.cause : error;
  return new UnavailableError(`${context.what}: ${cause instanceof Error ? cause.message : String(cause)} (the sandbox proxy could not be reached)`, {
    cause: error,
  });
}
