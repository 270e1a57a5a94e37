/**
 * Whether a sandbox's command started. The in-sandbox helper (helper/fsb-helper.c) learns it from a
 * close-on-exec pipe between itself and the child that enters the working directory and executes
 * the command, and writes the outcome to `command-start` in its run directory: `started`, or
 * `failed <step> <errno>` and the path concerned on the next line. The create path watches the run
 * directory (inotify, no polling) from before Tasks.Start and turns a failure into a create error.
 */
import { watch, type FSWatcher } from "node:fs";
import { join } from "node:path";
import { getSystemErrorMap } from "node:util";
import { FailedPreconditionError, ValidationError, type FsbError } from "@fast-sandbox/api/core";
import { readRunFile } from "./run-file.js";

/** The file the helper writes in its run directory once the command is executing or has failed to. */
export const COMMAND_START_FILE = "command-start";

/** The step of starting the command that failed: the helper's fork, creating or entering the working directory, or the exec. */
export type CommandStartStep = "fork" | "mkdir" | "chdir" | "user" | "exec";

export type CommandStartReport =
  | { started: true }
  | {
      started: false;
      step: CommandStartStep;
      /** The errno of the failed step. */
      errno: number;
      /** The directory or file concerned; empty for an exec when no file of that name is in $PATH. */
      path: string;
    };

const STEPS: readonly string[] = ["fork", "mkdir", "chdir", "user", "exec"] satisfies CommandStartStep[];
const FAILED = /^failed ([a-z]+) (\d{1,4})\n/;

/** Parses the helper's report; undefined for anything else (a partial or foreign file). */
export function parseCommandStartReport(text: string): CommandStartReport | undefined {
  if (text === "started\n") return { started: true };
  const match = FAILED.exec(text);
  if (!match || !STEPS.includes(match[1] ?? "")) return undefined;
  return { started: false, step: match[1] as CommandStartStep, errno: Number(match[2]), path: text.slice(match[0].length) };
}

const ERRNO_ENOENT = 2;
const ERRNO_EAGAIN = 11;

/** `no such file or directory` for ENOENT: libuv's lower-case messages, as Go (and so docker) prints them. */
export function errnoMessage(errno: number): string {
  return getSystemErrorMap().get(-errno)?.[1] ?? `errno ${errno}`;
}

export interface CommandStartContext {
  /** The process's argv (without the helper). */
  args: readonly string[];
  /** The working directory the helper entered (or tried to). */
  workingDir: string;
  /** The sandbox spec set the command (else the image's entrypoint/cmd are at fault). */
  commandFromSpec: boolean;
  /** The sandbox spec set the working directory (else the image's WorkingDir is at fault). */
  workingDirFromSpec: boolean;
}

/**
 * The create error for a command that could not start, worded like `docker run`'s
 * (`exec: "nosuch": executable file not found in $PATH`). A bad command or working directory is the
 * request's fault (invalid_argument, on the spec field when the spec set it); a failed fork is not.
 */
export function commandStartError(report: Exclude<CommandStartReport, { started: true }>, context: CommandStartContext): FsbError {
  const reason = errnoMessage(report.errno);
  const name = context.args[0] ?? "";
  switch (report.step) {
    case "fork":
      return new FailedPreconditionError(
        `the sandbox's helper could not start the command: fork: ${reason}` +
          (report.errno === ERRNO_EAGAIN ? " (a pids limit must leave room for the helper and the command: at least 2)" : ""),
      );
    case "mkdir":
    case "chdir": {
      const message = `${report.step} ${report.path || context.workingDir}: ${reason}`;
      return context.workingDirFromSpec ? new ValidationError("spec.workingDir", message) : new ValidationError("", `${message} (the image's WorkingDir)`);
    }
    case "user":
      // As docker run words it: the image's USER names an account its /etc/passwd (or group /etc/group) lacks.
      return new ValidationError(
        "",
        report.errno === ERRNO_ENOENT
          ? `unable to find user ${report.path}: no matching entries in the image's /etc/passwd or /etc/group (the image's USER)`
          : `cannot run the command as the image's user ${report.path}: ${reason}`,
      );
    case "exec": {
      const message =
        report.errno === ERRNO_ENOENT && report.path === ""
          ? `exec: ${JSON.stringify(name)}: executable file not found in $PATH`
          : `exec: ${JSON.stringify(name)}: ${report.path && report.path !== name ? `${report.path}: ` : ""}${reason}`;
      return context.commandFromSpec ? new ValidationError("spec.command", message) : new ValidationError("", `${message} (the image's entrypoint and cmd)`);
    }
  }
}

/**
 * Watches a sandbox's run directory for the helper's report. Create it before Tasks.Start (so the
 * report cannot slip by unseen), `wait()` after, and `close()` in every case.
 */
export class CommandStartWatcher {
  private readonly path: string;
  private readonly watcher: FSWatcher;
  private report: CommandStartReport | undefined;
  private notify: (() => void) | undefined;

  constructor(runDir: string) {
    this.path = join(runDir, COMMAND_START_FILE);
    this.watcher = watch(runDir, { persistent: false }, (_event, fileName) => {
      if (fileName === null || fileName === COMMAND_START_FILE) this.check();
    });
    // A watcher that breaks (its directory removed) ends the wait instead of leaving it to the timeout.
    this.watcher.on("error", () => this.notify?.());
  }

  /** Resolves with the report, or undefined when none came within timeoutMs. */
  async wait(timeoutMs: number): Promise<CommandStartReport | undefined> {
    if (this.check()) return this.report;
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve) => {
        this.notify = resolve;
        timer = setTimeout(resolve, timeoutMs);
      });
    } finally {
      clearTimeout(timer);
      this.notify = undefined;
    }
    return this.report ?? (this.check() ? this.report : undefined);
  }

  close(): void {
    this.watcher.close();
  }

  /** Reads the report once it is there (the helper renames it into place, so it is whole). */
  private check(): boolean {
    if (this.report) return true;
    const text = readRunFile(this.path);
    if (text === undefined) return false;
    this.report = parseCommandStartReport(text);
    if (this.report) this.notify?.();
    return this.report !== undefined;
  }
}
