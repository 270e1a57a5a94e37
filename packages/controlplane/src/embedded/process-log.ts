/**
 * The log file of a supervised child process (`agent.log`, `janitor.log`): its stderr, and the lines
 * of its stdout that are not events, appended. Writing it never fails the control plane: when the
 * file cannot be written (ENOSPC, EIO, its directory removed), the control plane logs that once and
 * drops the output; the first write `reopenAfterMs` later opens the file again, and the outage ends
 * with the first write that lands. The child's stderr is read all along, so a child never blocks on
 * a full pipe because its log cannot be written.
 *
 * The file is kept near `maxBytes`, as the agent keeps a sandbox's log: once a write takes it past
 * the limit, it is renamed to `<path>.1` (replacing the part before) and the next write opens a new
 * file. This log is the file's only writer, so a rename loses nothing: what was still queued lands
 * in `<path>.1` through the descriptor that is open already. (The agent's copy and truncate is for
 * files another process keeps open.) A file that is not a regular one, e.g. a symbolic link to
 * /dev/null someone put in its place, is never rotated.
 */
import { createWriteStream, lstatSync, renameSync, type WriteStream } from "node:fs";
import { finished, type Readable } from "node:stream";
import type { Logger } from "pino";
import { systemClock, type Clock } from "../controller/clock.js";

export interface ProcessLogOptions {
  /** The file, opened for appending (created when missing). */
  path: string;
  /** Where the control plane says that the file cannot be written, and when it can again. */
  logger: Logger;
  /** How long output is dropped after a write error before the file is opened again. @default 30_000 */
  reopenAfterMs?: number;
  /** A write that takes the file past this size rotates it to `<path>.1`. @default DEFAULT_PROCESS_LOG_MAX_BYTES (10 MiB) */
  maxBytes?: number;
  /** @default systemClock */
  clock?: Clock;
}

/** The default limit of a process's log file: the agent's default for a sandbox's log. */
export const DEFAULT_PROCESS_LOG_MAX_BYTES = 10 * 1024 * 1024;

/** While the file cannot be written: since when, the last failure, and what was dropped. */
interface Outage {
  sinceMs: number;
  lastFailureMs: number;
  droppedBytes: number;
}

export class ProcessLog {
  private readonly options: ProcessLogOptions;
  private readonly clock: Clock;
  private readonly reopenAfterMs: number;
  private readonly maxBytes: number;
  private stream: WriteStream | undefined;
  /** The size of the file the stream appends to, as far as its writes went; undefined: it is not rotated. */
  private sizeBytes: number | undefined;
  /** The streams of rotated files, until they have written what they held. */
  private readonly retiring = new Set<Promise<void>>();
  private outage: Outage | undefined;
  private closed = false;
  /** Resumes the sources paused until the file takes more (backpressure). */
  private readonly paused = new Set<() => void>();

  constructor(options: ProcessLogOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.reopenAfterMs = options.reopenAfterMs ?? 30_000;
    this.maxBytes = options.maxBytes ?? DEFAULT_PROCESS_LOG_MAX_BYTES;
    if (!Number.isInteger(this.maxBytes) || this.maxBytes <= 0) throw new RangeError(`maxBytes must be a positive whole number, got ${this.maxBytes}`);
  }

  get path(): string {
    return this.options.path;
  }

  /** Whether output is being dropped because the file cannot be written. */
  get failing(): boolean {
    return this.outage !== undefined;
  }

  /** Appends `chunk`, or drops it while the file cannot be written; false: wait for the file before writing more. */
  write(chunk: string | Uint8Array): boolean {
    const stream = this.writableStream();
    if (!stream) {
      if (this.outage) this.outage.droppedBytes += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.byteLength;
      return true;
    }
    return stream.write(chunk, (error) => {
      if (error || this.stream !== stream) return;
      if (this.outage) {
        const outageMs = this.clock.now().getTime() - this.outage.sinceMs;
        this.options.logger.info({ log: this.path, droppedBytes: this.outage.droppedBytes, outageMs }, "the log can be written again");
        this.outage = undefined;
      }
      if (this.sizeBytes === undefined) return;
      this.sizeBytes += typeof chunk === "string" ? Buffer.byteLength(chunk) : chunk.byteLength;
      if (this.sizeBytes > this.maxBytes) this.rotate(stream);
    });
  }

  /**
   * Appends everything `source` (a child's stderr) gives until it ends; pauses it while the file
   * takes no more, and never while output is dropped.
   */
  follow(source: Readable): void {
    source.on("error", (error: Error) => this.options.logger.warn({ err: error, log: this.path }, "reading a child process's output failed"));
    source.on("data", (chunk: Buffer) => {
      if (this.write(chunk)) return;
      source.pause();
      this.paused.add(() => source.resume());
    });
  }

  /** Flushes and closes the file; later writes are dropped. */
  async close(): Promise<void> {
    this.closed = true;
    const stream = this.stream;
    this.stream = undefined;
    this.resumeSources();
    if (stream) await endStream(stream);
    await Promise.all(this.retiring);
  }

  private writableStream(): WriteStream | undefined {
    if (this.stream || this.closed) return this.stream;
    if (this.outage && this.clock.now().getTime() - this.outage.lastFailureMs < this.reopenAfterMs) return undefined;
    this.sizeBytes = rotatableSize(this.path);
    // O_APPEND: every write lands at the end, whoever else appends or truncates the file.
    const stream = createWriteStream(this.path, { flags: "a" });
    stream.on("error", (error) => this.failed(stream, error));
    stream.on("drain", () => this.resumeSources());
    this.stream = stream;
    return stream;
  }

  private failed(stream: WriteStream, error: Error): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    stream.destroy();
    const nowMs = this.clock.now().getTime();
    if (this.outage) {
      this.outage.lastFailureMs = nowMs;
    } else {
      this.outage = { sinceMs: nowMs, lastFailureMs: nowMs, droppedBytes: 0 };
      this.options.logger.warn(
        { err: error, log: this.path, reopenAfterMs: this.reopenAfterMs },
        "cannot write the log; dropping its output until it can be written again",
      );
    }
    // What the stream held is lost with it; the sources it paused read on (and drop) until the file is back.
    this.resumeSources();
  }

  /** Moves the file to `<path>.1`; the stream writes what it holds there, and the next write opens a new file. */
  private rotate(stream: WriteStream): void {
    try {
      renameSync(this.path, `${this.path}.1`);
    } catch (error) {
      // ENOENT: removed meanwhile; the next write opens a new file, as after a rotation.
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
        this.options.logger.warn({ err: error, log: this.path }, "could not rotate the log; trying again once it has grown by its limit again");
        this.sizeBytes = 0;
        return;
      }
    }
    this.stream = undefined;
    const ended = endStream(stream).finally(() => this.retiring.delete(ended));
    this.retiring.add(ended);
    // Sources paused for the old stream write on to the new one.
    this.resumeSources();
  }

  private resumeSources(): void {
    const resumes = [...this.paused];
    this.paused.clear();
    for (const resume of resumes) resume();
  }
}

/** The size of the file at `path` when it can be rotated: a regular file (0 when missing); undefined otherwise. */
function rotatableSize(path: string): number | undefined {
  try {
    const stats = lstatSync(path);
    return stats.isFile() ? stats.size : undefined;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ENOENT" ? 0 : undefined;
  }
}

/** Ends `stream` and resolves once it has written what it held (or failed). */
function endStream(stream: WriteStream): Promise<void> {
  return new Promise<void>((resolve) => {
    finished(stream, () => resolve());
    stream.end();
  });
}
