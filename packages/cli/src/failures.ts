/** How the CLI reports a failure: one `error: …` line on stderr (with the stack too when FSB_DEBUG is set and it is an internal one). */
import { FsbError } from "@fast-sandbox/api";
import { explainFailure } from "./connection.js";

/** Prints the failure as the user should read it (explainFailure) and returns it. */
export function printFailure(error: unknown): FsbError {
  const fsbError = explainFailure(FsbError.from(error));
  process.stderr.write(`error: ${fsbError.message}\n`);
  if (fsbError.code === "internal" && process.env.FSB_DEBUG) process.stderr.write(`${String((error as Error).stack)}\n`);
  return fsbError;
}

/**
 * Acts on every name, as `kubectl delete A B` does: a name that fails is reported (`error: …`) and
 * the next one is tried all the same; the command exits 1 at the end when any failed.
 */
export async function forEachName(names: readonly string[], act: (name: string) => Promise<void>): Promise<void> {
  let failed = false;
  for (const name of names) {
    try {
      await act(name);
    } catch (error) {
      printFailure(error);
      failed = true;
    }
  }
  if (failed) process.exitCode = 1;
}
