/**
 * Pulls images onto agents ahead of the creates that need them, through the AgentClient port (the
 * same in both deployment modes):
 *
 * - `prewarm`: a pool's `prewarmImages`, on an agent that is about to be marked ready. Images the
 *   agent already has are skipped; a failure that may pass (registry unavailable) is retried a few
 *   times; one that will not (unknown image, refused credentials) is not. An image that cannot be
 *   pulled does not keep the agent out of service: it is logged and reported in the result.
 * - `pullInBackground`: one image on one agent (hot images), at most one such pull per agent at a
 *   time, and not again on that agent within `backgroundRetryMs` of the last attempt (its image
 *   list, which shows the result, arrives with a later heartbeat).
 */
import type { Logger } from "pino";
import { FsbError, normalizeImageName, type ErrorCode } from "@fast-sandbox/api";
import type { AgentClient } from "../agent-client/agent-client.js";
import { sleep, systemClock, type Clock } from "../controller/clock.js";

export interface ImagePrewarmerOptions {
  logger: Logger;
  /** Attempts per image in `prewarm` for failures that may pass. @default 3 */
  attempts?: number;
  /** Pause before the second attempt; doubles after each. @default 1000 */
  retryDelayMs?: number;
  /** How long after a background pull of an image on an agent it is not tried there again. @default 60_000 */
  backgroundRetryMs?: number;
  /** Times the retries and the background pulls. @default systemClock */
  clock?: Clock;
}

export interface PrewarmResult {
  /** Normalized references pulled now (images the agent had are not listed). */
  pulled: string[];
  failed: { image: string; error: FsbError }[];
}

/** Failures a retry will not fix. */
const PERMANENT: ReadonlySet<ErrorCode> = new Set(["not_found", "unauthenticated", "permission_denied", "invalid_argument", "failed_precondition"]);

export class ImagePrewarmer {
  private readonly logger: Logger;
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private readonly backgroundRetryMs: number;
  private readonly clock: Clock;
  /** Agents with a background pull in flight → the image. */
  private readonly background = new Map<string, string>();
  /** `agent image` → when its last background pull ended (ms). */
  private readonly attemptedAt = new Map<string, number>();

  constructor(options: ImagePrewarmerOptions) {
    this.logger = options.logger.child({ component: "image-prewarmer" });
    this.attempts = Math.max(1, options.attempts ?? 3);
    this.retryDelayMs = options.retryDelayMs ?? 1000;
    this.backgroundRetryMs = options.backgroundRetryMs ?? 60_000;
    this.clock = options.clock ?? systemClock;
  }

  /** Pulls the images the agent lacks (`present`: what its status reports), one after the other. Never throws. */
  async prewarm(agent: string, client: AgentClient, images: readonly string[], present: readonly string[]): Promise<PrewarmResult> {
    const have = new Set(present.map(normalizeImageName));
    const result: PrewarmResult = { pulled: [], failed: [] };
    for (const image of new Set(images.map(normalizeImageName))) {
      if (have.has(image)) continue;
      const error = await this.pullWithRetries(agent, client, image);
      if (error) {
        this.logger.error(
          { agent, image, err: error },
          `could not prewarm ${image} on agent ${agent}: ${error.message}; the agent takes sandboxes without it (creates of it pull it then)`,
        );
        result.failed.push({ image, error });
      } else {
        result.pulled.push(image);
      }
    }
    return result;
  }

  /**
   * Starts pulling `image` on the agent in the background, unless the agent is already pulling one
   * for us or the image was pulled (or failed) there within `backgroundRetryMs`. True when it set out
   * to (it pulls only if the agent's own, fresh status still lacks the image).
   */
  pullInBackground(agent: string, client: AgentClient, image: string): boolean {
    const name = normalizeImageName(image);
    if (this.background.has(agent)) return false;
    const key = `${agent} ${name}`;
    const now = this.clock.now().getTime();
    // Entries older than the retry delay decide nothing any more: drop them (agents come and go).
    for (const [old, at] of this.attemptedAt) if (now - at >= this.backgroundRetryMs) this.attemptedAt.delete(old);
    const attempted = this.attemptedAt.get(key);
    if (attempted !== undefined && now - attempted < this.backgroundRetryMs) return false;
    this.background.set(agent, name);
    void (async () => {
      // The image list the caller decided on may be a heartbeat old (creates may just have pulled it): ask again.
      const { images } = await client.status();
      if (images.some((present) => normalizeImageName(present) === name)) return;
      this.logger.info({ agent, image: name }, "pre-pulling an image the agent lacks");
      await pullOnce(client, name);
    })()
      .catch((error: unknown) => this.logger.warn({ agent, image: name, err: error }, "could not pre-pull an image; trying again later"))
      .finally(() => {
        this.attemptedAt.set(key, this.clock.now().getTime());
        this.background.delete(agent);
      });
    return true;
  }

  /** The image an agent is pulling in the background, if any. */
  backgroundPull(agent: string): string | undefined {
    return this.background.get(agent);
  }

  private async pullWithRetries(agent: string, client: AgentClient, image: string): Promise<FsbError | undefined> {
    let delayMs = this.retryDelayMs;
    for (let attempt = 1; ; attempt++) {
      try {
        await pullOnce(client, image);
        this.logger.info({ agent, image }, "prewarmed image");
        return undefined;
      } catch (thrown) {
        const error = FsbError.from(thrown);
        if (PERMANENT.has(error.code) || attempt >= this.attempts) return error;
        this.logger.warn({ agent, image, err: error, attempt }, "prewarm pull failed; retrying");
        await sleep(this.clock, delayMs);
        delayMs *= 2;
      }
    }
  }
}

async function pullOnce(client: AgentClient, image: string): Promise<void> {
  let finished = false;
  for await (const progress of client.pullImage(image)) finished = progress.phase === "done";
  if (!finished) throw new FsbError("internal", `the pull of ${image} ended without reporting it done`);
}
