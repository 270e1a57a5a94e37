/**
 * The port where the E2B-compatible API keeps its API keys, as hashes (`hashApiKey`): never the keys
 * themselves. Adapters: `SqliteApiKeyStore` (embedded mode, a SQLite file in the data directory) and
 * `MemoryApiKeyStore` (tests). A Kubernetes adapter (a Secret of hashes) is not written yet, so the
 * Kubernetes mode does not serve the E2B-compatible API.
 */
export interface ApiKeyStore {
  /** Stores the hash of a newly issued key; adding a hash again changes nothing. */
  add(hash: string, createdAt: Date): Promise<void>;
  /** Whether a key with this hash was issued. */
  has(hash: string): Promise<boolean>;
  close(): Promise<void>;
}
