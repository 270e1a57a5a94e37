/**
 * The creates an agent is running right now. They show in the agent's status as `creating`, so a
 * control plane that restarted meanwhile waits for them instead of taking them for leftovers, and
 * an agent that is asked to stop lets them finish (bounded) instead of leaving half-made containers.
 */
export class CreatesInFlight {
  private readonly creates = new Map<string, Promise<unknown>>();

  /** Runs `create` for `sandboxId`, visible in `ids()` until it settles. */
  async track<T>(sandboxId: string, create: () => Promise<T>): Promise<T> {
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
