/**
 * A running command (or terminal) in a sandbox: its pid, its output as it arrives, and what it
 * ended with. Made by `commands.run(…, { background: true })`, `commands.connect(pid)`,
 * `pty.create()` and `pty.connect(pid)`; it reads the daemon's event stream from the moment it
 * exists, so no output is lost between the start and the first `wait()`.
 */
import { FailedPreconditionError, TimeoutError, UnavailableError } from "@fast-sandbox/api/core";
import { CommandExitError, type CommandResult } from "./errors.js";
import type { ProcessEvent } from "./gen/envd/process/process_pb.js";
import type { RequestOptions } from "./request-options.js";

/** What a handle needs from the module that made it. */
export interface CommandHandleInit {
  pid: number;
  /** The rest of the daemon's event stream, after the start event. */
  events: AsyncIterator<ProcessEvent>;
  /** For messages: e.g. "command `ls /` in sandbox sb-1". */
  description: string;
  /**
   * When the daemon kills the process for its `timeoutMs` (Start's deadline). A kill that ends it
   * from then on is that timeout — its end event may arrive before the client's own deadline fires.
   */
  deadline?: { atMs: number; timeoutMs: number };
  /** Translates what the stream throws (timeouts, the caller's abort, daemon errors). */
  translate: (error: unknown) => Error;
  /** Stops receiving events without stopping the process. */
  disconnect: () => void;
  kill: (options?: RequestOptions) => Promise<boolean>;
  sendStdin?: (data: Uint8Array, options?: RequestOptions) => Promise<void>;
  closeStdin?: (options?: RequestOptions) => Promise<void>;
  onStdout?: ((data: string) => void) | undefined;
  onStderr?: ((data: string) => void) | undefined;
  /** stdout and stderr as raw bytes, before decoding. */
  onRawOutput?: ((stream: "stdout" | "stderr", data: Uint8Array) => void) | undefined;
  /** Terminal output (a PTY's one stream), as raw bytes. */
  onPty?: ((data: Uint8Array) => void) | undefined;
}

/** Timers of the daemon and of this process may fire a little apart. */
const DEADLINE_SLACK_MS = 20;

export class CommandHandle {
  /** The process id in the sandbox (for `commands.connect`, `commands.kill`, `pty.sendInput`). */
  readonly pid: number;
  private readonly init: CommandHandleInit;
  private stdoutText = "";
  private stderrText = "";
  private readonly stdoutDecoder = new TextDecoder();
  private readonly stderrDecoder = new TextDecoder();
  private result: CommandResult | undefined;
  private endedAtMs = 0;
  private failure: Error | undefined;
  private disconnected = false;
  private readonly finished: Promise<void>;

  constructor(init: CommandHandleInit) {
    this.pid = init.pid;
    this.init = init;
    this.finished = this.receive();
  }

  /** The exit code once the command ended, else undefined. */
  get exitCode(): number | undefined {
    return this.result?.exitCode;
  }

  /** Everything it printed on stdout so far (a PTY's output goes to `onData` only). */
  get stdout(): string {
    return this.stdoutText;
  }

  get stderr(): string {
    return this.stderrText;
  }

  /**
   * Resolves with the result when the command exits with 0; rejects with a `CommandExitError`
   * (carrying the result) otherwise, with a `TimeoutError` when its `timeoutMs` passed (it was
   * killed), or with why the stream broke.
   */
  async wait(): Promise<CommandResult> {
    await this.finished;
    if (this.failure) throw this.failure;
    if (!this.result) {
      // The caller's own doing (as a closed handle is), or a stream cut short: neither is the daemon's fault.
      if (this.disconnected) {
        throw new FailedPreconditionError(`${this.init.description}: disconnected before it ended; commands.connect(${this.pid}) follows it again`);
      }
      throw new UnavailableError(`${this.init.description}: the daemon's stream ended without the process's end (the connection was cut)`);
    }
    const deadline = this.init.deadline;
    if (deadline && this.result.exitCode === -1 && this.endedAtMs >= deadline.atMs - DEADLINE_SLACK_MS) {
      throw new TimeoutError(
        `${this.init.description} did not finish within ${deadline.timeoutMs} ms (timeoutMs) and was killed; pass a larger timeoutMs, or 0 for no limit`,
      );
    }
    if (this.result.exitCode !== 0) throw new CommandExitError(this.result, this.init.description);
    return this.result;
  }

  /** Kills it (SIGKILL); resolves false when it no longer exists. */
  async kill(options?: RequestOptions): Promise<boolean> {
    return this.init.kill(options);
  }

  /** Writes to its stdin (the command must have been started with `stdin: true`). */
  async sendStdin(data: string | Uint8Array, options?: RequestOptions): Promise<void> {
    if (!this.init.sendStdin)
      throw new FailedPreconditionError(`${this.init.description} reads its terminal, not a stdin: use pty.sendInput(${this.pid}, data)`);
    await this.init.sendStdin(typeof data === "string" ? new TextEncoder().encode(data) : data, options);
  }

  /** Closes its stdin (end of file). */
  async closeStdin(options?: RequestOptions): Promise<void> {
    if (!this.init.closeStdin)
      throw new FailedPreconditionError(`${this.init.description} reads its terminal, not a stdin: send Ctrl-D (0x04) with pty.sendInput(${this.pid}, data)`);
    await this.init.closeStdin(options);
  }

  /** Stops receiving its output; the command keeps running (`commands.connect(pid)` follows it again). */
  disconnect(): void {
    this.disconnected = true;
    this.init.disconnect();
  }

  private async receive(): Promise<void> {
    try {
      for (;;) {
        const next = await this.init.events.next();
        if (next.done) break;
        const event = next.value.event;
        if (event.case === "data") this.output(event.value.output);
        if (event.case === "end") {
          this.endedAtMs = Date.now();
          this.flush();
          const end = event.value;
          this.result = {
            exitCode: end.exitCode,
            stdout: this.stdoutText,
            stderr: this.stderrText,
            ...(end.error !== undefined && end.error !== "" ? { error: end.error } : !end.exited && end.status ? { error: end.status } : {}),
          };
          // The daemon closes the stream right after the end event: reading to its end lets Connect release the call.
          try {
            while (!(await this.init.events.next()).done);
          } catch {
            // The result stands whatever happens to the stream after it.
          }
          break;
        }
      }
    } catch (error) {
      if (!this.disconnected) this.failure = this.init.translate(error);
    } finally {
      this.flush();
      this.init.disconnect();
    }
  }

  private output(output: DataOutput): void {
    switch (output.case) {
      case "stdout": {
        this.init.onRawOutput?.("stdout", output.value);
        const text = this.stdoutDecoder.decode(output.value, { stream: true });
        this.stdoutText += text;
        if (text) this.init.onStdout?.(text);
        break;
      }
      case "stderr": {
        this.init.onRawOutput?.("stderr", output.value);
        const text = this.stderrDecoder.decode(output.value, { stream: true });
        this.stderrText += text;
        if (text) this.init.onStderr?.(text);
        break;
      }
      case "pty":
        this.init.onPty?.(output.value);
        break;
      default:
        break;
    }
  }

  /** What the decoders still hold (an incomplete UTF-8 sequence at the end). */
  private flush(): void {
    const stdout = this.stdoutDecoder.decode();
    if (stdout) {
      this.stdoutText += stdout;
      this.init.onStdout?.(stdout);
    }
    const stderr = this.stderrDecoder.decode();
    if (stderr) {
      this.stderrText += stderr;
      this.init.onStderr?.(stderr);
    }
  }
}

type DataOutput = Extract<ProcessEvent["event"], { case: "data" }>["value"]["output"];
