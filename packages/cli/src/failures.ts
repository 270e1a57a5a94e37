/** How the CLI reports a failure: one `error: …` line on stderr (with the stack too when FSB_DEBUG is set and it is an internal one). */
import { FsbError } from "@fast-sandbox/api";
import { explainFailure } from "./connection.js";

/** The command the user runs this program as, for the commands messages suggest: `fsb`, or `kubectl fs` (the kubectl plugin). */
let commandName = "fsb";

/** Sets how messages name this program's commands (main, from the name it runs as). */
export function setCommandName(name: string): void {
  commandName = name;
}

/**
 * `message` with the commands it suggests (`'fsb token web'`, `npx fsb run …`, also in the control
 * plane's words) as the user runs this program: `'kubectl fs token web'` for the kubectl plugin.
 */
export function inCommandName(message: string, name: string): string {
  if (name === "fsb") return message;
  return message.replace(/(['`])fsb (?=[a-z-])/g, `$1${name} `).replace(/\bnpx fsb (?=[a-z-])/g, `${name} `);
}

/** Prints the failure as the user should read it (explainFailure) and returns it. */
export function printFailure(error: unknown): FsbError {
  const fsbError = explainFailure(FsbError.from(error));
  fsbError.message = inCommandName(fsbError.message, commandName);
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
