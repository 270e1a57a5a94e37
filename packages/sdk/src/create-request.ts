/**
 * @internal Creates that survive a lost answer. CreateSandbox makes a sandbox even when its answer
 * never reaches the caller (the client's deadline passed, the connection broke): a plain retry would
 * make a second one and leave the first behind. Every create therefore carries a request id (the
 * caller's, else a new one), which the control plane dedupes by — a retry with the same id answers
 * with the sandbox the first attempt made (and a new access token; sandbox-manager.ts, and a name
 * derived from the id when none is given) — and is tried once more, with that id, when its answer was lost.
 */
import { createHash, randomUUID } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type CallOptions, type Client } from "@connectrpc/connect";
import { ACCESS_TOKEN_RESPONSE_HEADER, ERROR_CODE_HEADER, FsbError, fromConnectError, type pb } from "@fast-sandbox/api/core";
import { callError, type CallContext } from "./errors.js";

/**
 * The name the control plane gives a sandbox created with `requestId` and no name: derived from the
 * id (`requestName` in the control plane's sandbox-manager.ts, which this must match), so a create
 * whose answer was lost can still be found, and deleted, by it.
 */
export function requestSandboxName(namespace: string, requestId: string): string {
  return `sb-${createHash("sha256")
    .update(`${namespace || "default"}/${requestId}`)
    .digest("hex")
    .slice(0, 10)}`;
}

/** The request id a create sends (the caller's, else a new one) and the name its sandbox gets. */
export function createRequestIdentity(namespace: string, name: string, requestId: string | undefined): { requestId: string; name: string } {
  const id = requestId || randomUUID();
  return { requestId: id, name: name || requestSandboxName(namespace, id) };
}

/**
 * A failed create's error (`callError`), which — when the answer never came (the deadline, a broken
 * connection, on both attempts) — says that the sandbox may be made all the same, later, and names
 * it and the request id: such a sandbox runs until deleted, and the caller was never told its name.
 * The caller's own abort stays its abort (`callError`): a create it named, or gave a request id, it
 * can find (`requestSandboxName` tells the name); one it did not is undone (`undoAbandonedCreate`).
 */
export function createError(error: unknown, context: CallContext, request: { namespace: string; name: string; requestId: string }): Error {
  const translated = callError(error, context);
  if (context.signal?.aborted || !answerLost(error) || !(translated instanceof FsbError)) return translated;
  const sandbox = `${request.namespace || "default"}/${request.name}`;
  translated.message +=
    `; the sandbox may still be made, as ${sandbox} (request id ${request.requestId}): ` +
    `a create with that request id answers with it, and deleting ${sandbox} removes it`;
  return translated;
}

/** How long after an abandoned create's first delete found nothing it is deleted once more (`undoAbandonedCreate`). */
export const ABANDONED_CREATE_RECHECK_MS = 1000;

/**
 * Undoes, in the background, a create its caller aborted without a name or a request id of its own:
 * the control plane may still make the sandbox, which the caller could neither find nor delete (its
 * name comes from a request id only this SDK knew). It is deleted by that name now, and once more a
 * moment later when the first delete found nothing (the create may not have reached the control
 * plane's store yet). Best effort: nothing is thrown, and the process is not kept alive for it.
 */
export function undoAbandonedCreate(remove: (name: string) => Promise<unknown>, name: string, recheckMs = ABANDONED_CREATE_RECHECK_MS): Promise<void> {
  return (async () => {
    for (const wait of [0, recheckMs]) {
      if (wait > 0) await new Promise<void>((resolve) => setTimeout(resolve, wait).unref());
      try {
        await remove(name);
        return;
      } catch (error) {
        if (fromConnectError(error).code !== "not_found") return;
      }
    }
  })();
}

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
 * client's deadline, or a transport failure — a reset (aborted) or a stream the other end gave up
 * on (canceled: a control plane or proxy going away; the caller's own abort is ruled out before).
 * The control plane's own errors carry its code in a header (`toConnectError`); these do not. The
 * Python SDK retries the same codes (errors.py).
 */
function answerLost(error: unknown): boolean {
  return (
    error instanceof ConnectError &&
    !error.metadata.has(ERROR_CODE_HEADER) &&
    (error.code === Code.DeadlineExceeded || error.code === Code.Unavailable || error.code === Code.Aborted || error.code === Code.Canceled)
  );
}
