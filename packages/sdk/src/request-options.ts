/**
 * What every call of the SDK accepts: a signal to stop it and a deadline for the request. Streams
 * (a command's output, a directory watch, a download) use the deadline until they start; how long
 * they may then last is their own `timeoutMs`.
 */
import { ValidationError } from "@fast-sandbox/api/core";

/** Options every call accepts. */
export interface RequestOptions {
  /** Stops the call; it then rejects with the signal's reason (an `AbortError` unless you gave another). */
  signal?: AbortSignal;
  /**
   * Deadline of the request in milliseconds (of a stream: until it started); 0 for none.
   * @default the connection's `requestTimeoutMs` (60000)
   */
  requestTimeoutMs?: number;
}

/** Header asking the daemon for a keepalive event this often (seconds) on an idle stream (E2B's name). */
export const KEEPALIVE_HEADER = "Keepalive-Ping-Interval";
/** Seconds between keepalives: well inside the idle timeouts of proxies in between. */
export const KEEPALIVE_SECONDS = 30;

/** Connect's `timeoutMs` for a deadline where 0 means none. */
export function deadline(timeoutMs: number): number | undefined {
  return timeoutMs > 0 ? timeoutMs : undefined;
}

/** Checks a duration option: a finite number of milliseconds, 0 or more. */
export function checkDuration(value: number | undefined, option: string): void {
  if (value === undefined) return;
  if (!Number.isFinite(value) || value < 0) throw new ValidationError(option, `${String(value)} is not a duration; give 0 or more milliseconds (0: no limit)`);
}

/**
 * A signal for the start of a stream: aborted by the caller's signal, or by `requestTimeoutMs`
 * passing before `started()` is called; `stop()` ends the stream later (disconnect, kill).
 */
export class StreamStart {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private timedOut = false;

  constructor(callerSignal: AbortSignal | undefined, requestTimeoutMs: number) {
    this.signal = callerSignal ? AbortSignal.any([callerSignal, this.controller.signal]) : this.controller.signal;
    if (requestTimeoutMs > 0) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.controller.abort();
      }, requestTimeoutMs);
    }
  }

  /** Whether `requestTimeoutMs` passed before the stream started. */
  get startTimedOut(): boolean {
    return this.timedOut;
  }

  started(): void {
    clearTimeout(this.timer);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.controller.abort();
  }
}
