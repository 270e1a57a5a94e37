/**
 * An agent's heartbeat, in both modes (the embedded mode's LocalAgentProcess, Kubernetes mode's
 * AgentConnections): a `Status` call every interval, one at a time, and a verdict after each —
 * answered, busy (the agent answered that its containerd is slow: alive), or missed. Each call may take `heartbeatDeadlineMs(interval)`: never under a second, so that a host
 * busy for a moment (a full GC, a burst of creates, a caller's synchronous child process) does not
 * make a live agent look hung; a call still in flight when the next one is due is not doubled.
 * An answer to a client that has since been replaced (the agent restarted) is not the agent's.
 */
import { BusyError } from "@fast-sandbox/api";
import type { AgentClient, AgentStatus } from "../agent-client/agent-client.js";
import { every, type Clock, type Timer } from "../controller/clock.js";

/** The shortest time a heartbeat waits for the agent's answer. */
export const MIN_HEARTBEAT_DEADLINE_MS = 1000;

/** How long a heartbeat sent every `intervalMs` waits for its answer. */
export function heartbeatDeadlineMs(intervalMs: number): number {
  return Math.max(MIN_HEARTBEAT_DEADLINE_MS, intervalMs);
}

export interface AgentHeartbeatOptions {
  clock: Clock;
  intervalMs: number;
  /** The agent's current client; undefined: no beat now. */
  client(): AgentClient | undefined;
  /** The agent answered; `askedAt`: when the call was sent (the status is at least that recent). */
  onAnswer(status: AgentStatus, askedAt: Date): void;
  /** The agent answered busy: alive, nothing new to observe. */
  onBusy(error: BusyError): void;
  /** A missed beat; `consecutive` counts them since the last answer (or busy answer). */
  onMissed(consecutive: number, error: unknown): void;
}

export class AgentHeartbeat {
  private timer: Timer | undefined;
  private inFlight = false;
  private missed = 0;

  constructor(private readonly options: AgentHeartbeatOptions) {}

  /**
   * Beats every interval from now on (`beatNow`: the first beat at once, else one interval from
   * now); the count of missed beats starts over.
   */
  start(options: { beatNow?: boolean } = {}): void {
    this.stop();
    this.missed = 0;
    this.timer = every(this.options.clock, this.options.intervalMs, () => this.beat());
    if (options.beatNow) this.beat();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  private beat(): void {
    const client = this.options.client();
    if (!client || this.inFlight) return;
    this.inFlight = true;
    const timer = this.timer;
    // Stopped, or started again for another client, meanwhile: the answer is not this beat's to judge.
    const current = () => this.timer === timer && this.options.client() === client;
    const askedAt = this.options.clock.now();
    client
      .status(heartbeatDeadlineMs(this.options.intervalMs))
      .then(
        (status) => {
          if (!current()) return;
          this.missed = 0;
          this.options.onAnswer(status, askedAt);
        },
        (error: unknown) => {
          if (!current()) return;
          if (error instanceof BusyError) {
            this.missed = 0;
            this.options.onBusy(error);
            return;
          }
          this.missed += 1;
          this.options.onMissed(this.missed, error);
        },
      )
      .finally(() => {
        this.inFlight = false;
      });
  }
}
