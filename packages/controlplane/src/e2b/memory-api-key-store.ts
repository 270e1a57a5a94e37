import type { ApiKeyStore } from "./api-key-store.js";

/** An ApiKeyStore in memory: for tests, and for a control plane whose keys need not outlive it. */
export class MemoryApiKeyStore implements ApiKeyStore {
  private readonly hashes = new Map<string, Date>();

  add(hash: string, createdAt: Date): Promise<void> {
    if (!this.hashes.has(hash)) this.hashes.set(hash, createdAt);
    return Promise.resolve();
  }

  has(hash: string): Promise<boolean> {
    return Promise.resolve(this.hashes.has(hash));
  }

  remove(hash: string): Promise<boolean> {
    return Promise.resolve(this.hashes.delete(hash));
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
