/**
 * Read-modify-write on the ResourceStore without lost updates (client-go's `retry.RetryOnConflict`):
 * the change is computed from a fresh read and written conditionally on that read's resourceVersion;
 * when another writer came in between (ConflictError), it reads again and recomputes — it never
 * merges onto a stale copy.
 */
import { ConflictError } from "@fast-sandbox/api";
import type { ObjectKey, ResourceByKind, ResourceKind, ResourceStore } from "./resource-store.js";

export interface RetryOnConflictOptions {
  /** Write the status subresource (updateStatus) instead of spec and metadata (update). */
  status?: boolean;
  /** Only this object: a name deleted and created again (another uid) counts as gone. */
  uid?: string;
  /**
   * Reads and writes at most this often; the last ConflictError is thrown after that.
   * @default 5
   */
  attempts?: number;
}

/**
 * Reads the object, passes a fresh copy to `change`, and writes what it returns. Returns the written
 * object; the current one when `change` returns undefined (nothing to do); undefined when the object
 * does not exist (or has another uid than `options.uid`).
 */
export async function updateWithRetry<K extends ResourceKind>(
  store: ResourceStore,
  kind: K,
  key: ObjectKey,
  change: (current: ResourceByKind[K]) => ResourceByKind[K] | undefined,
  options: RetryOnConflictOptions = {},
): Promise<ResourceByKind[K] | undefined> {
  const attempts = options.attempts ?? 5;
  for (let attempt = 1; ; attempt++) {
    const current = await store.get(kind, key);
    if (current === undefined || (options.uid !== undefined && current.metadata.uid !== options.uid)) return undefined;
    const next = change(structuredClone(current));
    if (next === undefined) return current;
    // The version read, whatever `change` did to metadata: the write is conditional on that read.
    const conditional = { ...next, metadata: { ...next.metadata, resourceVersion: current.metadata.resourceVersion, uid: current.metadata.uid } };
    try {
      return options.status === true ? await store.updateStatus(kind, conditional) : await store.update(kind, conditional);
    } catch (error) {
      if (!(error instanceof ConflictError) || attempt >= attempts) throw error;
    }
  }
}
