/**
 * The creates an agent is running right now. They show in the agent's status as `creating`, so a
 * control plane that restarted meanwhile waits for them instead of taking them for leftovers, and
 * an agent that is asked to stop lets them finish (bounded) instead of leaving half-made containers.
 */
import { AlreadyExistsError } from "@fast-sandbox/api/core";

export class CreatesInFlight {
  private readonly creates = new Map<string, Promise<unknown>>();

  /**
   * Runs `create` for `sandboxId`, visible in `ids()` until it settles. A create of an id whose create
   * is still in flight (a retry) runs nothing and fails as a duplicate, as one of a sandbox that
   * exists does: the first create's steps are never raced, and it stays the one tracked.
   */
  async track<T>(sandboxId: string, create: () => Promise<T>): Promise<T> {
    if (this.creates.has(sandboxId)) throw new AlreadyExistsError(`sandbox ${sandboxId} is being created already`);
    const running = create();
    this.creates.set(sandboxId, running);
    try {
      return await running;
    } finally {
      if (this.creates.get(sandboxId) === running) this.creates.delete(sandboxId);
    }
  }

  /** Resolves when the create of `sandboxId` (if one is in flight) has settled, whatever its outcome. */
  async settled(sandboxId: string): Promise<void> {
    await this.creates.get(sandboxId)?.catch(() => undefined);
  }

  ids(): string[] {
    return [...this.creates.keys()];
  }

  /** Resolves when every create in flight has settled, or after `timeoutMs`; true when none is left. */
  async drain(timeoutMs: number): Promise<boolean> {
    if (this.creates.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const settled = Promise.allSettled([...this.creates.values()]).then(() => true);
    try {
      return await Promise.race([settled, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
