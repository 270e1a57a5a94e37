/**
 * Which images a pool's sandboxes were recently created from: the input of the hot-image rule.
 *
 * The rule (bounded on purpose): a pool's hot images are at most `maxHotImages` (3) images, those
 * with the most creates in the pool over the last `windowMs` (10 minutes), counting only images
 * created at least `minUses` (2) times in that window. Ties go to the image used most recently.
 * Images are compared by their normalized reference (`busybox` = `docker.io/library/busybox:latest`).
 */
import { normalizeImageName } from "@fast-sandbox/api";
import { systemClock, type Clock } from "../controller/clock.js";

export interface RecentImageUsageOptions {
  /** How far back creates count. @default 600_000 (10 minutes) */
  windowMs?: number;
  /** Most hot images per pool. @default 3 */
  maxHotImages?: number;
  /** Fewest creates in the window for an image to be hot. @default 2 */
  minUses?: number;
  /** @default systemClock */
  clock?: Clock;
}

/** Creates remembered per image: enough to rank, bounded however busy the pool is. */
const MAX_REMEMBERED_PER_IMAGE = 1000;

export class RecentImageUsage {
  private readonly windowMs: number;
  private readonly maxHotImages: number;
  private readonly minUses: number;
  private readonly clock: Clock;
  /** pool key → image → create times (ms, ascending). */
  private readonly uses = new Map<string, Map<string, number[]>>();

  constructor(options: RecentImageUsageOptions = {}) {
    this.windowMs = options.windowMs ?? 600_000;
    this.maxHotImages = options.maxHotImages ?? 3;
    this.minUses = options.minUses ?? 2;
    this.clock = options.clock ?? systemClock;
  }

  /** Records a create of `image` in the pool at `at` (default now); creates older than the window are ignored. */
  record(namespace: string, pool: string, image: string, at: Date = this.clock.now()): void {
    const time = at.getTime();
    if (Number.isNaN(time) || time <= this.clock.now().getTime() - this.windowMs) return;
    const key = poolKey(namespace, pool);
    let images = this.uses.get(key);
    if (!images) this.uses.set(key, (images = new Map<string, number[]>()));
    const name = normalizeImageName(image);
    const times = images.get(name) ?? [];
    // Records arrive nearly in order; keep the list sorted for pruning from the front.
    let index = times.length;
    while (index > 0 && (times[index - 1] ?? 0) > time) index--;
    times.splice(index, 0, time);
    if (times.length > MAX_REMEMBERED_PER_IMAGE) times.splice(0, times.length - MAX_REMEMBERED_PER_IMAGE);
    images.set(name, times);
  }

  /** The pool's hot images, most used first. */
  hotImages(namespace: string, pool: string): string[] {
    const images = this.uses.get(poolKey(namespace, pool));
    if (!images) return [];
    this.prune(images);
    return [...images.entries()]
      .filter(([, times]) => times.length >= this.minUses)
      .sort(([nameA, a], [nameB, b]) => b.length - a.length || (b.at(-1) ?? 0) - (a.at(-1) ?? 0) || nameA.localeCompare(nameB))
      .slice(0, this.maxHotImages)
      .map(([name]) => name);
  }

  /** Forgets a pool (deleted). */
  forgetPool(namespace: string, pool: string): void {
    this.uses.delete(poolKey(namespace, pool));
  }

  private prune(images: Map<string, number[]>): void {
    const oldest = this.clock.now().getTime() - this.windowMs;
    for (const [name, times] of images) {
      let drop = 0;
      while (drop < times.length && (times[drop] ?? 0) <= oldest) drop++;
      if (drop === times.length) images.delete(name);
      else if (drop > 0) times.splice(0, drop);
    }
  }
}

function poolKey(namespace: string, pool: string): string {
  return `${namespace}/${pool}`;
}
