/**
 * A child process kept running: when it exits without being asked to, it is spawned again after a
 * delay that doubles with each restart in a row (up to a maximum) and starts from the first delay
 * again after a stable run: one of `stableRunMs` from its spawn, or (`stableRunFrom: "healthy"`) from
 * when its owner first said it is healthy, so that a process that answers and then crashes soon
 * after is restarted ever more slowly instead of every `restartDelayMs`. A spawn that
 * fails (ENOENT, EAGAIN, or a throw of the owner's `spawn`) is a run that ended at once, restarted
 * the same way. `stop()` closes its stdin and sends SIGTERM, then SIGKILL when it has not exited
 * after a grace period; `holdRestarts()` lets a process that exits stay gone while its owner is
 * shutting down, before it gets to `stop()`. Every delay runs on the Clock. The embedded mode's
 * agents and janitor are supervised this way.
 */
import type { ChildProcess } from "node:child_process";
import { systemClock, type Clock, type Timer } from "../controller/clock.js";

/** How a run of the process ended. */
export interface SupervisedExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** `code 1`, `SIGKILL` or `spawn failed: …`, for messages. */
  reason: string;
  /** How long the run lasted, on the clock. */
  ranMs: number;
  /** The delay before the next run; undefined when the process exited because it was stopped, or restarts are held. */
  restartInMs: number | undefined;
  /** Why the process did not start (then `code` and `signal` are null). @default undefined: it ran */
  error?: Error;
}

export interface SupervisedProcessOptions {
  /**
   * Spawns one run of the process (at `start()` and at every restart) and wires its output; the
   * supervisor only watches its exit and signals it. A throw counts as a run that failed to start.
   */
  spawn(): ChildProcess;
  /** Called after every exit of the process, before its restart is scheduled. @default nothing */
  onExit?(exit: SupervisedExit): void;
  /** Delay before the first restart; it doubles with each restart in a row. @default 500 */
  restartDelayMs?: number;
  /** The longest delay between restarts. @default 30_000 */
  maxRestartDelayMs?: number;
  /** A run at least this long resets the restart delay to `restartDelayMs`. @default 30_000 */
  stableRunMs?: number;
  /**
   * Where a stable run is measured from: its spawn, or its first `markHealthy()` (a run never
   * marked healthy is never stable then; a process that starts slowly is not stable for that).
   * @default "spawn"
   */
  stableRunFrom?: "spawn" | "healthy";
  /** How long `stop()` waits after SIGTERM before it sends SIGKILL. @default 5000 */
  stopGraceMs?: number;
  /** @default systemClock */
  clock?: Clock;
}

const DEFAULTS = { restartDelayMs: 500, maxRestartDelayMs: 30_000, stableRunMs: 30_000, stopGraceMs: 5000 };

/** One run: the process (none when the spawn threw), when it ended, and since when it is healthy. */
interface Run {
  child: ChildProcess | undefined;
  ended: Promise<void>;
  healthySinceMs?: number;
}

export class SupervisedProcess {
  private readonly options: SupervisedProcessOptions;
  private readonly clock: Clock;
  private readonly restartDelayMs: number;
  private readonly maxRestartDelayMs: number;
  private readonly stableRunMs: number;
  private readonly stableRunFrom: "spawn" | "healthy";
  private readonly stopGraceMs: number;
  private current: Run | undefined;
  private restartTimer: Timer | undefined;
  private consecutiveRestarts = 0;
  private stopping = false;
  /** Set by holdRestarts(): a run that ends is not followed by another. */
  private restartsHeld = false;

  constructor(options: SupervisedProcessOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.restartDelayMs = options.restartDelayMs ?? DEFAULTS.restartDelayMs;
    this.maxRestartDelayMs = options.maxRestartDelayMs ?? DEFAULTS.maxRestartDelayMs;
    this.stableRunMs = options.stableRunMs ?? DEFAULTS.stableRunMs;
    this.stableRunFrom = options.stableRunFrom ?? "spawn";
    this.stopGraceMs = options.stopGraceMs ?? DEFAULTS.stopGraceMs;
  }

  /** pid of the running process; undefined between runs. */
  get pid(): number | undefined {
    return this.current?.child?.pid;
  }

  /** Restarts in a row since the last stable run (the exponent of the back-off). */
  get restarts(): number {
    return this.consecutiveRestarts;
  }

  /** Spawns the process and supervises it from now on (again after `stop()`); nothing while it runs. */
  start(): void {
    if (this.current) return;
    this.stopping = false;
    this.restartsHeld = false;
    this.restartTimer?.cancel();
    this.restartTimer = undefined;
    this.run();
  }

  /** The next restart waits `restartDelayMs` again, whatever the runs before. */
  resetBackoff(): void {
    this.consecutiveRestarts = 0;
  }

  /**
   * The running process is healthy (e.g. it answered); with `stableRunFrom: "healthy"`, the run is
   * stable once it has lasted `stableRunMs` past the first such call. Nothing between runs.
   */
  markHealthy(): void {
    if (this.current && this.current.healthySinceMs === undefined) this.current.healthySinceMs = this.clock.now().getTime();
  }

  /**
   * From now on a run that ends is not followed by another (a restart already scheduled is
   * cancelled); the running process runs on until it exits or `stop()` ends it. For an owner that is
   * shutting down: a process it restarted now would only be stopped again while it starts.
   */
  holdRestarts(): void {
    this.restartsHeld = true;
    this.restartTimer?.cancel();
    this.restartTimer = undefined;
  }

  /** Signals the running process; unless stopped, the supervisor restarts it once it exits. */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.current?.child?.kill(signal);
  }

  /**
   * Stops supervising: closes the process's stdin, sends SIGTERM, then SIGKILL after `stopGraceMs`;
   * resolves once no process of it is alive (at once between runs, or when the spawn failed).
   */
  async stop(): Promise<void> {
    this.stopping = true;
    this.restartTimer?.cancel();
    this.restartTimer = undefined;
    const run = this.current;
    if (!run) return;
    run.child?.stdin?.end();
    run.child?.kill("SIGTERM");
    const escalation = this.clock.setTimeout(() => run.child?.kill("SIGKILL"), this.stopGraceMs);
    await run.ended;
    escalation.cancel();
  }

  private run(): void {
    const startedAtMs = this.clock.now().getTime();
    let markEnded!: () => void;
    const run: Run = { child: undefined, ended: new Promise<void>((resolve) => (markEnded = resolve)) };
    this.current = run;
    let done = false;
    const end = (code: number | null, signal: NodeJS.Signals | null, error?: Error): void => {
      if (done) return;
      done = true;
      if (this.current === run) this.current = undefined;
      markEnded();
      this.ended({ code, signal, startedAtMs, healthySinceMs: run.healthySinceMs, ...(error ? { error } : {}) });
    };
    try {
      run.child = this.options.spawn();
    } catch (error) {
      // Reported on the next tick, as Node reports a spawn's ENOENT: never inside start().
      process.nextTick(() => end(null, null, asError(error)));
      return;
    }
    const child = run.child;
    child.once("exit", (code, signal) => end(code, signal));
    child.on("error", (error) => {
      // Without a pid the process never started (ENOENT, EAGAIN, EACCES) and no 'exit' follows; with
      // one, a kill() failed and the process runs on until its 'exit'.
      if (child.pid === undefined) end(null, null, error);
    });
    // A pipe of a process that died fails (EPIPE when stop() closes its stdin); its owner reads what
    // arrived, and the run ends with the process's 'exit', not with its pipes.
    for (const pipe of [child.stdin, child.stdout, child.stderr]) pipe?.on("error", () => undefined);
  }

  private ended(run: { code: number | null; signal: NodeJS.Signals | null; startedAtMs: number; healthySinceMs: number | undefined; error?: Error }): void {
    const { code, signal, error } = run;
    const endedAtMs = this.clock.now().getTime();
    const ranMs = endedAtMs - run.startedAtMs;
    const reason = error ? `spawn failed: ${error.message}` : (signal ?? `code ${String(code)}`);
    const failure = error ? { error } : {};
    if (this.stopping || this.restartsHeld) {
      this.options.onExit?.({ code, signal, reason, ranMs, restartInMs: undefined, ...failure });
      return;
    }
    const stableSinceMs = this.stableRunFrom === "spawn" ? run.startedAtMs : run.healthySinceMs;
    if (stableSinceMs !== undefined && endedAtMs - stableSinceMs >= this.stableRunMs) this.consecutiveRestarts = 0;
    const restartInMs = Math.min(this.maxRestartDelayMs, this.restartDelayMs * 2 ** Math.min(this.consecutiveRestarts, 30));
    this.consecutiveRestarts += 1;
    this.options.onExit?.({ code, signal, reason, ranMs, restartInMs, ...failure });
    if (this.stopping || this.restartsHeld) return;
    this.restartTimer = this.clock.setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.stopping && !this.restartsHeld && !this.current) this.run();
    }, restartInMs);
  }
}

function asError(thrown: unknown): Error {
  return thrown instanceof Error ? thrown : new Error(String(thrown));
}
