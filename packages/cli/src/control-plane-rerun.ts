/**
 * A foreground `fsb up` started without the control plane's Node.js flags (a plain `fsb up`: the
 * launcher's node has none, so that the CLI's other commands start fast) runs itself again with them
 * and the control plane's environment (CONTROL_PLANE_NODE_FLAGS, CONTROL_PLANE_ENV), as a child in a
 * process group of its own: this process passes SIGINT, SIGTERM and SIGHUP on to it (a terminal's
 * Ctrl-C reaches this process alone, so the child gets it once) and exits as the child did. The
 * child takes the data directory's lock, so `fsb down` stops the child, and this process follows.
 * They share their fate the other way too: the child watches an IPC channel to this process and,
 * when it closes without the child having exited (this process was killed: SIGKILL, a crash),
 * kills itself at once with SIGKILL, as the one process of a plain `fsb up` would have died.
 */
import { spawn } from "node:child_process";
import { constants } from "node:os";
import { CONTROL_PLANE_NODE_FLAGS, controlPlaneEnv } from "@fast-sandbox/controlplane";

const FORWARDED: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
/** Set for the child: it is a control plane run again by `fsb up`, whose IPC channel is its parent's life. */
const RERUN_ENV = "FSB_UP_RERUN";

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
    { stdio: ["inherit", "inherit", "inherit", "ipc"], env: { ...controlPlaneEnv(options.env ?? process.env), [RERUN_ENV]: "1" }, detached: true },
  );
  // The channel is the child's watch on this process: nothing is sent, and it keeps neither side running.
  child.channel?.unref();
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

/**
 * In the child of rerunAsControlPlane: dies with its parent (SIGKILL of itself once the IPC channel
 * to the parent closes). Does nothing in a process that is not such a child.
 */
export function followRerunParent(): void {
  if (process.env[RERUN_ENV] !== "1" || !process.channel) return;
  delete process.env[RERUN_ENV];
  process.channel.unref();
  process.once("disconnect", () => process.kill(process.pid, "SIGKILL"));
}
