/**
 * The `LeaderElector` port: which replica of the controller runs the reconcilers. The fast-path API
 * answers on every replica; only the leader reconciles. The embedded mode has one process, which
 * always leads (always-leader.ts); the Kubernetes mode campaigns for a coordination.k8s.io Lease
 * (lease-leader-elector.ts).
 */

export interface LeadershipCallbacks {
  /**
   * Called when this replica becomes the leader. `signal` aborts when it stops leading (lost the
   * lease, could not renew it in time, or `stop()`): work started here must end then.
   */
  onStartedLeading(signal: AbortSignal): void;
  /**
   * Called once after each `onStartedLeading`, when leadership ends (after `signal` aborted). What
   * it returns is waited for before `stop()` gives the lease up: the leader's work must be over
   * before a successor can take over.
   */
  onStoppedLeading(): void | Promise<void>;
}

export interface LeaderElector {
  /** Who this replica is in the election (e.g. its Pod name). */
  readonly identity: string;
  /**
   * Starts campaigning; leadership may be gained and lost any number of times until `stop()`.
   * Throws when called twice.
   */
  run(callbacks: LeadershipCallbacks): void;
  /** True while this replica leads: between `onStartedLeading` and the abort of its signal. */
  isLeader(): boolean;
  /** Stops campaigning, steps down (its callback's work over first) and gives the leadership up so a successor takes over at once. */
  stop(): Promise<void>;
}
