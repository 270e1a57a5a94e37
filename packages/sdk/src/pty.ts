/**
 * `sandbox.pty`: interactive terminals in a sandbox (a pseudo-terminal the daemon allocates). Its
 * output is one raw byte stream (`onData`, with the terminal's echo and escape sequences); input goes
 * in with `sendInput`, and `resize` tells the programs in it the new window size (SIGWINCH).
 */
import { ValidationError } from "@fast-sandbox/api/core";
import { CommandHandle } from "./command-handle.js";
import { checkPid, processConfig, signalProcess, startProcessStream, type Command, type OpenProcessStream } from "./commands.js";
import { deadline, duration, type RequestOptions } from "./request-options.js";
import type { SandboxDaemon, UserOptions } from "./sandbox-daemon.js";

/** A terminal's size in characters. */
export interface PtySize {
  cols: number;
  rows: number;
}

export interface PtyCreateOptions extends PtySize, RequestOptions, UserOptions {
  /** Called with the terminal's output as it arrives, as raw bytes. */
  onData?: (data: Uint8Array) => void;
  /** What runs in the terminal. @default ["/bin/bash", "-i", "-l"] (the daemon runs /bin/sh where there is no bash) */
  command?: Command;
  /** Environment variables on top of the sandbox's; TERM, LANG and LC_ALL default to xterm-256color, C.UTF-8, C.UTF-8. */
  envs?: Record<string, string>;
  /** Working directory. @default the user's home */
  cwd?: string;
  /** How long the terminal may stay open, in milliseconds: past it, it is killed. 0 for no limit. @default 0 */
  timeoutMs?: number;
}

export interface PtyConnectOptions extends RequestOptions {
  onData?: (data: Uint8Array) => void;
  /** How long to follow it; 0 for no limit. @default 0 */
  timeoutMs?: number;
}

const DEFAULT_SHELL = ["/bin/bash", "-i", "-l"];

export class Pty {
  constructor(private readonly daemon: SandboxDaemon) {}

  /** Starts a terminal; its handle's `wait()` resolves when what runs in it exits with 0 (a `CommandExitError` otherwise). */
  async create(options: PtyCreateOptions): Promise<CommandHandle> {
    checkSize(options);
    const timeoutMs = duration(options.timeoutMs ?? 0, "timeoutMs");
    const command = options.command ?? DEFAULT_SHELL;
    const envs = { TERM: "xterm-256color", LANG: "C.UTF-8", LC_ALL: "C.UTF-8", ...options.envs };
    const config = processConfig(command, { envs, ...(options.cwd ? { cwd: options.cwd } : {}) });
    const description = `terminal ${JSON.stringify(typeof command === "string" ? command : command.join(" "))} in sandbox ${this.daemon.label}`;
    return this.stream(description, options, timeoutMs, true, (client, callOptions) =>
      client.start({ process: config, pty: { size: { cols: options.cols, rows: options.rows } } }, callOptions),
    );
  }

  /** Follows a terminal that runs already (e.g. after the client that made it went away). */
  async connect(pid: number, options: PtyConnectOptions = {}): Promise<CommandHandle> {
    checkPid(pid);
    const timeoutMs = duration(options.timeoutMs ?? 0, "timeoutMs");
    return this.stream(`terminal ${pid} in sandbox ${this.daemon.label}`, options, timeoutMs, false, (client, callOptions) =>
      client.connect({ process: { selector: { case: "pid", value: pid } } }, callOptions),
    );
  }

  /** Types into the terminal (keys as the terminal sends them: "\r" for Enter, "\x03" for Ctrl-C). */
  async sendInput(pid: number, data: string | Uint8Array, options: RequestOptions = {}): Promise<void> {
    checkPid(pid);
    const client = await this.daemon.process(options);
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await this.daemon.call(`typing into terminal ${pid}`, options, (call) =>
      client.sendInput({ process: { selector: { case: "pid", value: pid } }, input: { input: { case: "pty", value: bytes } } }, call),
    );
  }

  /** Changes the terminal's size; the programs in it get SIGWINCH. */
  async resize(pid: number, size: PtySize, options: RequestOptions = {}): Promise<void> {
    checkPid(pid);
    checkSize(size);
    const client = await this.daemon.process(options);
    await this.daemon.call(`resizing terminal ${pid}`, options, (call) =>
      client.update({ process: { selector: { case: "pid", value: pid } }, pty: { size: { cols: size.cols, rows: size.rows } } }, call),
    );
  }

  /** Kills what runs in the terminal (SIGKILL); resolves false when no process has that pid. */
  async kill(pid: number, options: RequestOptions = {}): Promise<boolean> {
    return signalProcess(this.daemon, pid, options);
  }

  private async stream(
    description: string,
    options: RequestOptions & UserOptions & { onData?: (data: Uint8Array) => void },
    timeoutMs: number,
    killsAtDeadline: boolean,
    open: OpenProcessStream,
  ): Promise<CommandHandle> {
    const { pid, events, stop, openedAtMs } = await startProcessStream(this.daemon, description, options, timeoutMs, open, killsAtDeadline);
    return new CommandHandle({
      pid,
      events,
      description,
      ...(killsAtDeadline && timeoutMs > 0 ? { deadline: { atMs: openedAtMs + timeoutMs, timeoutMs } } : {}),
      translate: (error) => this.daemon.error(error, description, options.signal, deadline(timeoutMs), "timeoutMs"),
      disconnect: stop,
      kill: (killOptions) => this.kill(pid, killOptions),
      onPty: options.onData,
    });
  }
}

function checkSize(size: Partial<PtySize>): void {
  for (const key of ["cols", "rows"] as const) {
    const value = size[key];
    if (value === undefined || !Number.isInteger(value) || value < 1 || value > 65535) {
      throw new ValidationError(key, `${String(value)} is not a terminal size; give a whole number of characters, 1..65535`);
    }
  }
}
