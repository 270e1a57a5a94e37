/**
 * `fsb exec -it` and `fsb shell`: a command in a pseudo-terminal of the sandbox's daemon, wired to
 * this terminal — raw mode (every key, Ctrl-C included, goes to the sandbox), the window size at the
 * start and at every resize (SIGWINCH), the terminal's output as it comes, and the command's exit
 * code as the CLI's. `fsb exec -i` without `-t` pipes stdin to a command without a terminal.
 */
import { FsbError } from "@fast-sandbox/api";
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
/** The numbers of the signals that end the CLI (the same on Linux and macOS). */
const ENDING_SIGNAL_NUMBERS: Record<(typeof ENDING_SIGNALS)[number], number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };
/**
 * The names envd gives the signal that killed a command (Go's `os.ProcessState.String()`: "signal: "
 * and syscall.Signal's name, linux/amd64's table, then " (core dumped)" when it dumped core), by number.
 * A signal without a name there (a real-time one) is "signal N".
 */
const GO_SIGNAL_NAMES: readonly string[] = [
  "",
  "hangup",
  "interrupt",
  "quit",
  "illegal instruction",
  "trace/breakpoint trap",
  "aborted",
  "bus error",
  "floating point exception",
  "killed",
  "user defined signal 1",
  "segmentation fault",
  "user defined signal 2",
  "broken pipe",
  "alarm clock",
  "terminated",
  "stack fault",
  "child exited",
  "continued",
  "stopped (signal)",
  "stopped",
  "stopped (tty input)",
  "stopped (tty output)",
  "urgent I/O condition",
  "CPU time limit exceeded",
  "file size limit exceeded",
  "virtual timer expired",
  "profiling timer expired",
  "window changed",
  "I/O possible",
  "power failure",
  "bad system call",
];
/** The same signals by their C names (SIGSEGV), Linux's numbers: the sandbox runs Linux. */
const LINUX_SIGNAL_NAMES: readonly string[] = [
  "",
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGILL",
  "SIGTRAP",
  "SIGABRT",
  "SIGBUS",
  "SIGFPE",
  "SIGKILL",
  "SIGUSR1",
  "SIGSEGV",
  "SIGUSR2",
  "SIGPIPE",
  "SIGALRM",
  "SIGTERM",
  "SIGSTKFLT",
  "SIGCHLD",
  "SIGCONT",
  "SIGSTOP",
  "SIGTSTP",
  "SIGTTIN",
  "SIGTTOU",
  "SIGURG",
  "SIGXCPU",
  "SIGXFSZ",
  "SIGVTALRM",
  "SIGPROF",
  "SIGWINCH",
  "SIGIO",
  "SIGPWR",
  "SIGSYS",
];
const SIGNAL_NUMBERS = new Map<string, number>([
  ...GO_SIGNAL_NAMES.map((name, number) => [name.toLowerCase(), number] as const),
  ...LINUX_SIGNAL_NAMES.map((name, number) => [name.toLowerCase(), number] as const),
  ["sigiot", 6],
  ["sigpoll", 29],
]);
SIGNAL_NUMBERS.delete("");

/** The number of the signal a command died of, from envd's wording ("signal: segmentation fault (core dumped)"); undefined: none read. */
export function signalNumberOf(error: string): number | undefined {
  const match = /\bsignal: ([^\n]+)/.exec(error);
  if (!match) return undefined;
  const name = match[1]!
    .trim()
    .replace(/ \(core dumped\)$/, "")
    .toLowerCase();
  const numbered = /^(?:signal )?(\d+)$/.exec(name);
  const number = numbered ? Number(numbered[1]) : SIGNAL_NUMBERS.get(name);
  // 128 + n must be an exit code: Linux's signals go up to 64.
  return number !== undefined && number >= 1 && number <= 127 ? number : undefined;
}

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
  const number = signalNumberOf(result.error ?? "");
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
/** How long a failed send waits for the command's end before deciding it still runs (and killing it). */
export const INPUT_FAILURE_END_WAIT_MS = 1_000;

/**
 * Whether a failed send says the command no longer takes input: it closed its stdin or ended (a
 * `head` that had what it needed), as envd reports it. Input then just stops, as in a pipeline.
 */
function stoppedReading(error: unknown): boolean {
  if (!(error instanceof FsbError)) return false;
  if (error.code === "failed_precondition") return /stdin was closed|no longer reads its input/.test(error.message);
  return error.code === "not_found" && /no such process/.test(error.message);
}

/**
 * Sends `io.stdin` to the command (`send`, through an InputForwarder) until it ends (`onEnd`) or a
 * send fails: then reading stops. A command that ended (`ended` settles soon after) or stopped
 * reading its input is left to end on its own, quietly, with its own exit code (`yes | head -1`);
 * one that still runs is killed (`kill`) rather than left to read an input with a gap or to wait
 * for the rest of it, the failure is reported, and `exitCode` makes the CLI's exit code non-zero.
 */
function forwardStdin(
  io: TerminalIo,
  send: (data: Uint8Array) => Promise<void>,
  options: {
    kill: () => Promise<void>;
    onEnd: (forwarder: InputForwarder) => void;
    report: (message: string) => void;
    /** Settles when the command has ended. */
    ended: Promise<unknown>;
  },
): { start: () => void; stop: () => void; exitCode: (result: CommandResult) => number } {
  let killed = false;
  const onError = async (error: unknown) => {
    stop();
    if (stoppedReading(error)) return;
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      options.ended.then(
        () => true,
        () => true,
      ),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), INPUT_FAILURE_END_WAIT_MS))),
    ]);
    clearTimeout(timer);
    if (ended) return;
    killed = true;
    options.report(
      `error: the input could not be sent to the command (${error instanceof Error ? error.message : String(error)}); ` +
        "it is killed, as the rest of its input would not reach it",
    );
    await options.kill();
  };
  const forwarder = new InputForwarder(send, (error) => void onError(error), io.stdin);
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
    exitCode: (result) => (killed && result.exitCode < 0 ? EXIT_INPUT_FAILED : exitCodeOf(result)),
  };
}

/** Runs the command in a terminal of the sandbox, wired to `io`; resolves with the exit code for the CLI. */
export async function runInTerminal(sandbox: FastSandbox, options: TerminalSessionOptions, io: TerminalIo): Promise<number> {
  const size = () => (io.stdout.isTTY && io.stdout.columns && io.stdout.rows ? { cols: io.stdout.columns, rows: io.stdout.rows } : DEFAULT_SIZE);
  // Listening from before the terminal is made: a resize while it is made is sent once it is.
  let pid: number | undefined;
  const onResize = () => {
    if (pid !== undefined) void sandbox.pty.resize(pid, size()).catch(() => undefined);
  };
  io.stdout.on("resize", onResize);
  try {
    const initial = size();
    const terminal = await sandbox.pty.create({
      ...initial,
      ...(options.command ? { command: options.command } : {}),
      envs: options.envs,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      ...(options.user ? { user: options.user } : {}),
      timeoutMs: 0,
      onData: (data) => io.stdout.write(data),
    });
    pid = terminal.pid;
    const now = size();
    if (now.cols !== initial.cols || now.rows !== initial.rows) onResize();
    const raw = options.interactive && io.stdin.isTTY === true && typeof io.stdin.setRawMode === "function";
    const kill = () =>
      sandbox.pty.kill(terminal.pid).then(
        () => undefined,
        () => undefined,
      );
    const result = resultOf(terminal.wait());
    result.catch(() => undefined);
    const input = forwardStdin(io, (data) => sandbox.pty.sendInput(terminal.pid, data), {
      kill,
      onEnd: (forwarder) => forwarder.push(END_OF_INPUT),
      report: (message) => io.stderr.write(`\r\n${message}\r\n`),
      ended: result,
    });
    return await withEndingSignals(kill, async () => {
      try {
        if (raw) io.stdin.setRawMode?.(true);
        if (options.interactive) input.start();
        return input.exitCode(await result);
      } finally {
        input.stop();
        if (raw) io.stdin.setRawMode?.(false);
      }
    });
  } finally {
    io.stdout.removeListener("resize", onResize);
  }
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
  const result = resultOf(handle.wait());
  result.catch(() => undefined);
  const input = forwardStdin(io, (data) => handle.sendStdin(data), {
    kill,
    ended: result,
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
      return input.exitCode(await result);
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
  let received: (typeof ENDING_SIGNALS)[number] | undefined;
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
    return received ? 128 + ENDING_SIGNAL_NUMBERS[received] : code;
  } catch (error) {
    await kill();
    throw error;
  } finally {
    unregister();
    for (const [signal, handler] of handlers) process.removeListener(signal, handler);
  }
}
