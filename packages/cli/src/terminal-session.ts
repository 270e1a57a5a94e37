/**
 * `fsb exec -it` and `fsb shell`: a command in a pseudo-terminal of the sandbox's daemon, wired to
 * this terminal — raw mode (every key, Ctrl-C included, goes to the sandbox), the window size at the
 * start and at every resize (SIGWINCH), the terminal's output as it comes, and the command's exit
 * code as the CLI's. `fsb exec -i` without `-t` pipes stdin to a command without a terminal.
 */
import { CommandExitError, type CommandResult, type FastSandbox } from "@fast-sandbox/sdk";

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
 * Sends input chunks in order, one request at a time; what arrives while one is in flight goes
 * with the next, so typing fast costs fewer round trips and keys never overtake each other.
 */
export class InputForwarder {
  private pending: Uint8Array[] = [];
  private sending: Promise<void> | undefined;

  constructor(
    private readonly send: (data: Uint8Array) => Promise<void>,
    private readonly onError: (error: unknown) => void,
  ) {}

  push(chunk: Uint8Array): void {
    this.pending.push(chunk);
    this.sending ??= this.flush();
  }

  /** Resolves once everything pushed so far was sent. */
  async drained(): Promise<void> {
    while (this.sending) await this.sending;
  }

  private async flush(): Promise<void> {
    while (this.pending.length > 0) {
      const data = Buffer.concat(this.pending.splice(0));
      try {
        await this.send(data);
      } catch (error) {
        this.pending = [];
        this.onError(error);
      }
    }
    this.sending = undefined;
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
  const forwarder = new InputForwarder(
    (data) => sandbox.pty.sendInput(terminal.pid, data),
    (error) => io.stderr.write(`\r\nerror: ${error instanceof Error ? error.message : String(error)}\r\n`),
  );
  const onInput = (chunk: Buffer | string) => forwarder.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  const onEnd = () => forwarder.push(END_OF_INPUT);
  const onResize = () => void sandbox.pty.resize(terminal.pid, size()).catch(() => undefined);
  return withEndingSignals(
    () => void sandbox.pty.kill(terminal.pid).catch(() => undefined),
    async () => {
      try {
        if (raw) io.stdin.setRawMode?.(true);
        if (options.interactive) {
          io.stdin.on("data", onInput);
          io.stdin.on("end", onEnd);
          io.stdin.resume();
        }
        io.stdout.on("resize", onResize);
        return exitCodeOf(await resultOf(terminal.wait()));
      } finally {
        io.stdout.removeListener("resize", onResize);
        io.stdin.removeListener("data", onInput);
        io.stdin.removeListener("end", onEnd);
        io.stdin.pause();
        if (raw) io.stdin.setRawMode?.(false);
      }
    },
  );
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
  const forwarder = new InputForwarder(
    (data) => handle.sendStdin(data),
    (error) => io.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`),
  );
  const onInput = (chunk: Buffer | string) => forwarder.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
  const onEnd = () =>
    void forwarder
      .drained()
      .then(() => handle.closeStdin())
      .catch(() => undefined);
  return withEndingSignals(
    () => void handle.kill().catch(() => undefined),
    async () => {
      try {
        io.stdin.on("data", onInput);
        io.stdin.on("end", onEnd);
        io.stdin.resume();
        return exitCodeOf(await resultOf(handle.wait()));
      } finally {
        io.stdin.removeListener("data", onInput);
        io.stdin.removeListener("end", onEnd);
        io.stdin.pause();
      }
    },
  );
}

/**
 * Runs `session` with handlers for the signals that end the CLI: they kill the command in the
 * sandbox (`kill`), and the CLI then exits as killed by that signal (128 + its number).
 */
async function withEndingSignals(kill: () => void, session: () => Promise<number>): Promise<number> {
  let received: string | undefined;
  const handlers = ENDING_SIGNALS.map((signal) => {
    const handler = () => {
      received = signal;
      kill();
    };
    process.on(signal, handler);
    return [signal, handler] as const;
  });
  try {
    const code = await session();
    return received ? 128 + (SIGNAL_NUMBERS[received] ?? 0) : code;
  } finally {
    for (const [signal, handler] of handlers) process.removeListener(signal, handler);
  }
}
