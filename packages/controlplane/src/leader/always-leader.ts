import type { LeaderElector, LeadershipCallbacks } from "./leader-elector.js";

/** The embedded mode's elector: one process, always the leader from `run()` until `stop()`. */
export class AlwaysLeader implements LeaderElector {
  readonly identity: string;
  #callbacks: LeadershipCallbacks | undefined;
  #leadership: AbortController | undefined;
  #stopped = false;

  /** @default "embedded" */
  constructor(identity = "embedded") {
    this.identity = identity;
  }

  run(callbacks: LeadershipCallbacks): void {
    if (this.#stopped) throw new Error("LeaderElector.run: stopped");
    if (this.#callbacks) throw new Error("LeaderElector.run: already running");
    this.#callbacks = callbacks;
    this.#leadership = new AbortController();
    callbacks.onStartedLeading(this.#leadership.signal);
  }

  isLeader(): boolean {
    return this.#leadership !== undefined && !this.#leadership.signal.aborted;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.isLeader()) {
      this.#leadership?.abort();
      await this.#callbacks?.onStoppedLeading();
    }
  }
}
