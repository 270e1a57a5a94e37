/**
 * The back-off of failurePolicy AutoRecreate for a sandbox whose own instance keeps being lost (its
 * process 1 killed, its disk past its limit: evicted, its container removed), as the kubelet backs
 * off a crash-looping container: the first loss is replaced at once; an instance lost within
 * `resetAfterMs` of being made waits twice as long as the one before it (10 s, 20 s, 40 s, … up to
 * 5 min) from the moment it was lost; an instance that ran `resetAfterMs` starts the count again.
 * A sandbox whose command fills its disk at once is then recreated every 5 minutes, not every check.
 *
 * Kept in memory, by sandbox (as the kubelet keeps its own): a controller that restarts, or a new
 * leader, counts a quick loss as the first in a row (10 s).
 */

/** The first wait of a loss in a row. */
export const RECREATE_BACK_OFF_BASE_MS = 10_000;
/** The longest wait. */
export const RECREATE_BACK_OFF_MAX_MS = 5 * 60_000;
/** An instance that ran this long before it was lost starts the count again (the kubelet's 10 minutes). */
export const RECREATE_BACK_OFF_RESET_MS = 10 * 60_000;

/**
 * A lost instance: the sandbox's key, the instance's id, when it was made (undefined: not by a
 * recreation) and when it was lost (the first answer keeps the time it was first given).
 */
export interface LostInstanceTimes {
  key: string;
  sandboxId: string;
  madeAtMs: number | undefined;
  lostAtMs: number;
}

export class RecreateBackOff {
  /** The last lost instance seen of each sandbox, when it was lost, and how many quick losses in a row it ends. */
  private readonly bySandbox = new Map<string, { sandboxId: string; lostAtMs: number; inARow: number }>();

  /**
   * How long after it was lost the instance is replaced (0: at once), the time that is (`untilMs`),
   * and how many new instances in a row were lost quickly, this one included. The same instance
   * always gets the same answer.
   */
  delay(lost: LostInstanceTimes): { delayMs: number; untilMs: number; inARow: number } {
    let entry = this.bySandbox.get(lost.key);
    if (entry?.sandboxId !== lost.sandboxId) {
      const quick = lost.madeAtMs !== undefined && lost.lostAtMs - lost.madeAtMs < RECREATE_BACK_OFF_RESET_MS;
      entry = { sandboxId: lost.sandboxId, lostAtMs: lost.lostAtMs, inARow: quick ? (entry?.inARow ?? 0) + 1 : 0 };
      this.bySandbox.set(lost.key, entry);
    }
    const { inARow } = entry;
    const delayMs = inARow === 0 ? 0 : Math.min(RECREATE_BACK_OFF_BASE_MS * 2 ** (inARow - 1), RECREATE_BACK_OFF_MAX_MS);
    return { delayMs, untilMs: entry.lostAtMs + delayMs, inARow };
  }

  /** The sandbox is gone: nothing of it is kept. */
  forget(key: string): void {
    this.bySandbox.delete(key);
  }
}
