/**
 * The port where the E2B-compatible API keeps its API keys, as hashes (`hashApiKey`): never the keys
 * themselves. Adapters: `SqliteApiKeyStore` (embedded mode, a SQLite file in the data directory),
 * `KubernetesApiKeyStore` (a Secret per hash in the controller's namespace) and `MemoryApiKeyStore` (tests).
 */
export interface ApiKeyStore {
  /** Stores the hash of a newly issued key; adding a hash again changes nothing. */
  add(hash: string, createdAt: Date): Promise<void>;
  /** Whether a key with this hash was issued (and not removed since). */
  has(hash: string): Promise<boolean>;
  /** Revokes the key with this hash: whether there was one to remove. */
  remove(hash: string): Promise<boolean>;
  close(): Promise<void>;
}
