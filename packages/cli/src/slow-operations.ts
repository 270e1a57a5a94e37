/**
 * The control plane's slow operations as the CLI asks for them: a create (of an image the agents
 * still pull, or a restore), a fork, a pause, a resume, a delete may take minutes. With the SDK's
 * default deadline (60 s) the CLI would give up on one the control plane carries on with — a create
 * then makes a sandbox, later, under a name never printed, with a token never shown — and tell the
 * user to pass a `requestTimeoutMs` it has no flag for. They wait without a client deadline instead:
 * Ctrl-C or SIGTERM ends the wait, and a control plane that vanished is found by the SDK's HTTP/2
 * PINGs (UnavailableError).
 */
import { randomUUID } from "node:crypto";
import { requestSandboxName } from "@fast-sandbox/sdk";
import { STOP_SIGNAL_EXIT_CODES, onStopSignal, type StopSignal } from "./stop-signals.js";

/** Call options of a slow operation: no client deadline. */
export const UNTIL_DONE = { requestTimeoutMs: 0 } as const;

/** What a create is given by `untilCreated`: its request id, the signal Ctrl-C aborts, and no deadline. */
export interface CreateCall {
  requestId: string;
  signal: AbortSignal;
  requestTimeoutMs: 0;
}

/**
 * Runs a create (`fsb run`, `fsb run --from-checkpoint`) until it is answered, with a request id of
 * its own so that the sandbox's name is known before the answer (`name`, else the one the control
 * plane derives from the id). A Ctrl-C or SIGTERM meanwhile stops waiting: the create may still be
 * made, so the message names the sandbox and the request id, and the exit code is the signal's
 * (130, 143); undefined is returned then.
 */
export async function untilCreated<T>(namespace: string, name: string | undefined, create: (call: CreateCall) => Promise<T>): Promise<T | undefined> {
  const requestId = randomUUID();
  const sandbox = name || requestSandboxName(namespace, requestId);
  const controller = new AbortController();
  let stoppedBy: StopSignal | undefined;
  const stopListening = onStopSignal((signal) => {
    stoppedBy = signal;
    controller.abort();
  });
  try {
    return await create({ requestId, signal: controller.signal, ...UNTIL_DONE });
  } catch (error) {
    if (stoppedBy === undefined) throw error;
    const namespaceFlag = namespace === "default" ? "" : ` -n ${namespace}`;
    process.stderr.write(
      `error: interrupted while sandbox ${namespace}/${sandbox} was being created (request id ${requestId}); ` +
        `the control plane may still make it: 'fsb get ${sandbox}${namespaceFlag}' shows it, 'fsb rm ${sandbox}${namespaceFlag}' deletes it\n`,
    );
    process.exitCode = STOP_SIGNAL_EXIT_CODES[stoppedBy];
    return undefined;
  } finally {
    stopListening();
  }
}
