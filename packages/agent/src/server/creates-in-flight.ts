/**
 * The creates an agent is running right now. They show in the agent's status as `creating`, so a
 * control plane that restarted meanwhile waits for them instead of taking them for leftovers, and
 * an agent that is asked to stop lets them finish (bounded) instead of leaving half-made containers.
 * The deletes in flight are known too: a create of an id whose delete has not finished is refused,
 * since the delete's last steps (its run directory, its log) would land on the new sandbox.
 */
import { AlreadyExistsError, UnavailableError } from "@fast-sandbox/api/core";

export class CreatesInFlight {
  private readonly creates = new Map<string, Promise<unknown>>();
  /** Ids being deleted, with how many deletes of each run (a retried delete overlaps the first). */
  private readonly deletes = new Map<string, number>();

  /**
   * Runs `create` for `sandboxId`, visible in `ids()` until it settles. A create of an id whose create
   * is still in flight (a retry) runs nothing and fails as a duplicate, as one of a sandbox that
   * exists does: the first create's steps are never raced, and it stays the one tracked.
   */
  async track<T>(sandboxId: string, create: () => Promise<T>): Promise<T> {
    if (this.creates.has(sandboxId)) throw new AlreadyExistsError(`sandbox ${sandboxId} is being created already`);
    if (this.deletes.has(sandboxId)) {
      throw new UnavailableError(`sandbox ${sandboxId} is being deleted on this agent; retry once its delete has finished`);
    }
    const running = create();
    this.creates.set(sandboxId, running);
    try {
      return await running;
    } finally {
      if (this.creates.get(sandboxId) === running) this.creates.delete(sandboxId);
    }
  }

  /** Runs the delete of `sandboxId`; until it settles, a create of that id is refused. */
  async deleting<T>(sandboxId: string, remove: () => Promise<T>): Promise<T> {
    this.deletes.set(sandboxId, (this.deletes.get(sandboxId) ?? 0) + 1);
    try {
      return await remove();
    } finally {
      const left = (this.deletes.get(sandboxId) ?? 1) - 1;
      if (left > 0) this.deletes.set(sandboxId, left);
      else this.deletes.delete(sandboxId);
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
