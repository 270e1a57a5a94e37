/**
 * SIGINT (Ctrl-C) and SIGTERM for a command that has something to let go of before it ends (a port
 * forward's tunnels, a download's partial file). Both are listened for until the first arrives and
 * neither afterwards: a listener left behind would swallow the next one, which should end the
 * process as it does without a listener (e.g. a SIGTERM while the command hangs in its clean-up).
 */
export type StopSignal = "SIGINT" | "SIGTERM";

const STOP_SIGNALS: readonly StopSignal[] = ["SIGINT", "SIGTERM"];

/** The exit code of a command a stop signal ended, as a shell reports it: 128 + the signal's number. */
export const STOP_SIGNAL_EXIT_CODES: Readonly<Record<StopSignal, number>> = { SIGINT: 130, SIGTERM: 143 };

/** Calls `handler` with the first SIGINT or SIGTERM; the function it returns stops listening (when the work ends first). */
export function onStopSignal(handler: (signal: StopSignal) => void): () => void {
  const stopListening = () => {
    for (const signal of STOP_SIGNALS) process.removeListener(signal, received);
  };
  const received = (signal: StopSignal) => {
    stopListening();
    handler(signal);
  };
  for (const signal of STOP_SIGNALS) process.on(signal, received);
  return stopListening;
}

/** Resolves with the first SIGINT or SIGTERM. */
export function stopSignalled(): Promise<StopSignal> {
  return new Promise((resolve) => onStopSignal(resolve));
}
