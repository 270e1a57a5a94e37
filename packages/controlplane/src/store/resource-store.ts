/**
 * The storage port the reconcilers and the fast-path API use. It behaves like the Kubernetes API
 * where it matters, so the same code runs on SQLite (embedded) and on the API server:
 * - every write bumps a store-wide, monotonically increasing `metadata.resourceVersion`;
 * - `update`/`updateStatus` with a `resourceVersion` fail with ConflictError when it is stale;
 * - `update` never changes `status`, `updateStatus` never changes `spec`/`metadata` (except resourceVersion);
 * - `delete` of an object with finalizers only sets `metadata.deletionTimestamp`; the object goes away
 *   when an update removes the last finalizer. Objects being deleted accept no new finalizers;
 * - `watch` streams ADDED/MODIFIED/DELETED events after a resourceVersion, in order.
 */
import type { Sandbox, SandboxPool } from "@fast-sandbox/api";

export type ResourceKind = "Sandbox" | "SandboxPool";

export interface ResourceByKind {
  Sandbox: Sandbox;
  SandboxPool: SandboxPool;
}

export type AnyResource = Sandbox | SandboxPool;

export interface ObjectKey {
  namespace: string;
  name: string;
}

export interface ListOptions {
  /** Undefined: all namespaces. */
  namespace?: string;
  /** Every label must match exactly. */
  labelSelector?: Record<string, string>;
}

export interface ListResult<T> {
  items: T[];
  /** Watch from here to see every change after this list. */
  resourceVersion: string;
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

export interface WatchEvent<T> {
  type: WatchEventType;
  object: T;
}

export interface WatchOptions extends ListOptions {
  /** Events strictly after this version; ExpiredError (code failed_precondition) when it is too old to replay. */
  resourceVersion: string;
}

export interface Watch {
  stop(): void;
}

export interface ResourceStore {
  get<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined>;
  list<K extends ResourceKind>(kind: K, options?: ListOptions): Promise<ListResult<ResourceByKind[K]>>;
  /** Sets uid, resourceVersion, generation 1 and creationTimestamp; AlreadyExistsError on a taken name. */
  create<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]>;
  /** Writes spec and metadata (labels, annotations, finalizers); bumps generation when spec changed. NotFoundError, ConflictError. */
  update<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]>;
  /** Writes status only. NotFoundError, ConflictError. */
  updateStatus<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]>;
  /** Removes the object, or marks it with deletionTimestamp while finalizers remain. Returns the object as it is after the call, or undefined when gone. NotFoundError. */
  delete<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined>;
  watch<K extends ResourceKind>(kind: K, options: WatchOptions, onEvent: (event: WatchEvent<ResourceByKind[K]>) => void): Watch;
  close(): Promise<void>;
}
