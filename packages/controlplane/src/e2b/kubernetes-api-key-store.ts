/**
 * The Kubernetes mode's ApiKeyStore: each issued key's hash is one Secret in the controller's
 * namespace, named after the hash (`fast-sandbox-e2b-key-<sha256 hex>`), so a key is checked with one
 * GET by name — no list or watch of Secrets, and every controller replica sees the keys any replica
 * issued. The Secret holds the hash and its time of issue, never the key. Deleting a key's Secret
 * (`remove`, or kubectl) revokes it: at once on the replica that removes it, within `cacheMs` on
 * another that already accepted it. A key another replica just issued is accepted here within
 * `missCacheMs` of this replica last finding it missing.
 *
 * Any well-formed key (what an unauthenticated caller can send at will) this replica has never
 * found costs a GET of the API server unless it was found missing lately, and made-up keys never
 * were: such look-ups draw on a token bucket (`unknownKeyLookupsPerSecond`, `unknownKeyLookupBurst`),
 * and once it is spent a key not known here is answered 429 with Retry-After instead. Keys this
 * replica has found are never limited, so a flood of made-up keys cannot lock their clients out.
 */
import { ApiException, CoreV1Api, type KubeConfig, type V1Secret } from "@kubernetes/client-node";
import { FailedPreconditionError, ValidationError } from "@fast-sandbox/api";
import { translateKubernetesError } from "../store/kubernetes-resource-store.js";
import type { ApiKeyStore } from "./api-key-store.js";
import { RateLimitedError } from "./e2b-errors.js";

/** Names the Secret of a key: this prefix and the hex digits of its sha256. */
export const API_KEY_SECRET_PREFIX = "fast-sandbox-e2b-key-";
/** The label every key's Secret carries (`kubectl get secrets -l sandbox.fast.io/e2b-api-key`). */
export const API_KEY_SECRET_LABEL = "sandbox.fast.io/e2b-api-key";
const HASH_PATTERN = /^sha256:([0-9a-f]{64})$/;

export interface KubernetesApiKeyStoreOptions {
  kubeConfig: KubeConfig;
  /** Where the keys' Secrets are: the controller's namespace. */
  namespace: string;
  /** How long a replica trusts a key it found without asking again. @default 60000 */
  cacheMs?: number;
  /**
   * How long a replica trusts that a key is missing without asking again: any well-formed key
   * (what an unauthenticated caller can send at will) otherwise costs one GET of the API server
   * per request. Short, since a key another replica issues meanwhile is refused here for as long.
   * @default 5000
   */
  missCacheMs?: number;
  /** How many missing keys a replica remembers; past it the oldest are forgotten. @default 10000 */
  maxMissCacheEntries?: number;
  /** How many look-ups of keys this replica has never found it makes a second, on average. @default 20 */
  unknownKeyLookupsPerSecond?: number;
  /** How many such look-ups it makes at once after a quiet time (the bucket's size). @default 50 */
  unknownKeyLookupBurst?: number;
  /** @default Date.now */
  now?: () => number;
}

/** The name of the Secret that records the key with this hash (`sha256:<64 hex>`). */
export function apiKeySecretName(hash: string): string {
  const match = HASH_PATTERN.exec(hash);
  if (!match) throw new ValidationError("hash", `${JSON.stringify(hash)} is not an API key hash (sha256: and 64 lower-case hex digits)`);
  return `${API_KEY_SECRET_PREFIX}${match[1]}`;
}

export class KubernetesApiKeyStore implements ApiKeyStore {
  readonly #core: CoreV1Api;
  readonly #namespace: string;
  readonly #cacheMs: number;
  readonly #now: () => number;
  /** Hashes found, with when they were: E2B's SDKs send the key with every call. */
  readonly #found = new Map<string, number>();
  readonly #missCacheMs: number;
  readonly #maxMissCacheEntries: number;
  /** Hashes found missing, with when, oldest first (a Map keeps the order of insertion). */
  readonly #missing = new Map<string, number>();
  /** Counts add(): a lookup that began before one does not record its hash missing. */
  #adds = 0;
  /** Counts remove(): a lookup that began before one does not record its hash found. */
  #removes = 0;
  readonly #lookupsPerSecond: number;
  readonly #lookupBurst: number;
  /** Look-ups of unknown keys left in the bucket (fractional while it refills), as of `#refilledAt`. */
  #lookupTokens: number;
  #refilledAt: number;

  constructor(options: KubernetesApiKeyStoreOptions) {
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#namespace = options.namespace;
    this.#cacheMs = options.cacheMs ?? 60_000;
    this.#missCacheMs = options.missCacheMs ?? 5_000;
    this.#maxMissCacheEntries = options.maxMissCacheEntries ?? 10_000;
    this.#now = options.now ?? Date.now;
    this.#lookupsPerSecond = options.unknownKeyLookupsPerSecond ?? 20;
    this.#lookupBurst = options.unknownKeyLookupBurst ?? 50;
    this.#lookupTokens = this.#lookupBurst;
    this.#refilledAt = this.#now();
  }

  async add(hash: string, createdAt: Date): Promise<void> {
    const name = apiKeySecretName(hash);
    const body: V1Secret = {
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: {
        name,
        namespace: this.#namespace,
        labels: { [API_KEY_SECRET_LABEL]: "true", "app.kubernetes.io/part-of": "fast-sandbox" },
        annotations: { "sandbox.fast.io/created-at": createdAt.toISOString() },
      },
      stringData: { hash },
    };
    try {
      await this.#core.createNamespacedSecret({ namespace: this.#namespace, body });
    } catch (error) {
      // Adding a hash again changes nothing.
      if (!(error instanceof ApiException && error.code === 409)) {
        throw translateKubernetesError(error, { action: `record an E2B API key as Secret ${this.#namespace}/${name}` });
      }
    }
    this.#adds += 1;
    this.#missing.delete(hash);
    this.#found.set(hash, this.#now());
  }

  async has(hash: string): Promise<boolean> {
    const match = HASH_PATTERN.exec(hash);
    if (!match) return false;
    const seen = this.#found.get(hash);
    if (seen !== undefined && this.#now() - seen < this.#cacheMs) return true;
    const missed = this.#missing.get(hash);
    if (missed !== undefined) {
      if (this.#now() - missed < this.#missCacheMs) return false;
      this.#missing.delete(hash);
    }
    // A key found before whose entry is only stale is looked up again unlimited; any other draws on the bucket.
    if (seen === undefined) this.#takeUnknownKeyLookup();
    const name = apiKeySecretName(hash);
    const adds = this.#adds;
    const removes = this.#removes;
    let secret: V1Secret;
    try {
      secret = await this.#core.readNamespacedSecret({ namespace: this.#namespace, name });
    } catch (error) {
      if (error instanceof ApiException && error.code === 404) {
        this.#found.delete(hash);
        this.#recordMissing(hash, adds);
        return false;
      }
      throw translateKubernetesError(error, { action: `look up the E2B API key Secret ${this.#namespace}/${name}` });
    }
    // A Secret of that name that is not ours (no label) does not make a key.
    const ours = secret.metadata?.labels?.[API_KEY_SECRET_LABEL] === "true";
    if (!ours) this.#recordMissing(hash, adds);
    else if (this.#removes === removes) this.#found.set(hash, this.#now());
    return ours;
  }

  /**
   * Deletes the key's Secret (only one of ours: labelled, and the very one read, by its uid), and
   * forgets the key here at once; other replicas stop accepting it within `cacheMs`.
   */
  async remove(hash: string): Promise<boolean> {
    const name = apiKeySecretName(hash);
    this.#removes += 1;
    this.#found.delete(hash);
    let secret: V1Secret;
    try {
      secret = await this.#core.readNamespacedSecret({ namespace: this.#namespace, name });
    } catch (error) {
      if (error instanceof ApiException && error.code === 404) return false;
      throw translateKubernetesError(error, { action: `look up the E2B API key Secret ${this.#namespace}/${name}` });
    }
    if (secret.metadata?.labels?.[API_KEY_SECRET_LABEL] !== "true") return false;
    try {
      await this.#core.deleteNamespacedSecret({
        namespace: this.#namespace,
        name,
        ...(secret.metadata.uid ? { body: { preconditions: { uid: secret.metadata.uid } } } : {}),
      });
    } catch (error) {
      // Gone meanwhile (404), or replaced by another Secret of that name (409, the uid differs): not this removal's.
      if (error instanceof ApiException && (error.code === 404 || error.code === 409)) return false;
      // The shipped RBAC grants the controller no delete of Secrets (config/rbac/e2b-secrets-role.yaml:
      // a delete cannot be limited to the keys' Secrets, and its own tokens are Secrets there too).
      if (error instanceof ApiException && error.code === 403) {
        throw new FailedPreconditionError(
          `the controller may not delete Secrets (least privilege): revoke the key with 'kubectl -n ${this.#namespace} delete secret ${name}'; the replicas refuse it within a minute`,
        );
      }
      throw translateKubernetesError(error, { action: `delete the E2B API key Secret ${this.#namespace}/${name}` });
    }
    this.#found.delete(hash);
    this.#recordMissing(hash, this.#adds);
    return true;
  }

  /** Takes one look-up of an unknown key from the bucket, refilled for the time since; RateLimitedError when it is empty. */
  #takeUnknownKeyLookup(): void {
    const now = this.#now();
    const elapsedMs = Math.max(0, now - this.#refilledAt);
    this.#lookupTokens = Math.min(this.#lookupBurst, this.#lookupTokens + (elapsedMs * this.#lookupsPerSecond) / 1000);
    this.#refilledAt = now;
    if (this.#lookupTokens >= 1) {
      this.#lookupTokens -= 1;
      return;
    }
    const retryAfterSeconds = Math.max(1, Math.ceil((1 - this.#lookupTokens) / this.#lookupsPerSecond));
    throw new RateLimitedError(
      `too many requests with API keys this server does not know: each is checked with the Kubernetes API server, at most ${this.#lookupsPerSecond} a second ` +
        `(${this.#lookupBurst} at once); retry in ${retryAfterSeconds} s, with a key 'fsb e2b env' issued`,
      retryAfterSeconds,
    );
  }

  /** Remembers hash missing, unless a key was added since its lookup began (adds, then). */
  #recordMissing(hash: string, adds: number): void {
    if (this.#adds !== adds) return;
    this.#missing.delete(hash);
    this.#missing.set(hash, this.#now());
    for (const oldest of this.#missing.keys()) {
      if (this.#missing.size <= this.#maxMissCacheEntries) break;
      this.#missing.delete(oldest);
    }
  }

  close(): Promise<void> {
    this.#found.clear();
    this.#missing.clear();
    return Promise.resolve();
  }
}
