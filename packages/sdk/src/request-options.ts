/**
 * What every call of the SDK accepts: a signal to stop it and a deadline for the request. Streams
 * (a command's output, a directory watch, a download) use the deadline until they start; how long
 * they may then last is their own `timeoutMs`.
 */
import { UnavailableError, ValidationError } from "@fast-sandbox/api/core";
import { abortReason } from "./errors.js";

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

/** How long a daemon stream may go without a response (a keepalive included) before it is taken for dead: two keepalives missed. */
export const STREAM_SILENCE_MS = 2 * KEEPALIVE_SECONDS * 1000;

/**
 * The responses of a daemon stream that asked for keepalives, ended with an UnavailableError once
 * none came for `silenceMs`: a connection that died without a word (a proxy or a NAT in between
 * dropped it) would otherwise be waited on for ever. `stop` aborts the call then.
 */
export async function* untilSilent<T>(responses: AsyncIterable<T>, stop: () => void, silenceMs = STREAM_SILENCE_MS): AsyncGenerator<T> {
  const iterator = responses[Symbol.asyncIterator]();
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const silent = new Promise<"silent">((resolve) => {
      timer = setTimeout(() => resolve("silent"), silenceMs);
    });
    const next = iterator.next();
    let result: IteratorResult<T> | "silent";
    try {
      result = await Promise.race([next, silent]);
    } finally {
      clearTimeout(timer);
    }
    if (result === "silent") {
      // The abandoned read rejects once the call is aborted: nobody waits for it any more.
      next.catch(() => undefined);
      stop();
      throw new UnavailableError(
        `the daemon's stream was silent for ${silenceMs / 1000} s, though it sends a keepalive every ${KEEPALIVE_SECONDS} s: the connection was lost`,
      );
    }
    if (result.done) return;
    yield result.value;
  }
}

/**
 * `shared` — work several callers wait for, started without any caller's signal — for one caller:
 * rejects with the reason of its `signal` when that aborts first, leaving `shared` to the others.
 */
export function untilAborted<T>(shared: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return shared;
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const aborted = () => reject(abortReason(signal));
    signal.addEventListener("abort", aborted, { once: true });
    shared.then(resolve, reject).finally(() => signal.removeEventListener("abort", aborted));
  });
}

/** The longest delay Node's timers keep (~24.8 days): a longer one fires after 1 ms, with a TimeoutOverflowWarning. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Connect's `timeoutMs` for a deadline where 0 means none (and so does one longer than a timer can wait: see `duration`). */
export function deadline(timeoutMs: number): number | undefined {
  return timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS ? Math.ceil(timeoutMs) : undefined;
}

/** Checks a duration option: a finite number of milliseconds, 0 or more. */
export function checkDuration(value: number | undefined, option: string): void {
  if (value === undefined) return;
  if (!Number.isFinite(value) || value < 0) throw new ValidationError(option, `${String(value)} is not a duration; give 0 or more milliseconds (0: no limit)`);
}

/**
 * A deadline option where 0 means no limit (`requestTimeoutMs`, a command's, watch's or terminal's
 * `timeoutMs`), checked and made usable: whole milliseconds, a fraction rounded up (the daemon and
 * the control plane refuse a `Connect-Timeout-Ms` of `1500.5`), and one longer than a timer can
 * wait (`MAX_TIMER_MS`, ~24.8 days) taken as no limit, 0: Node would fire its timer — and Connect
 * its deadline — after 1 ms.
 */
export function duration(value: number, option: string): number;
export function duration(value: number | undefined, option: string): number | undefined;
export function duration(value: number | undefined, option: string): number | undefined {
  checkDuration(value, option);
  if (value === undefined) return undefined;
  return value > MAX_TIMER_MS ? 0 : Math.ceil(value);
}

/**
 * A signal for the start of a stream: aborted by the caller's signal, or by `requestTimeoutMs`
 * passing before `started()` is called (after a grace, with `deferAborts`); `stop()` ends the stream
 * later (disconnect, kill).
 *
 * The caller's signal is linked by hand, its listener removed at `stop()`, not with
 * `AbortSignal.any`: on Node 20 a signal made by `any` stays tied to its sources until they are
 * collected, so a long-lived caller signal (an app's shutdown signal, passed to every call) kept one
 * per call for ever — every daemon call and every 50 ms poll of a create's readiness wait.
 */
export class StreamStart {
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private timedOut = false;
  private unlink: (() => void) | undefined;
  /** `deferAborts`' grace: how long an abort before `started()` waits; 0 aborts at once. */
  private graceMs = 0;
  private graceTimer: NodeJS.Timeout | undefined;
  private deferred = false;

  constructor(callerSignal: AbortSignal | undefined, requestTimeoutMs: number) {
    this.signal = this.controller.signal;
    if (callerSignal?.aborted) {
      this.controller.abort(callerSignal.reason);
    } else if (callerSignal) {
      const follow = () => this.abort(callerSignal.reason);
      callerSignal.addEventListener("abort", follow, { once: true });
      this.unlink = () => callerSignal.removeEventListener("abort", follow);
    }
    // Longer than a timer can wait is no limit (`duration`); a wait's own arithmetic may give one.
    if (requestTimeoutMs > 0 && requestTimeoutMs <= MAX_TIMER_MS) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        this.abort(undefined);
      }, requestTimeoutMs);
    }
  }

  /** Whether `requestTimeoutMs` passed before the stream started. */
  get startTimedOut(): boolean {
    return this.timedOut;
  }

  /**
   * From now until `started()`, the caller's abort or `requestTimeoutMs` ends the stream only after
   * `graceMs` (`abortDeferred` tells it came): for a request that may already have started something
   * the caller will need to know of to undo — a process, whose pid comes with the start.
   */
  deferAborts(graceMs: number): void {
    this.graceMs = graceMs;
  }

  /** Whether an abort came after `deferAborts` and before `started()` (the stream ends at its grace's end). */
  get abortDeferred(): boolean {
    return this.deferred;
  }

  started(): void {
    clearTimeout(this.timer);
    this.graceMs = 0;
  }

  stop(): void {
    clearTimeout(this.timer);
    clearTimeout(this.graceTimer);
    this.unlink?.();
    this.unlink = undefined;
    this.controller.abort();
  }

  private abort(reason: unknown): void {
    if (this.graceMs <= 0) {
      this.controller.abort(reason);
      return;
    }
    if (this.deferred) return;
    this.deferred = true;
    this.graceTimer = setTimeout(() => this.controller.abort(reason), this.graceMs);
  }
}
