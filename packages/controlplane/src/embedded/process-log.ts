/**
 * The log file of a supervised child process (`agent.log`, `janitor.log`): its stderr, and the lines
 * of its stdout that are not events, appended. Writing it never fails the control plane: when the
 * file cannot be written (ENOSPC, EIO, its directory removed), the control plane logs that once and
 * drops the output; the first write `reopenAfterMs` later opens the file again, and the outage ends
 * with the first write that lands. The child's stderr is read all along, so a child never blocks on
 * a full pipe because its log cannot be written.
 */
import { createWriteStream, type WriteStream } from "node:fs";
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
  /** @default systemClock */
  clock?: Clock;
}

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
  private stream: WriteStream | undefined;
  private outage: Outage | undefined;
  private closed = false;
  /** Resumes the sources paused until the file takes more (backpressure). */
  private readonly paused = new Set<() => void>();

  constructor(options: ProcessLogOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.reopenAfterMs = options.reopenAfterMs ?? 30_000;
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
      if (error || !this.outage || this.stream !== stream) return;
      const outageMs = this.clock.now().getTime() - this.outage.sinceMs;
      this.options.logger.info({ log: this.path, droppedBytes: this.outage.droppedBytes, outageMs }, "the log can be written again");
      this.outage = undefined;
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
    if (!stream) return;
    await new Promise<void>((resolve) => {
      finished(stream, () => resolve());
      stream.end();
    });
  }

  private writableStream(): WriteStream | undefined {
    if (this.stream || this.closed) return this.stream;
    if (this.outage && this.clock.now().getTime() - this.outage.lastFailureMs < this.reopenAfterMs) return undefined;
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

  private resumeSources(): void {
    const resumes = [...this.paused];
    this.paused.clear();
    for (const resume of resumes) resume();
  }
}
