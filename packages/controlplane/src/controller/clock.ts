/**
 * The `Clock` port: the current time and timers. Everything in the controller layer that waits
 * (timed requeues, back-off, relists) waits through a Clock, so tests replace real time with a
 * `FakeClock` and move it explicitly instead of sleeping.
 */

/** A scheduled callback; `cancel()` is safe to call after it fired or twice. */
export interface Timer {
  cancel(): void;
}

export interface Clock {
  now(): Date;
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

interface FakeTimer {
  dueAtMs: number;
  /** Creation order: timers due at the same moment fire in the order they were set. */
  sequence: number;
  callback: () => void;
}

/**
 * Time that moves only when told to. `advance(ms)` fires every timer that falls due within the
 * step, in due order, with `now()` set to each timer's due time while it runs; timers set by those
 * callbacks fire too when they fall inside the step.
 */
export class FakeClock implements Clock {
  private currentMs: number;
  private nextSequence = 0;
  private readonly timers = new Set<FakeTimer>();

  /** @default 2026-01-01T00:00:00.000Z */
  constructor(start: Date = new Date("2026-01-01T00:00:00.000Z")) {
    this.currentMs = start.getTime();
  }

  now(): Date {
    return new Date(this.currentMs);
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

  /** Timers set and not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /** When the earliest pending timer falls due, if any. */
  nextTimerAt(): Date | undefined {
    const timer = this.nextDue(Number.POSITIVE_INFINITY);
    return timer ? new Date(timer.dueAtMs) : undefined;
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
