/**
 * @internal Creates that survive a lost answer. CreateSandbox makes a sandbox even when its answer
 * never reaches the caller (the client's deadline passed, the connection broke): a plain retry would
 * make a second one and leave the first behind. Every create therefore carries a request id (the
 * caller's, else a new one), which the control plane dedupes by — a retry with the same id answers
 * with the sandbox the first attempt made (and a new access token; sandbox-manager.ts, and a name
 * derived from the id when none is given) — and is tried once more, with that id, when its answer was lost.
 */
import { randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type CallOptions, type Client } from "@connectrpc/connect";
import { ACCESS_TOKEN_RESPONSE_HEADER, ERROR_CODE_HEADER, type pb } from "@fast-sandbox/api/core";

/**
 * CreateSandbox with `request`'s request id (else a new one), tried once more when its answer was
 * lost (`createWithRequestId`): the sandbox, and the access token the control plane gave it.
 */
export async function createSandboxWithRequestId(
  client: Client<typeof pb.SandboxService>,
  request: MessageInitShape<typeof pb.CreateSandboxRequestSchema>,
  call: CallOptions,
): Promise<{ message: pb.Sandbox; accessToken: string }> {
  let accessToken = "";
  const message = await createWithRequestId(request.requestId, call.signal, (requestId) =>
    client.createSandbox({ ...request, requestId }, { ...call, onHeader: (headers) => (accessToken = headers.get(ACCESS_TOKEN_RESPONSE_HEADER) ?? "") }),
  );
  return { message, accessToken };
}

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
