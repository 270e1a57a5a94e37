/**
 * `sandbox.commands`: run commands in a sandbox through its daemon (`process.Process`), follow and
 * steer running ones. A command string runs as E2B's SDKs run it, `/bin/bash -l -c <command>` (the
 * daemon uses /bin/sh where there is no bash); an array runs as a program and its arguments.
 */
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { TimeoutError, ValidationError } from "@fast-sandbox/api/core";
import { checkString, checkStringList, checkStringMap, shown } from "./arguments.js";
import { CommandHandle } from "./command-handle.js";
import type { CommandResult } from "./errors.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Signal, type Process, type ProcessConfigSchema, type ProcessEvent, type StartRequestSchema } from "./gen/envd/process/process_pb.js";
import { KEEPALIVE_HEADER, KEEPALIVE_SECONDS, StreamStart, deadline, duration, untilSilent, type RequestOptions } from "./request-options.js";
import { userHeader, type SandboxDaemon, type UserOptions } from "./sandbox-daemon.js";

/** A command in the sandbox: a shell command line, or a program and its arguments. */
export type Command = string | readonly string[];

export interface CommandOptions extends RequestOptions, UserOptions {
  /** Called with stdout as it arrives (decoded as UTF-8); `stdout` of the result has all of it too. */
  onStdout?: (data: string) => void;
  /** Called with stderr as it arrives. */
  onStderr?: (data: string) => void;
  /** Called with each chunk of stdout and stderr as raw bytes, before decoding (output that is not text, e.g. to pass it on unchanged). */
  onRawOutput?: (stream: "stdout" | "stderr", data: Uint8Array) => void;
  /** Environment variables on top of the sandbox's. */
  envs?: Record<string, string>;
  /** Working directory (absolute, or relative to the user's home). @default the user's home */
  cwd?: string;
  /**
   * How long the command may run, in milliseconds: past it the daemon kills it and `run`/`wait`
   * reject with a `TimeoutError`. 0 for no limit.
   * @default 60000
   */
  timeoutMs?: number;
  /** Keep its stdin open for `sendStdin` (and `closeStdin`). @default false */
  stdin?: boolean;
  /** A name for it in `commands.list()`. */
  tag?: string;
}

export interface ProcessInfo {
  pid: number;
  tag?: string;
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

/** How long a command may run unless told: E2B's default. */
export const DEFAULT_COMMAND_TIMEOUT_MS = 60_000;

/**
 * How long an aborted `run` waits for the kill of its command before it rejects all the same; also how
 * long a start given up on waits for the pid of the process it may have started (startProcessStream).
 */
const KILL_AFTER_ABORT_TIMEOUT_MS = 2_000;

export class Commands {
  constructor(private readonly daemon: SandboxDaemon) {}

  /**
   * Runs a command and resolves with its result once it exits with 0; rejects with a
   * `CommandExitError` (which carries `exitCode`, `stdout` and `stderr`) when it exits otherwise.
   * With `background: true` it resolves as soon as the command started, with its handle.
   *
   * A run the caller aborts (`signal`) rejects with the signal's reason and kills the command it
   * waited for (best effort, within a couple of seconds: the daemon does not stop a process whose
   * stream was closed) — also one aborted while it started, once its pid comes; in the background
   * the signal stops only the following of its output.
   */
  run(command: Command, options: CommandOptions & { background: true }): Promise<CommandHandle>;
  run(command: Command, options?: CommandOptions & { background?: false }): Promise<CommandResult>;
  async run(command: Command, options: CommandOptions & { background?: boolean } = {}): Promise<CommandHandle | CommandResult> {
    const handle = await this.start(command, options);
    if (options.background) return handle;
    try {
      return await handle.wait();
    } catch (error) {
      if (options.signal?.aborted && handle.exitCode === undefined) {
        // Without the caller's signal, which has aborted; a kill that fails changes nothing of why the run ended.
        await this.kill(handle.pid, { requestTimeoutMs: KILL_AFTER_ABORT_TIMEOUT_MS }).catch(() => undefined);
      }
      throw error;
    }
  }

  /** Follows a running command (started by `run`, by another client, or before a disconnect). */
  async connect(pid: number, options: Omit<CommandOptions, "envs" | "cwd" | "stdin" | "tag" | "user"> = {}): Promise<CommandHandle> {
    checkPid(pid);
    const timeoutMs = duration(options.timeoutMs ?? 0, "timeoutMs");
    const description = `process ${pid} in sandbox ${this.daemon.label}`;
    return this.stream(description, options, timeoutMs, false, (client, callOptions) =>
      client.connect({ process: { selector: { case: "pid", value: pid } } }, callOptions),
    );
  }

  /** The commands (and terminals) running in the sandbox. */
  async list(options: RequestOptions = {}): Promise<ProcessInfo[]> {
    const client = await this.daemon.process(options);
    const response = await this.daemon.call("listing processes", options, (call) => client.list({}, call));
    return response.processes.map((info) => ({
      pid: info.pid,
      ...(info.tag ? { tag: info.tag } : {}),
      cmd: info.config?.cmd ?? "",
      args: info.config?.args ?? [],
      envs: info.config?.envs ?? {},
      ...(info.config?.cwd ? { cwd: info.config.cwd } : {}),
    }));
  }

  /** Kills a command (SIGKILL); resolves false when no process has that pid. */
  async kill(pid: number, options: RequestOptions = {}): Promise<boolean> {
    return signalProcess(this.daemon, pid, options);
  }

  /** Writes to a command's stdin (started with `stdin: true`). */
  async sendStdin(pid: number, data: string | Uint8Array, options: RequestOptions = {}): Promise<void> {
    checkPid(pid);
    const client = await this.daemon.process(options);
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    await this.daemon.call(`writing to the stdin of process ${pid}`, options, (call) =>
      client.sendInput({ process: { selector: { case: "pid", value: pid } }, input: { input: { case: "stdin", value: bytes } } }, call),
    );
  }

  /** Closes a command's stdin: it reads end of file. */
  async closeStdin(pid: number, options: RequestOptions = {}): Promise<void> {
    checkPid(pid);
    const client = await this.daemon.process(options);
    await this.daemon.call(`closing the stdin of process ${pid}`, options, (call) =>
      client.closeStdin({ process: { selector: { case: "pid", value: pid } } }, call),
    );
  }

  private async start(command: Command, options: CommandOptions): Promise<CommandHandle> {
    const config = processConfig(command, options);
    checkString(options.tag, "tag");
    const timeoutMs = duration(options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, "timeoutMs");
    const description = `command ${JSON.stringify(typeof command === "string" ? command : command.join(" "))} in sandbox ${this.daemon.label}`;
    const request: MessageInitShape<typeof StartRequestSchema> = {
      process: config,
      stdin: options.stdin ?? false,
      ...(options.tag ? { tag: options.tag } : {}),
    };
    return this.stream(description, options, timeoutMs, true, (client, callOptions) => client.start(request, callOptions));
  }

  /**
   * Starts a process stream (Start or Connect) and hands it to a handle once the daemon told the
   * pid. `killsAtDeadline`: the daemon kills the process when `timeoutMs` passes (Start).
   */
  private async stream(
    description: string,
    options: CommandOptions,
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
      sendStdin: (data, inputOptions) => this.sendStdin(pid, data, inputOptions),
      closeStdin: (inputOptions) => this.closeStdin(pid, inputOptions),
      onStdout: options.onStdout,
      onStderr: options.onStderr,
      onRawOutput: options.onRawOutput,
    });
  }
}

/** The daemon's ProcessConfig of a command. */
export function processConfig(command: Command, options: { envs?: Record<string, string>; cwd?: string }): MessageInitShape<typeof ProcessConfigSchema> {
  let cmd: string;
  let args: string[];
  const given: unknown = command;
  if (typeof given !== "string" && !Array.isArray(given)) {
    throw new ValidationError(
      "command",
      `${shown(command)} is not a command; give a command line (a string) or a program and its arguments (an array of strings)`,
    );
  }
  if (typeof command !== "string") checkStringList(command, "command");
  checkStringMap(options.envs, "envs");
  checkString(options.cwd, "cwd");
  if (typeof command === "string") {
    if (command.trim() === "") throw new ValidationError("command", "is empty; give a command line, e.g. 'ls -l /'");
    [cmd, args] = ["/bin/bash", ["-l", "-c", command]];
  } else {
    const [program, ...rest] = command;
    if (program === undefined || program === "") throw new ValidationError("command", "is empty; give a program and its arguments, e.g. ['ls', '-l', '/']");
    [cmd, args] = [program, rest];
  }
  for (const name of Object.keys(options.envs ?? {})) {
    if (name === "" || name.includes("=") || name.includes("\0"))
      throw new ValidationError(`envs.${name}`, "is not a variable name (no '=' or NUL, not empty)");
  }
  return { cmd, args, envs: options.envs ?? {}, ...(options.cwd ? { cwd: options.cwd } : {}) };
}

export function checkPid(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 0 || pid > 0xffffffff) throw new ValidationError("pid", `${String(pid)} is not a process id (a positive integer)`);
}

/** SIGKILL to a process; false when there is no such process. */
export async function signalProcess(daemon: SandboxDaemon, pid: number, options: RequestOptions): Promise<boolean> {
  checkPid(pid);
  const client = await daemon.process(options);
  return daemon.call(`killing process ${pid}`, options, async (call) => {
    try {
      await client.sendSignal({ process: { selector: { case: "pid", value: pid } }, signal: Signal.SIGKILL }, call);
      return true;
    } catch (error) {
      if (error instanceof ConnectError && error.code === Code.NotFound) return false;
      throw error;
    }
  });
}

/** Opens Start or Connect on the daemon's process service. */
export type OpenProcessStream = (
  client: Client<typeof Process>,
  callOptions: { signal: AbortSignal; timeoutMs?: number; headers: Record<string, string> },
) => AsyncIterable<{ event?: ProcessEvent }>;

/** A process stream that started: the pid, the events after the start event, and how to stop receiving them. */
export interface StartedProcessStream {
  pid: number;
  events: AsyncIterator<ProcessEvent>;
  stop: () => void;
  /** When the stream was opened (its deadline counts from then), in ms since the epoch. */
  openedAtMs: number;
}

/**
 * Opens a process stream and waits for its first event, which must be the start event with the
 * pid: `requestTimeoutMs` bounds that wait, `timeoutMs` the whole stream (sent as Connect's
 * deadline, which the daemon enforces on Start by killing the process). `startsProcess` (Start, not
 * Connect): a start the caller aborts, or that times out, once the request may have reached the
 * daemon kills the process it started, when its pid comes within KILL_AFTER_ABORT_TIMEOUT_MS.
 */
export async function startProcessStream(
  daemon: SandboxDaemon,
  description: string,
  options: RequestOptions & UserOptions,
  timeoutMs: number,
  open: OpenProcessStream,
  startsProcess: boolean,
): Promise<StartedProcessStream> {
  const requestTimeoutMs = daemon.requestTimeoutMs(options);
  const start = new StreamStart(options.signal, requestTimeoutMs);
  const streamDeadline = deadline(timeoutMs);
  try {
    const client = await daemon.process({ ...options, signal: start.signal });
    // From here the daemon may start the process before the caller's abort (or the start's timeout)
    // is known to it, and only the start event names its pid: the stream waits a little longer for
    // it, so that the process can be killed rather than left running, unknown to anyone.
    if (startsProcess) start.deferAborts(KILL_AFTER_ABORT_TIMEOUT_MS);
    const openedAtMs = Date.now();
    const events = processEvents(
      untilSilent(
        open(client, {
          signal: start.signal,
          ...(streamDeadline !== undefined ? { timeoutMs: streamDeadline } : {}),
          headers: { ...userHeader(options.user), [KEEPALIVE_HEADER]: String(KEEPALIVE_SECONDS) },
        }),
        () => start.stop(),
      ),
      // Ended (the process exited, the stream failed): the caller's signal is let go of (StreamStart).
      () => start.stop(),
    );
    const first = await events.next();
    if (first.done || first.value.event.case !== "start") {
      throw new ConnectError(
        `the daemon's stream did not begin with the process's start event (got ${first.done ? "the end of the stream" : first.value.event.case})`,
        Code.Internal,
      );
    }
    const pid = first.value.event.value.pid;
    if (start.abortDeferred) {
      // Not with the caller's signal, which has aborted; a kill that fails changes nothing of why the start ended.
      await signalProcess(daemon, pid, { requestTimeoutMs: KILL_AFTER_ABORT_TIMEOUT_MS }).catch(() => undefined);
      throw new ConnectError(`${description} was started, then killed: its start was given up before the daemon told its pid`, Code.Canceled);
    }
    start.started();
    return { pid, events, stop: () => start.stop(), openedAtMs };
  } catch (error) {
    start.stop();
    if (start.startTimedOut && !options.signal?.aborted) {
      throw new TimeoutError(
        `${description} did not start within ${requestTimeoutMs} ms (requestTimeoutMs); pass a larger requestTimeoutMs, or 0 for no limit`,
        {
          cause: error,
        },
      );
    }
    throw await daemon.explained(
      daemon.error(error, `starting ${description}`, options.signal, streamDeadline, "timeoutMs"),
      `starting ${description}`,
      options.signal,
    );
  }
}

/** The events of Start/Connect responses, without keepalives; `onEnd` once they ended, however. */
async function* processEvents(responses: AsyncIterable<{ event?: ProcessEvent }>, onEnd: () => void): AsyncGenerator<ProcessEvent> {
  try {
    for await (const response of responses) {
      const event = response.event;
      if (event && event.event.case !== undefined && event.event.case !== "keepalive") yield event;
    }
  } finally {
    onEnd();
  }
}
