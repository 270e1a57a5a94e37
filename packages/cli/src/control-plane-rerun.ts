/**
 * A foreground `fsb up` started without the control plane's Node.js flags (a plain `fsb up`: the
 * launcher's node has none, so that the CLI's other commands start fast) runs itself again with them
 * and the control plane's environment (CONTROL_PLANE_NODE_FLAGS, CONTROL_PLANE_ENV), as a child in a
 * process group of its own: this process passes SIGINT, SIGTERM and SIGHUP on to it (a terminal's
 * Ctrl-C reaches this process alone, so the child gets it once) and exits as the child did. The
 * child takes the data directory's lock, so `fsb down` stops the child, and this process follows.
 */
import { spawn } from "node:child_process";
import { constants } from "node:os";
import { CONTROL_PLANE_NODE_FLAGS, controlPlaneEnv } from "@fast-sandbox/controlplane";

const FORWARDED: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

export interface RerunOptions {
  /** @default process.execPath */
  execPath?: string;
  /** The node options this process was started with, kept after the control plane's flags. @default process.execArgv */
  execArgv?: readonly string[];
  /** The script and its arguments. @default process.argv.slice(1) */
  argv?: readonly string[];
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
}

/** Runs the script again in a node with the control plane's flags; resolves with the exit code for this process (128 + n for a child killed by signal n). */
export function rerunAsControlPlane(options: RerunOptions = {}): Promise<number> {
  const child = spawn(
    options.execPath ?? process.execPath,
    [...CONTROL_PLANE_NODE_FLAGS, ...(options.execArgv ?? process.execArgv), ...(options.argv ?? process.argv.slice(1))],
    { stdio: "inherit", env: controlPlaneEnv(options.env ?? process.env), detached: true },
  );
  const forward = (signal: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  for (const signal of FORWARDED) process.on(signal, forward);
  const stopForwarding = () => {
    for (const signal of FORWARDED) process.off(signal, forward);
  };
  return new Promise((resolve, reject) => {
    child.once("error", (error) => {
      stopForwarding();
      reject(error);
    });
    child.once("exit", (code, signal) => {
      stopForwarding();
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}
