/**
 * The `Clock` port: the current time and timers. Everything in the control plane that reads the
 * time or waits (timed requeues, back-off, heartbeats, restarts of child processes, a create waiting
 * for capacity) does so through a Clock, so tests replace real time with a `FakeClock` and move it
 * explicitly instead of sleeping. `sleep` and `every` are the promise and interval forms.
 */

/** A scheduled callback; `cancel()` is safe to call after it fired or twice. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Wall-clock time: what is written (a Lease's renewTime, a status's timestamps) and compared with other machines' times. */
  now(): Date;
  /**
   * Milliseconds on a clock that only moves forward at the rate time passes (performance.now()):
   * what an elapsed time that must not follow a step of the wall clock (NTP, an operator's `date`)
   * is measured with — a Lease's expiry, a leader's renew deadline. Its origin means nothing; only
   * differences do. Optional: `monotonicMs(clock)` falls back to `now()` for a clock without it.
   */
  monotonicMs?(): number;
  /** Calls `callback` once, `delayMs` from now (0 or less: as soon as possible, never synchronously). */
  setTimeout(callback: () => void, delayMs: number): Timer;
}

/** The longest delay Node's setTimeout honours; a longer one would fire after 1 ms. */
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

/**
 * Real time. Its timers do not keep the process alive (the servers do), and delays beyond Node's
 * limit of ~24.8 days (a sandbox that expires in a month) are honoured by re-arming.
 */
export const systemClock: Clock = {
  now: () => new Date(),
  monotonicMs: () => performance.now(),
  setTimeout(callback: () => void, delayMs: number): Timer {
    let handle: NodeJS.Timeout | undefined;
    const arm = (remainingMs: number): void => {
      const stepMs = Math.min(Math.max(0, remainingMs), MAX_TIMER_DELAY_MS);
      handle = setTimeout(() => {
        if (remainingMs > stepMs) arm(remainingMs - stepMs);
        else callback();
      }, stepMs);
      handle.unref();
    };
    arm(delayMs);
    return { cancel: () => clearTimeout(handle) };
  },
};

/** The clock's monotonic reading (Clock.monotonicMs), or its wall-clock time for a clock that has none. */
export function monotonicMs(clock: Clock): number {
  return clock.monotonicMs?.() ?? clock.now().getTime();
}

/** What an aborted wait rejects with: the signal's reason (by default an AbortError), as an Error. */
function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new Error(`aborted: ${String(reason)}`, { cause: reason });
}

/**
 * Resolves `delayMs` from now on `clock`. Aborting `signal` cancels the wait and rejects with the
 * signal's reason.
 */
export function sleep(clock: Clock, delayMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const aborted = (): void => {
      timer.cancel();
      if (signal) reject(abortError(signal));
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener("abort", aborted);
      resolve();
    }, delayMs);
    signal?.addEventListener("abort", aborted, { once: true });
  });
}

/**
 * Calls `callback` every `intervalMs` on `clock` (the first time one interval from now; at least
 * 1 ms apart, as `setInterval`), until the returned timer is cancelled — also from inside `callback`.
 */
export function every(clock: Clock, intervalMs: number, callback: () => void): Timer {
  const periodMs = Math.max(1, intervalMs);
  let current: Timer | undefined;
  let cancelled = false;
  const arm = (): void => {
    current = clock.setTimeout(() => {
      if (cancelled) return;
      // Armed before the call: a callback that cancels cancels the next one.
      arm();
      callback();
    }, periodMs);
  };
  arm();
  return {
    cancel: () => {
      cancelled = true;
      current?.cancel();
    },
  };
}

/** One turn of the event loop: the promise callbacks pending now, and those they queue, run first. */
const nextTurn = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));

interface FakeTimer {
  dueAtMs: number;
  /** Creation order: timers due at the same moment fire in the order they were set. */
  sequence: number;
  callback: () => void;
}

/**
 * Time that moves only when told to. `advance(ms)` fires every timer that falls due within the
 * step, in due order, with `now()` set to each timer's due time while it runs; timers set by those
 * callbacks fire too when they fall inside the step. `advance` moves the wall clock (`now()`) and
 * the monotonic one (`monotonicMs()`) together; `stepWallClock(ms)` moves the wall clock alone, as
 * NTP or an operator does, and the timers (monotonic, like Node's) keep their due times.
 */
export class FakeClock implements Clock {
  /** The monotonic time; the wall clock is this plus `wallOffsetMs`. */
  private currentMs: number;
  private wallOffsetMs = 0;
  private nextSequence = 0;
  private readonly timers = new Set<FakeTimer>();

  /** @default 2026-01-01T00:00:00.000Z */
  constructor(start: Date = new Date("2026-01-01T00:00:00.000Z")) {
    this.currentMs = start.getTime();
  }

  now(): Date {
    return new Date(this.currentMs + this.wallOffsetMs);
  }

  monotonicMs(): number {
    return this.currentMs;
  }

  /** Steps the wall clock alone by `ms` (either way): `now()` jumps, `monotonicMs()` and the timers do not. */
  stepWallClock(ms: number): void {
    this.wallOffsetMs += ms;
  }

  setTimeout(callback: () => void, delayMs: number): Timer {
    const timer: FakeTimer = { dueAtMs: this.currentMs + Math.max(0, delayMs), sequence: this.nextSequence++, callback };
    this.timers.add(timer);
    return { cancel: () => this.timers.delete(timer) };
  }

  /** Moves time forward by `ms`, firing the timers that fall due on the way. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`FakeClock.advance: ${ms} ms; time only moves forward`);
    const targetMs = this.currentMs + ms;
    for (let timer = this.nextDue(targetMs); timer; timer = this.nextDue(targetMs)) {
      this.timers.delete(timer);
      this.currentMs = timer.dueAtMs;
      timer.callback();
    }
    this.currentMs = targetMs;
  }

  /**
   * `advance` for code that awaits between timers: before each timer fires, and once at the end,
   * the event loop turns once, so the promise callbacks a timer woke run (with `now()` still at that
   * timer's time) and the timers they set fire too when they fall inside the step.
   */
  async advanceAsync(ms: number): Promise<void> {
    if (!(ms >= 0)) throw new RangeError(`FakeClock.advanceAsync: ${ms} ms; time only moves forward`);
    const targetMs = this.currentMs + ms;
    for (;;) {
      await nextTurn();
      const timer = this.nextDue(targetMs);
      if (!timer) break;
      this.timers.delete(timer);
      this.currentMs = timer.dueAtMs;
      timer.callback();
    }
    this.currentMs = Math.max(this.currentMs, targetMs);
    await nextTurn();
  }

  /** Timers set and not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /** When the earliest pending timer falls due, if any. */
  nextTimerAt(): Date | undefined {
    const timer = this.nextDue(Number.POSITIVE_INFINITY);
    return timer ? new Date(timer.dueAtMs + this.wallOffsetMs) : undefined;
  }

  private nextDue(limitMs: number): FakeTimer | undefined {
    let earliest: FakeTimer | undefined;
    for (const timer of this.timers) {
      if (timer.dueAtMs > limitMs) continue;
      if (!earliest || timer.dueAtMs < earliest.dueAtMs || (timer.dueAtMs === earliest.dueAtMs && timer.sequence < earliest.sequence)) earliest = timer;
    }
    return earliest;
  }
}
