/**
 * The storage port the reconcilers and the fast-path API use. Its semantics are the Kubernetes API's,
 * so the same code runs on SQLite (embedded), in memory (unit tests) and on the API server; the
 * contract suite (`resource-store.contract.ts`) checks every adapter against them:
 * - every write bumps `metadata.resourceVersion`; versions are opaque strings to compare for
 *   equality only (SQLite and the memory store use a store-wide counter, Kubernetes etcd's revision);
 * - `update`/`updateStatus` carry the `metadata.resourceVersion` that was read and fail with
 *   ConflictError when it is stale. Without one they fail with ValidationError, unless the caller
 *   asks for an unconditional write (`{ unconditional: true }`, see WriteOptions);
 * - `update` never changes `status`, `updateStatus` never changes `spec`/`metadata` (except
 *   resourceVersion); a write that changes nothing keeps the resourceVersion and emits no event;
 * - `metadata.generation` is 1 on create and bumps when the spec changes and when deletion starts
 *   (deletionTimestamp set), never on status or label/annotation/finalizer writes, so a controller
 *   records what it acted on in `status.observedGeneration`;
 * - `delete` of an object with finalizers only sets `metadata.deletionTimestamp` (once; later deletes
 *   change nothing); the object goes away when an update removes the last finalizer. Objects being
 *   deleted accept no new finalizers (ValidationError on `metadata.finalizers`);
 * - `watch` streams the ADDED/MODIFIED/DELETED events after a resourceVersion, in order, and can end:
 *   `Watch.done` tells how (see Watch). A consumer lists, watches from the list's resourceVersion,
 *   watches again from the last event's version when the watch ends, and lists again on ExpiredError.
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

/**
 * A list in pages, to bound what one call reads and holds (thousands of sandboxes). Pages follow
 * the list's order; an object that exists from the first page to the last is in exactly one of
 * them. Pages are not one snapshot on every backend (SQLite and the memory store read each page
 * when asked): an object created or deleted meanwhile may be missing.
 */
export interface PageOptions {
  /** At most this many objects (a whole number > 0); more follow when the result has `continue`. @default every object */
  limit?: number;
  /** Where the previous page ended: its result's `continue` (opaque; only for the same kind and filters). */
  continue?: string;
}

export interface ListResult<T> {
  /** Sorted by namespace, then name. */
  items: T[];
  /** Watch from here to see every change after this list (a paged list: after this page). */
  resourceVersion: string;
  /** Set when more objects follow this page: pass it as `continue` for the next one. */
  continue?: string;
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

export interface WatchEvent<T> {
  type: WatchEventType;
  object: T;
}

export interface WatchOptions extends ListOptions {
  /**
   * Events strictly after this version: the resourceVersion of a list, or of an event or object seen
   * before (not "0" or "": their meaning differs between backends). A version too old to replay ends
   * the watch with ExpiredError (code failed_precondition) through `Watch.done`.
   */
  resourceVersion: string;
  /**
   * Told the version the watch has progressed to without an event (a Kubernetes bookmark): a watch
   * started again from it need not replay, or fail for, what came before. Backends without
   * bookmarks never call it.
   */
  onProgress?(resourceVersion: string): void;
}

export interface Watch {
  /** Ends the watch: no event is delivered after it returns, and `done` resolves. Idempotent. */
  stop(): void;
  /**
   * Settles once, after the watch's last event:
   * - resolves when it ended without an error: `stop()`, the store was closed, or the backend ended
   *   it (the API server closes watches after a while). Watch again from the last event's version.
   * - rejects with ExpiredError when its resourceVersion cannot be served (too old, compacted, or
   *   from before a restart): list again and watch from the list's resourceVersion.
   * - rejects with another FsbError when it failed (UnavailableError: connection lost;
   *   PermissionDeniedError…): list again after a pause.
   * A rejection nobody awaits is not an unhandled rejection: the stores mark it handled.
   */
  readonly done: Promise<void>;
}

export interface WriteOptions {
  /**
   * Write without the resourceVersion precondition: the last writer wins, replacing what it writes
   * (the whole status for updateStatus; spec, labels, annotations and finalizers for update). A
   * `metadata.uid` in the object is still checked (ConflictError when the name was deleted and
   * created again). Only for writers that own what they write and are serialized per object by
   * other means — today the embedded SandboxManager's status writes (`writeStatus`). Everything
   * else sends the resourceVersion it read and, on ConflictError, reads again and recomputes.
   * On Kubernetes this is a read and a conditional write, repeated on conflict.
   */
  unconditional?: boolean;
}

export interface ResourceStore {
  /** Undefined when the object does not exist. */
  get<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined>;
  /** ValidationError for a `limit` that is not a whole number > 0 or a `continue` this store did not make; ExpiredError when a `continue` is too old (Kubernetes). */
  list<K extends ResourceKind>(kind: K, options?: ListOptions & PageOptions): Promise<ListResult<ResourceByKind[K]>>;
  /**
   * Sets uid, resourceVersion, generation 1 and creationTimestamp, and ignores status (written only
   * by updateStatus) and any identity fields sent. AlreadyExistsError on a taken name, ValidationError.
   */
  create<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]>;
  /**
   * Writes spec and metadata (labels, annotations, finalizers); bumps generation when the spec
   * changed. Removing the last finalizer of an object being deleted deletes it (the returned object
   * is its final state). NotFoundError, ConflictError, ValidationError.
   */
  update<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]>;
  /** Writes status only (replacing it). NotFoundError, ConflictError, ValidationError. */
  updateStatus<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]>;
  /** Removes the object, or marks it with deletionTimestamp while finalizers remain. Returns the object as it is after the call, or undefined when gone. NotFoundError. */
  delete<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined>;
  /**
   * Delivers the events after `options.resourceVersion` that match the filters, in order, each
   * listener its own copy. With a labelSelector, an object whose labels start (stop) matching arrives
   * as ADDED (DELETED). Throws only for invalid arguments or a closed store; everything else ends
   * the watch through `Watch.done`. A listener that throws is logged and does not stop the watch.
   */
  watch<K extends ResourceKind>(kind: K, options: WatchOptions, onEvent: (event: WatchEvent<ResourceByKind[K]>) => void): Watch;
  /** Ends every watch (their `done` resolves) and releases the backend. */
  close(): Promise<void>;
}
