/**
 * A child process kept running: when it exits without being asked to, it is spawned again after a
 * delay that doubles with each restart in a row (up to a maximum) and starts from the first delay
 * again after a run of `stableRunMs`, or when its owner says the process is healthy. `stop()` closes
 * its stdin and sends SIGTERM, then SIGKILL when it has not exited after a grace period. Every delay
 * runs on the Clock. The embedded mode's agents and janitor are supervised this way.
 */
import type { ChildProcess } from "node:child_process";
import { systemClock, type Clock, type Timer } from "../controller/clock.js";

/** How a run of the process ended. */
export interface SupervisedExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** `code 1` or `SIGKILL`, for messages. */
  reason: string;
  /** How long the run lasted, on the clock. */
  ranMs: number;
  /** The delay before the next run; undefined when the process exited because it was stopped. */
  restartInMs: number | undefined;
}

export interface SupervisedProcessOptions {
  /**
   * Spawns one run of the process (at `start()` and at every restart) and wires its output; the
   * supervisor only watches its exit and signals it.
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
  /** How long `stop()` waits after SIGTERM before it sends SIGKILL. @default 5000 */
  stopGraceMs?: number;
  /** @default systemClock */
  clock?: Clock;
}

const DEFAULTS = { restartDelayMs: 500, maxRestartDelayMs: 30_000, stableRunMs: 30_000, stopGraceMs: 5000 };

export class SupervisedProcess {
  private readonly options: SupervisedProcessOptions;
  private readonly clock: Clock;
  private readonly restartDelayMs: number;
  private readonly maxRestartDelayMs: number;
  private readonly stableRunMs: number;
  private readonly stopGraceMs: number;
  private child: ChildProcess | undefined;
  private restartTimer: Timer | undefined;
  private consecutiveRestarts = 0;
  private stopping = false;

  constructor(options: SupervisedProcessOptions) {
    this.options = options;
    this.clock = options.clock ?? systemClock;
    this.restartDelayMs = options.restartDelayMs ?? DEFAULTS.restartDelayMs;
    this.maxRestartDelayMs = options.maxRestartDelayMs ?? DEFAULTS.maxRestartDelayMs;
    this.stableRunMs = options.stableRunMs ?? DEFAULTS.stableRunMs;
    this.stopGraceMs = options.stopGraceMs ?? DEFAULTS.stopGraceMs;
  }

  /** pid of the running process; undefined between runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Restarts in a row since the last stable run (the exponent of the back-off). */
  get restarts(): number {
    return this.consecutiveRestarts;
  }

  /** Spawns the process and supervises it from now on (again after `stop()`); nothing while it runs. */
  start(): void {
    if (this.child) return;
    this.stopping = false;
    this.restartTimer?.cancel();
    this.restartTimer = undefined;
    this.run();
  }

  /** The process is healthy (e.g. it answered): the next restart waits `restartDelayMs` again. */
  resetBackoff(): void {
    this.consecutiveRestarts = 0;
  }

  /** Signals the running process; unless stopped, the supervisor restarts it once it exits. */
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    this.child?.kill(signal);
  }

  /** Stops supervising: closes the process's stdin, sends SIGTERM, then SIGKILL after `stopGraceMs`; resolves once it exited. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.restartTimer?.cancel();
    this.restartTimer = undefined;
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.stdin?.end();
    child.kill("SIGTERM");
    const escalation = this.clock.setTimeout(() => child.kill("SIGKILL"), this.stopGraceMs);
    await exited;
    escalation.cancel();
  }

  private run(): void {
    const child = this.options.spawn();
    const startedAtMs = this.clock.now().getTime();
    this.child = child;
    child.once("exit", (code, signal) => {
      if (this.child === child) this.child = undefined;
      const ranMs = this.clock.now().getTime() - startedAtMs;
      const reason = signal ?? `code ${String(code)}`;
      if (this.stopping) {
        this.options.onExit?.({ code, signal, reason, ranMs, restartInMs: undefined });
        return;
      }
      if (ranMs >= this.stableRunMs) this.consecutiveRestarts = 0;
      const restartInMs = Math.min(this.maxRestartDelayMs, this.restartDelayMs * 2 ** Math.min(this.consecutiveRestarts, 30));
      this.consecutiveRestarts += 1;
      this.options.onExit?.({ code, signal, reason, ranMs, restartInMs });
      if (this.stopping) return;
      this.restartTimer = this.clock.setTimeout(() => {
        this.restartTimer = undefined;
        if (!this.stopping) this.run();
      }, restartInMs);
    });
  }
}
