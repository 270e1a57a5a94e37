/**
 * `fsb exec -it` and `fsb shell`: a command in a pseudo-terminal of the sandbox's daemon, wired to
 * this terminal — raw mode (every key, Ctrl-C included, goes to the sandbox), the window size at the
 * start and at every resize (SIGWINCH), the terminal's output as it comes, and the command's exit
 * code as the CLI's. `fsb exec -i` without `-t` pipes stdin to a command without a terminal.
 */
import { CommandExitError, type CommandResult, type FastSandbox } from "@fast-sandbox/sdk";
import { onExitOnWriteFailure } from "./output.js";

/** The streams a session uses (the process's own, or a spec's). */
export interface TerminalIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (mode: boolean) => unknown };
  stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number; rows?: number; on(event: "resize", listener: () => void): unknown };
  stderr: NodeJS.WritableStream;
}

export interface TerminalSessionOptions {
  /** What runs; undefined: the daemon's login shell. */
  command: string[] | undefined;
  envs: Record<string, string>;
  cwd?: string | undefined;
  /** The user to run as (a name or uid); undefined: the daemon's default user. */
  user?: string | undefined;
  /** Forward stdin (`-i`). */
  interactive: boolean;
}

/** Size of a terminal that is not one (output redirected). */
const DEFAULT_SIZE = { cols: 80, rows: 24 };
/** Ctrl-D: what a terminal sends for end of input. */
const END_OF_INPUT = new Uint8Array([0x04]);
/** Signals that end the CLI; the command in the sandbox is killed with it, not left behind. */
const ENDING_SIGNALS = ["SIGTERM", "SIGHUP", "SIGINT"] as const;
const SIGNAL_NUMBERS: Record<string, number> = { hangup: 1, interrupt: 2, quit: 3, aborted: 6, killed: 9, terminated: 15, SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };

/**
 * The most one input message carries: envd refuses a message over 16 MiB, and a smaller one keeps
 * what is read ahead of the sandbox (and what a failure leaves unsent) small.
 */
export const MAX_INPUT_MESSAGE_BYTES = 1024 * 1024;

/** The source of the input, paused while a full message waits (backpressure): stdin. */
export interface InputFlow {
  pause(): unknown;
  resume(): unknown;
}

/**
 * Sends input chunks in order, one request at a time; what arrives while one is in flight goes
 * with the next (at most MAX_INPUT_MESSAGE_BYTES a request), so typing fast costs fewer round trips
 * and keys never overtake each other. While a full message waits, the source is paused, so a large
 * stdin is read as fast as the sandbox takes it, not into memory. The first failed send ends it:
 * the rest of the input is not sent (the command would read it with a gap), `onError` is told, and
 * `drained()` rejects with the failure.
 */
export class InputForwarder {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private sending: Promise<void> | undefined;
  private paused = false;
  private failure: { error: unknown } | undefined;

  constructor(
    private readonly send: (data: Uint8Array) => Promise<void>,
    private readonly onError: (error: unknown) => void,
    private readonly flow?: InputFlow,
  ) {}

  /** Whether a send failed (and the input stopped there). */
  get failed(): boolean {
    return this.failure !== undefined;
  }

  push(chunk: Uint8Array): void {
    if (this.failure || chunk.byteLength === 0) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.byteLength;
    if (!this.paused && this.pendingBytes >= MAX_INPUT_MESSAGE_BYTES) {
      this.paused = true;
      this.flow?.pause();
    }
    this.sending ??= this.flush();
  }

  /** Resolves once everything pushed so far was sent; rejects with the error of a send that failed. */
  async drained(): Promise<void> {
    while (this.sending) await this.sending;
    if (this.failure) throw this.failure.error;
  }

  private async flush(): Promise<void> {
    while (this.pending.length > 0) {
      const data = this.take(MAX_INPUT_MESSAGE_BYTES);
      // Less than a full message waits: read on while this one is sent.
      if (this.paused && this.pendingBytes < MAX_INPUT_MESSAGE_BYTES) {
        this.paused = false;
        this.flow?.resume();
      }
      try {
        await this.send(data);
      } catch (error) {
        this.failure = { error };
        this.pending = [];
        this.pendingBytes = 0;
        this.onError(error);
      }
    }
    this.sending = undefined;
  }

  /** The next message: the pending chunks, joined, up to `max` bytes (a larger chunk is split). */
  private take(max: number): Uint8Array {
    const parts: Uint8Array[] = [];
    let size = 0;
    while (this.pending.length > 0 && size < max) {
      const chunk = this.pending[0]!;
      const room = max - size;
      if (chunk.byteLength <= room) {
        parts.push(chunk);
        size += chunk.byteLength;
        this.pending.shift();
      } else {
        parts.push(chunk.subarray(0, room));
        size += room;
        this.pending[0] = chunk.subarray(room);
      }
    }
    this.pendingBytes -= size;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
}

/** The CLI's exit code for a command's result: its own, or 128 + the signal that killed it (as a shell reports it). */
export function exitCodeOf(result: Pick<CommandResult, "exitCode" | "error">): number {
  if (result.exitCode >= 0) return result.exitCode & 0xff;
  const signal = /signal: (\w+)/.exec(result.error ?? "")?.[1];
  const number = signal ? SIGNAL_NUMBERS[signal] : undefined;
  return number !== undefined ? 128 + number : 1;
}

/** The result of a handle, whether it succeeded or not. */
async function resultOf(wait: Promise<CommandResult>): Promise<CommandResult> {
  try {
    return await wait;
  } catch (error) {
    if (error instanceof CommandExitError) return error;
    throw error;
  }
}

/** The CLI's exit code when the input could not be sent and the command was killed for it (main.ts's error code). */
const EXIT_INPUT_FAILED = 1;

/**
 * Sends `io.stdin` to the command (`send`, through an InputForwarder) until it ends (`onEnd`) or a
 * send fails: then reading stops, the command is killed (`kill`) rather than left to read an input
 * with a gap or to wait for the rest of it, and `exitCode` makes the CLI's exit code non-zero —
 * unless the command had already ended on its own (a `head` that took what it needed).
 */
function forwardStdin(
  io: TerminalIo,
  send: (data: Uint8Array) => Promise<void>,
  options: { kill: () => Promise<void>; onEnd: (forwarder: InputForwarder) => void; report: (message: string) => void },
): { start: () => void; stop: () => void; exitCode: (result: CommandResult) => number } {
  const forwarder = new InputForwarder(
    send,
    (error) => {
      stop();
      options.report(
        `error: the input could not be sent to the command (${error instanceof Error ? error.message : String(error)}); ` +
          "it is killed, as the rest of its input would not reach it",
      );
      void options.kill();
    },
    io.stdin,
  );
  const onInput = (chunk: Buffer | string) => forwarder.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  const onEnd = () => options.onEnd(forwarder);
  const stop = () => {
    io.stdin.removeListener("data", onInput);
    io.stdin.removeListener("end", onEnd);
    io.stdin.pause();
  };
  return {
    start: () => {
      io.stdin.on("data", onInput);
      io.stdin.on("end", onEnd);
      io.stdin.resume();
    },
    stop,
    exitCode: (result) => (forwarder.failed && result.exitCode < 0 ? EXIT_INPUT_FAILED : exitCodeOf(result)),
  };
}

/** Runs the command in a terminal of the sandbox, wired to `io`; resolves with the exit code for the CLI. */
export async function runInTerminal(sandbox: FastSandbox, options: TerminalSessionOptions, io: TerminalIo): Promise<number> {
  const size = () => (io.stdout.isTTY && io.stdout.columns && io.stdout.rows ? { cols: io.stdout.columns, rows: io.stdout.rows } : DEFAULT_SIZE);
  const terminal = await sandbox.pty.create({
    ...size(),
    ...(options.command ? { command: options.command } : {}),
    envs: options.envs,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.user ? { user: options.user } : {}),
    timeoutMs: 0,
    onData: (data) => io.stdout.write(data),
  });
  const raw = options.interactive && io.stdin.isTTY === true && typeof io.stdin.setRawMode === "function";
  const kill = () =>
    sandbox.pty.kill(terminal.pid).then(
      () => undefined,
      () => undefined,
    );
  const input = forwardStdin(io, (data) => sandbox.pty.sendInput(terminal.pid, data), {
    kill,
    onEnd: (forwarder) => forwarder.push(END_OF_INPUT),
    report: (message) => io.stderr.write(`\r\n${message}\r\n`),
  });
  const onResize = () => void sandbox.pty.resize(terminal.pid, size()).catch(() => undefined);
  return withEndingSignals(kill, async () => {
    try {
      if (raw) io.stdin.setRawMode?.(true);
      if (options.interactive) input.start();
      io.stdout.on("resize", onResize);
      return input.exitCode(await resultOf(terminal.wait()));
    } finally {
      io.stdout.removeListener("resize", onResize);
      input.stop();
      if (raw) io.stdin.setRawMode?.(false);
    }
  });
}

/** Runs the command without a terminal, stdin piped to it (`fsb exec -i`); resolves with the exit code for the CLI. */
export async function runWithStdin(
  sandbox: FastSandbox,
  options: Omit<TerminalSessionOptions, "interactive"> & { command: string[] },
  io: TerminalIo,
): Promise<number> {
  const handle = await sandbox.commands.run(options.command, {
    background: true,
    stdin: true,
    envs: options.envs,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.user ? { user: options.user } : {}),
    timeoutMs: 0,
    onRawOutput: (stream, data) => (stream === "stdout" ? io.stdout : io.stderr).write(data),
  });
  const kill = () =>
    handle.kill().then(
      () => undefined,
      () => undefined,
    );
  const input = forwardStdin(io, (data) => handle.sendStdin(data), {
    kill,
    // End of file once all of it was sent; not after a failed send (the command is killed instead).
    onEnd: (forwarder) =>
      void forwarder
        .drained()
        .then(() => handle.closeStdin())
        .catch(() => undefined),
    report: (message) => io.stderr.write(`${message}\n`),
  });
  return withEndingSignals(kill, async () => {
    try {
      input.start();
      return input.exitCode(await resultOf(handle.wait()));
    } finally {
      input.stop();
    }
  });
}

/**
 * Runs `session` with handlers for the signals that end the CLI: they kill the command in the
 * sandbox (`kill`, best effort: it never rejects), and the CLI then exits as killed by that signal
 * (128 + its number). The command runs without a deadline (`timeoutMs: 0`), so every other way the
 * CLI can end kills it too, rather than leave it running with nobody attached: the session failing
 * (its stream broke, a call was refused) and the exit on a failed write of the output (EPIPE: the
 * reader of the output went away), which skips this function's clean-up (`onExitOnWriteFailure`).
 */
async function withEndingSignals(kill: () => Promise<void>, session: () => Promise<number>): Promise<number> {
  let received: string | undefined;
  const handlers = ENDING_SIGNALS.map((signal) => {
    const handler = () => {
      received = signal;
      void kill();
    };
    process.on(signal, handler);
    return [signal, handler] as const;
  });
  const unregister = onExitOnWriteFailure(kill);
  try {
    const code = await session();
    return received ? 128 + (SIGNAL_NUMBERS[received] ?? 0) : code;
  } catch (error) {
    await kill();
    throw error;
  } finally {
    unregister();
    for (const [signal, handler] of handlers) process.removeListener(signal, handler);
  }
}
