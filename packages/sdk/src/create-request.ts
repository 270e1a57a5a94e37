/**
 * @internal Creates that survive a lost answer. CreateSandbox makes a sandbox even when its answer
 * never reaches the caller (the client's deadline passed, the connection broke): a plain retry would
 * make a second one and leave the first behind. Every create therefore carries a request id (the
 * caller's, else a new one), which the control plane dedupes by — a retry with the same id answers
 * with the sandbox the first attempt made (and a new access token; sandbox-manager.ts, and a name
 * derived from the id when none is given) — and is tried once more, with that id, when its answer was lost.
 */
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { ERROR_CODE_HEADER } from "@fast-sandbox/api/core";

/**
 * Calls `attempt` with `requestId` (else a new id), and a second time with the same id when the
 * first attempt's answer was lost; not after the caller's signal aborted.
 */
export async function createWithRequestId<T>(
  requestId: string | undefined,
  signal: AbortSignal | undefined,
  attempt: (requestId: string) => Promise<T>,
): Promise<T> {
  const id = requestId || randomUUID();
  try {
    return await attempt(id);
  } catch (error) {
    if (signal?.aborted || !answerLost(error)) throw error;
    return attempt(id);
  }
}

/**
 * Whether a call failed without the control plane's answer, so it may have done its work: the
 * client's deadline, or a transport failure. The control plane's own errors carry its code in a
 * header (`toConnectError`); these do not.
 */
function answerLost(error: unknown): boolean {
  return (
    error instanceof ConnectError &&
    !error.metadata.has(ERROR_CODE_HEADER) &&
    (error.code === Code.DeadlineExceeded || error.code === Code.Unavailable || error.code === Code.Aborted)
  );
}
