/**
 * The port through which the fast-path API lets Kubernetes users in with their own credentials: who
 * a bearer token is (a TokenReview) and whether that user may make a call (a SubjectAccessReview of
 * the call's `ResourceAccess`). kubernetes/kubernetes-access-review.ts asks the API server;
 * `CachedAccessReview` keeps its answers for a while, as the API server's own webhook authenticator
 * and authorizer do, so that a create pays a review only once a minute per caller.
 */
import { createHash } from "node:crypto";
import { UnavailableError } from "@fast-sandbox/api";
import type { ResourceAccess } from "./call-access.js";

/** A Kubernetes user, as a TokenReview names it. */
export interface KubernetesUser {
  username: string;
  uid?: string;
  groups: string[];
  extra?: Record<string, string[]>;
}

export interface AccessDecision {
  allowed: boolean;
  /** Why, when the authorizer says (RBAC: the binding that allowed it; often empty on a denial). */
  reason?: string;
}

export interface AccessReview {
  /** The user `token` is, or undefined when the API server does not accept it; throws when it cannot tell (unreachable). */
  authenticate(token: string): Promise<KubernetesUser | undefined>;
  /** Whether `user` may do `access`; throws when it cannot tell. */
  authorize(user: KubernetesUser, access: ResourceAccess): Promise<AccessDecision>;
}

export interface CachedAccessReviewOptions {
  /** How long an accepted token's user and an allowed access are kept. @default 60000 */
  allowedTtlMs?: number;
  /** How long a refused token and a denied access are kept. @default 10000 */
  deniedTtlMs?: number;
  /**
   * Entries kept per cache at most, the oldest dropped first: users and decisions; refused tokens
   * apart, a tenth as many (anyone can send new ones: they never push out the users). @default 10000
   */
  maxEntries?: number;
  /** A review not answered by then fails (Unavailable; not kept): one hung call holds no caller for ever. @default 10000 */
  reviewTimeoutMs?: number;
  /**
   * TokenReviews of tokens not known yet in flight at most; a new token past that fails at once
   * (Unavailable). Anyone who reaches the API can send made-up tokens: this bounds what they make
   * the controller ask of the API server, whose share of the controller's requests its own watches
   * and writes need. Known users are answered from the cache all the same. @default 16
   */
  maxTokenReviewsInFlight?: number;
  /** @default Date.now */
  now?: () => number;
}

interface Entry<T> {
  value: Promise<T>;
  /** When it stops being used; Infinity until the review answered. */
  expiresAt: number;
}

/** Reviews kept for a while: a token by its sha256 (never itself), an access by user and attributes. A review that fails is not kept. */
export class CachedAccessReview implements AccessReview {
  readonly #inner: AccessReview;
  readonly #allowedTtlMs: number;
  readonly #deniedTtlMs: number;
  readonly #maxEntries: number;
  readonly #reviewTimeoutMs: number;
  readonly #maxTokenReviewsInFlight: number;
  #tokenReviewsInFlight = 0;
  readonly #now: () => number;
  readonly #users = new Map<string, Entry<KubernetesUser | undefined>>();
  readonly #refusedTokens = new Map<string, Entry<KubernetesUser | undefined>>();
  readonly #decisions = new Map<string, Entry<AccessDecision>>();

  constructor(inner: AccessReview, options: CachedAccessReviewOptions = {}) {
    this.#inner = inner;
    this.#allowedTtlMs = options.allowedTtlMs ?? 60_000;
    this.#deniedTtlMs = options.deniedTtlMs ?? 10_000;
    this.#maxEntries = options.maxEntries ?? 10_000;
    this.#reviewTimeoutMs = options.reviewTimeoutMs ?? 10_000;
    this.#maxTokenReviewsInFlight = options.maxTokenReviewsInFlight ?? 16;
    this.#now = options.now ?? Date.now;
  }

  authenticate(token: string): Promise<KubernetesUser | undefined> {
    const key = createHash("sha256").update(token).digest("base64");
    const refused = this.#refusedTokens.get(key);
    if (refused && refused.expiresAt > this.#now()) return refused.value;
    this.#refusedTokens.delete(key);
    return this.#cached(
      this.#users,
      key,
      () => this.#reviewToken(token),
      (user) => user !== undefined,
      {
        cache: this.#refusedTokens,
        maxEntries: Math.max(1, Math.floor(this.#maxEntries / 10)),
      },
    );
  }

  authorize(user: KubernetesUser, access: ResourceAccess): Promise<AccessDecision> {
    const key = JSON.stringify([user.username, user.uid ?? "", [...user.groups].sort(), sortedExtra(user.extra), access]);
    return this.#cached(
      this.#decisions,
      key,
      () => this.#inner.authorize(user, access),
      (decision) => decision.allowed,
    );
  }

  /** One TokenReview, if fewer than maxTokenReviewsInFlight are (one that times out no longer counts). */
  async #reviewToken(token: string): Promise<KubernetesUser | undefined> {
    if (this.#tokenReviewsInFlight >= this.#maxTokenReviewsInFlight) {
      throw new UnavailableError(`${this.#maxTokenReviewsInFlight} reviews of new tokens are in flight already`);
    }
    this.#tokenReviewsInFlight++;
    try {
      return await this.#withTimeout(this.#inner.authenticate(token));
    } finally {
      this.#tokenReviewsInFlight--;
    }
  }

  /**
   * The entry's answer while it is fresh; else one review, shared by every call asking meanwhile.
   * A refusal moves to `refusals` once answered when given, else stays beside the rest.
   */
  #cached<T>(
    cache: Map<string, Entry<T>>,
    key: string,
    review: () => Promise<T>,
    allowed: (value: T) => boolean,
    refusals?: { cache: Map<string, Entry<T>>; maxEntries: number },
  ): Promise<T> {
    const entry = cache.get(key);
    if (entry && entry.expiresAt > this.#now()) return entry.value;
    cache.delete(key);
    const fresh: Entry<T> = { value: this.#withTimeout(review()), expiresAt: Infinity };
    cache.set(key, fresh);
    trim(cache, this.#maxEntries);
    fresh.value.then(
      (value) => {
        if (allowed(value)) {
          fresh.expiresAt = this.#now() + this.#allowedTtlMs;
          return;
        }
        fresh.expiresAt = this.#now() + this.#deniedTtlMs;
        if (!refusals) return;
        if (cache.get(key) === fresh) cache.delete(key);
        refusals.cache.set(key, fresh);
        trim(refusals.cache, refusals.maxEntries);
      },
      () => {
        if (cache.get(key) === fresh) cache.delete(key);
      },
    );
    return fresh.value;
  }

  #withTimeout<T>(review: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new UnavailableError(`the Kubernetes API server did not answer the review within ${this.#reviewTimeoutMs} ms`)),
        this.#reviewTimeoutMs,
      );
    });
    return Promise.race([review, late]).finally(() => clearTimeout(timer));
  }
}

/** Drops the oldest entries past `maxEntries`. */
function trim<T>(cache: Map<string, Entry<T>>, maxEntries: number): void {
  while (cache.size > maxEntries) cache.delete(cache.keys().next().value as string);
}

function sortedExtra(extra: Record<string, string[]> | undefined): [string, string[]][] {
  return Object.entries(extra ?? {})
    .map(([key, values]): [string, string[]] => [key, [...values].sort()])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
