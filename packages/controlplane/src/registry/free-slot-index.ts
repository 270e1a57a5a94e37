/**
 * Agents bucketed by their number of free sandbox slots, so the scheduler can walk them from the
 * most free slots down without looking at agents it will not pick.
 *
 * Bucket `b` holds the agents with exactly `b` free slots (1 ≤ b ≤ maxFreeSlots); agents with no
 * free slot are not indexed at all. A bitmap of non-empty buckets finds the next non-empty bucket
 * with `Math.clz32`, so:
 * - `set`/`delete`: O(1);
 * - reaching the first agent of the walk: O(maxFreeSlots / 32) word checks at worst (33 for 1024),
 *   independent of the number of agents; every further agent of the walk costs O(1) amortised.
 *
 * Within a bucket agents come in the order they entered it (Set insertion order): deterministic for a
 * given history, and the agent that has had this many free slots the longest goes first.
 */
export const MAX_SLOTS_PER_AGENT = 1024;

export class FreeSlotIndex {
  private readonly buckets: (Set<string> | undefined)[];
  /** Bit `b % 32` of word `b >>> 5` is set iff bucket `b` is non-empty. */
  private readonly nonEmptyBuckets: Uint32Array;
  private readonly freeSlotsByName = new Map<string, number>();

  constructor(readonly maxFreeSlots: number = MAX_SLOTS_PER_AGENT) {
    if (!Number.isInteger(maxFreeSlots) || maxFreeSlots < 1) {
      throw new RangeError(`maxFreeSlots must be a positive integer, got ${maxFreeSlots}`);
    }
    this.buckets = new Array<Set<string> | undefined>(maxFreeSlots + 1);
    this.nonEmptyBuckets = new Uint32Array((maxFreeSlots >>> 5) + 1);
  }

  /** Number of indexed agents (those with at least one free slot). */
  get size(): number {
    return this.freeSlotsByName.size;
  }

  /** Free slots recorded for `name`; 0 when it is not indexed. */
  freeSlotsOf(name: string): number {
    return this.freeSlotsByName.get(name) ?? 0;
  }

  /** Records `freeSlots` for `name`; zero or less removes it. A changed count moves it to the end of its new bucket. */
  set(name: string, freeSlots: number): void {
    if (freeSlots <= 0) {
      this.delete(name);
      return;
    }
    if (!Number.isInteger(freeSlots) || freeSlots > this.maxFreeSlots) {
      throw new RangeError(`free slots must be an integer ≤ ${this.maxFreeSlots}, got ${freeSlots}`);
    }
    const current = this.freeSlotsByName.get(name);
    if (current === freeSlots) return;
    if (current !== undefined) this.removeFromBucket(name, current);
    let bucket = this.buckets[freeSlots];
    if (bucket === undefined) {
      bucket = new Set();
      this.buckets[freeSlots] = bucket;
    }
    bucket.add(name);
    this.nonEmptyBuckets[freeSlots >>> 5]! |= 1 << (freeSlots & 31);
    this.freeSlotsByName.set(name, freeSlots);
  }

  delete(name: string): boolean {
    const current = this.freeSlotsByName.get(name);
    if (current === undefined) return false;
    this.removeFromBucket(name, current);
    this.freeSlotsByName.delete(name);
    return true;
  }

  /**
   * Agents from the most free slots down. Lazy: a caller that stops after the first acceptable agent
   * pays only for what it looked at. Do not mutate the index while iterating.
   */
  *byFreeSlotsDescending(): Generator<string, void, undefined> {
    for (let bucket = this.highestNonEmptyBucketAtMost(this.maxFreeSlots); bucket > 0;) {
      const names = this.buckets[bucket];
      if (names !== undefined) yield* names;
      bucket = this.highestNonEmptyBucketAtMost(bucket - 1);
    }
  }

  private removeFromBucket(name: string, freeSlots: number): void {
    const bucket = this.buckets[freeSlots];
    if (bucket === undefined) return;
    bucket.delete(name);
    if (bucket.size === 0) {
      this.nonEmptyBuckets[freeSlots >>> 5]! &= ~(1 << (freeSlots & 31));
    }
  }

  /** The highest non-empty bucket ≤ `limit`, or 0 when there is none (bucket 0 is never used). */
  private highestNonEmptyBucketAtMost(limit: number): number {
    if (limit <= 0) return 0;
    let word = limit >>> 5;
    const bit = limit & 31;
    // Keep bits 0..bit of the first word; `>>> 0` keeps the mask unsigned when bit is 31.
    let bits = this.nonEmptyBuckets[word]! & ((2 ** (bit + 1) - 1) >>> 0);
    while (bits === 0) {
      if (word === 0) return 0;
      word -= 1;
      bits = this.nonEmptyBuckets[word]!;
    }
    return (word << 5) + 31 - Math.clz32(bits);
  }
}
