/**
 * An in-memory `ResourceStore` for fast unit tests of the controllers: the same semantics as the
 * SQLite and Kubernetes adapters (the contract suite runs on all three), plus what those tests need
 * to provoke: watches that end or expire (`endWatches`, `expireWatches`) and failing calls (`failNext`).
 *
 * - `resourceVersion` is a store-wide counter bumped by one per write.
 * - Events are delivered asynchronously (a macrotask after the write), in order, each listener its
 *   own copy, as from the API server: a writer never runs inside a listener.
 * - Watches replay from a ring of the last `watchHistory` events; older versions expire.
 */
import { randomUUID } from "node:crypto";
import { AlreadyExistsError, ConflictError, ExpiredError, NotFoundError, UnavailableError, ValidationError } from "@fast-sandbox/api";
import type {
  AnyResource,
  ListOptions,
  ListResult,
  ObjectKey,
  ResourceByKind,
  ResourceKind,
  ResourceStore,
  Watch,
  WatchEvent,
  WatchEventType,
  WatchOptions,
  WriteOptions,
} from "./resource-store.js";
import {
  VALIDATORS,
  WatchEnd,
  byNamespaceAndName,
  callListener,
  checkKey,
  checkKind,
  checkNoFinalizerAdded,
  conflictMessage,
  consoleLogger,
  describe,
  dropEmptyFinalizers,
  eventTypeForSelector,
  jsonEqual,
  keyOfObject,
  matchesLabels,
  normalize,
  preconditionVersion,
  requireShape,
  timestamp,
  uidConflictMessage,
  type StoreLogger,
} from "./store-rules.js";

export interface MemoryResourceStoreOptions {
  /**
   * Events kept so that a watch can resume from an older resourceVersion.
   * @default 10_000
   */
  watchHistory?: number;
  /**
   * Source of creationTimestamp and deletionTimestamp.
   * @default () => new Date()
   */
  clock?: () => Date;
  /**
   * Receives errors thrown by watch listeners.
   * @default console
   */
  logger?: StoreLogger;
}

/** The calls `failNext` can make fail. */
export type MemoryStoreVerb = "get" | "list" | "create" | "update" | "updateStatus" | "delete" | "watch";

interface StoredEvent {
  resourceVersion: number;
  kind: ResourceKind;
  type: WatchEventType;
  namespace: string;
  labels: Record<string, string> | undefined;
  previousLabels: Record<string, string> | undefined;
  json: string;
}

interface Watcher {
  kind: ResourceKind;
  namespace: string | undefined;
  labelSelector: Record<string, string> | undefined;
  onEvent: (event: WatchEvent<AnyResource>) => void;
  end: WatchEnd;
  queue: { type: WatchEventType; json: string }[];
  /** The watch ends after delivering its queue. */
  ending: { error: unknown } | undefined;
  scheduled: boolean;
}

const DEFAULT_WATCH_HISTORY = 10_000;

export class MemoryResourceStore implements ResourceStore {
  /** kind/namespace/name → the object, serialized (every read parses its own copy). */
  readonly #objects = new Map<string, string>();
  readonly #watchers = new Set<Watcher>();
  readonly #history: StoredEvent[] = [];
  readonly #watchHistory: number;
  readonly #clock: () => Date;
  readonly #logger: StoreLogger;
  readonly #failures = new Map<MemoryStoreVerb, Error[]>();
  #resourceVersion = 0;
  /** Watches from versions below this cannot be replayed. */
  #replayHorizon = 0;
  #closed = false;

  constructor(options: MemoryResourceStoreOptions = {}) {
    const watchHistory = options.watchHistory ?? DEFAULT_WATCH_HISTORY;
    if (!Number.isSafeInteger(watchHistory) || watchHistory < 0) {
      throw new ValidationError("watchHistory", `${String(watchHistory)} is not a whole number of events >= 0`);
    }
    this.#watchHistory = watchHistory;
    this.#clock = options.clock ?? (() => new Date());
    this.#logger = options.logger ?? consoleLogger;
  }

  /** The next call of `verb` fails with `error` (queued: several calls make several calls fail). */
  failNext(verb: MemoryStoreVerb, error: Error): void {
    const queue = this.#failures.get(verb) ?? [];
    queue.push(error);
    this.#failures.set(verb, queue);
  }

  /**
   * Ends every open watch after the events already queued for it, as the API server does after its
   * watch timeout (`error` undefined: `done` resolves) or on a failure (`done` rejects with it).
   */
  endWatches(error?: Error): void {
    for (const watcher of this.#watchers) this.#endAfterQueue(watcher, error === undefined ? undefined : { error });
  }

  /**
   * Forgets the replay history (like etcd's compaction) and ends every open watch with ExpiredError:
   * watching again from any version seen so far fails (the store's version moves past them), so
   * consumers must list again.
   */
  expireWatches(): void {
    this.#history.length = 0;
    this.#resourceVersion += 1;
    this.#replayHorizon = this.#resourceVersion;
    for (const watcher of this.#watchers) {
      this.#endAfterQueue(watcher, { error: new ExpiredError("the watch's resourceVersion was compacted (expireWatches); list again") });
    }
  }

  /** How many watches are open: tests check that consumers stop theirs. */
  get openWatches(): number {
    return this.#watchers.size;
  }

  get<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    return this.#call("get", () => {
      checkKind(kind);
      checkKey(key);
      const json = this.#objects.get(storageKey(kind, key));
      return json === undefined ? undefined : (JSON.parse(json) as ResourceByKind[K]);
    });
  }

  list<K extends ResourceKind>(kind: K, options: ListOptions = {}): Promise<ListResult<ResourceByKind[K]>> {
    return this.#call("list", () => {
      checkKind(kind);
      const items: AnyResource[] = [];
      for (const [storedKey, json] of this.#objects) {
        if (!storedKey.startsWith(`${kind}/`)) continue;
        const object = JSON.parse(json) as AnyResource;
        if (options.namespace !== undefined && object.metadata.namespace !== options.namespace) continue;
        if (matchesLabels(object.metadata.labels, options.labelSelector)) items.push(object);
      }
      items.sort(byNamespaceAndName);
      return { items: items as ResourceByKind[K][], resourceVersion: String(this.#resourceVersion) };
    });
  }

  create<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]> {
    return this.#call("create", () => {
      checkKind(kind);
      const given = requireShape(object);
      const key = keyOfObject(given);
      if (this.#objects.has(storageKey(kind, key))) {
        throw new AlreadyExistsError(`${describe(kind, key)} already exists; choose another name or delete it first`);
      }
      const { status: _ignored, ...rest } = given;
      const candidate = normalize<AnyResource>({
        ...rest,
        metadata: {
          ...given.metadata,
          uid: randomUUID(),
          resourceVersion: "0",
          generation: 1,
          creationTimestamp: timestamp(this.#clock()),
          deletionTimestamp: undefined,
        },
      });
      dropEmptyFinalizers(candidate.metadata);
      VALIDATORS[kind](candidate);
      return this.#commit(kind, "ADDED", candidate, undefined) as ResourceByKind[K];
    });
  }

  update<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    return this.#call("update", () => {
      checkKind(kind);
      const given = requireShape(object);
      const version = preconditionVersion(kind, given, options);
      const current = this.#readForWrite(kind, given, version);
      const currentMeta = current.metadata;
      const candidate = normalize<AnyResource>({
        ...given,
        metadata: {
          ...given.metadata,
          uid: currentMeta.uid,
          resourceVersion: currentMeta.resourceVersion,
          generation: currentMeta.generation,
          creationTimestamp: currentMeta.creationTimestamp,
          deletionTimestamp: currentMeta.deletionTimestamp,
        },
        status: current.status,
      });
      dropEmptyFinalizers(candidate.metadata);
      VALIDATORS[kind](candidate);
      const meta = candidate.metadata;
      checkNoFinalizerAdded(kind, currentMeta, meta);
      const specChanged = !jsonEqual(candidate.spec, current.spec);
      const metadataChanged =
        !jsonEqual(meta.labels, currentMeta.labels) ||
        !jsonEqual(meta.annotations, currentMeta.annotations) ||
        !jsonEqual(meta.finalizers, currentMeta.finalizers);
      if (!specChanged && !metadataChanged) return current as ResourceByKind[K];
      if (specChanged) meta.generation = (currentMeta.generation ?? 0) + 1;
      if (meta.deletionTimestamp !== undefined && meta.finalizers === undefined) {
        return this.#commit(kind, "DELETED", candidate, undefined) as ResourceByKind[K];
      }
      return this.#commit(kind, "MODIFIED", candidate, currentMeta.labels) as ResourceByKind[K];
    });
  }

  updateStatus<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    return this.#call("updateStatus", () => {
      checkKind(kind);
      const given = requireShape(object);
      const version = preconditionVersion(kind, given, options);
      const current = this.#readForWrite(kind, given, version);
      const candidate = normalize<AnyResource>({ ...current, status: given.status });
      VALIDATORS[kind](candidate);
      if (jsonEqual(candidate.status, current.status)) return current as ResourceByKind[K];
      return this.#commit(kind, "MODIFIED", candidate, current.metadata.labels) as ResourceByKind[K];
    });
  }

  delete<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    return this.#call("delete", () => {
      checkKind(kind);
      checkKey(key);
      const json = this.#objects.get(storageKey(kind, key));
      if (json === undefined) throw new NotFoundError(`${describe(kind, key)} not found`);
      const current = JSON.parse(json) as AnyResource;
      const meta = current.metadata;
      if (meta.finalizers !== undefined && meta.finalizers.length > 0) {
        if (meta.deletionTimestamp !== undefined) return current as ResourceByKind[K];
        const candidate = normalize(current);
        candidate.metadata.deletionTimestamp = timestamp(this.#clock());
        candidate.metadata.generation = (meta.generation ?? 0) + 1;
        return this.#commit(kind, "MODIFIED", candidate, meta.labels) as ResourceByKind[K];
      }
      this.#commit(kind, "DELETED", current, undefined);
      return undefined;
    });
  }

  watch<K extends ResourceKind>(kind: K, options: WatchOptions, onEvent: (event: WatchEvent<ResourceByKind[K]>) => void): Watch {
    if (this.#closed) throw new UnavailableError("the memory resource store is closed");
    checkKind(kind);
    const from = parseResourceVersion(options.resourceVersion);
    const watcher: Watcher = {
      kind,
      namespace: options.namespace,
      labelSelector: options.labelSelector === undefined ? undefined : { ...options.labelSelector },
      onEvent: onEvent as (event: WatchEvent<AnyResource>) => void,
      end: new WatchEnd(() => {
        this.#watchers.delete(watcher);
        watcher.queue = [];
      }),
      queue: [],
      ending: undefined,
      scheduled: false,
    };
    const injected = this.#takeFailure("watch");
    if (injected !== undefined) {
      this.#endAfterQueue(watcher, { error: injected });
      return watcher.end;
    }
    if (from > this.#resourceVersion) {
      this.#endAfterQueue(watcher, { error: new ExpiredError(`resourceVersion ${from} is newer than the store's ${this.#resourceVersion}; list again`) });
      return watcher.end;
    }
    if (from < this.#replayHorizon) {
      this.#endAfterQueue(watcher, {
        error: new ExpiredError(`resourceVersion ${from} is too old to replay: the store keeps the events after ${this.#replayHorizon}; list again`),
      });
      return watcher.end;
    }
    for (const event of this.#history) if (event.resourceVersion > from) enqueue(watcher, event);
    this.#watchers.add(watcher);
    this.#schedule(watcher);
    return watcher.end;
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const watcher of [...this.#watchers]) watcher.end.end();
    }
    return Promise.resolve();
  }

  #call<T>(verb: MemoryStoreVerb, body: () => T): Promise<T> {
    try {
      if (this.#closed) throw new UnavailableError("the memory resource store is closed");
      const injected = this.#takeFailure(verb);
      if (injected !== undefined) throw injected;
      return Promise.resolve(body());
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  #takeFailure(verb: MemoryStoreVerb): Error | undefined {
    const queue = this.#failures.get(verb);
    const error = queue?.shift();
    if (queue?.length === 0) this.#failures.delete(verb);
    return error;
  }

  #readForWrite(kind: ResourceKind, given: AnyResource, version: string | undefined): AnyResource {
    const key = keyOfObject(given);
    const json = this.#objects.get(storageKey(kind, key));
    if (json === undefined) throw new NotFoundError(`${describe(kind, key)} not found`);
    const current = JSON.parse(json) as AnyResource;
    if (version !== undefined && version !== current.metadata.resourceVersion) {
      throw new ConflictError(conflictMessage(kind, key, current.metadata.resourceVersion, version));
    }
    const sentUid = given.metadata.uid;
    if (sentUid !== undefined && sentUid !== "" && sentUid !== current.metadata.uid) {
      throw new ConflictError(uidConflictMessage(kind, key, current.metadata.uid, sentUid));
    }
    return current;
  }

  /** Stores (or removes, for DELETED) the object with the next resourceVersion and publishes the event. */
  #commit(kind: ResourceKind, type: WatchEventType, object: AnyResource, previousLabels: Record<string, string> | undefined): AnyResource {
    this.#resourceVersion += 1;
    const stored = { ...object, metadata: { ...object.metadata, resourceVersion: String(this.#resourceVersion) } } as AnyResource;
    const json = JSON.stringify(stored);
    const key = storageKey(kind, keyOfObject(stored));
    if (type === "DELETED") this.#objects.delete(key);
    else this.#objects.set(key, json);
    const event: StoredEvent = {
      resourceVersion: this.#resourceVersion,
      kind,
      type,
      namespace: stored.metadata.namespace ?? "",
      labels: stored.metadata.labels,
      previousLabels,
      json,
    };
    if (this.#watchHistory === 0) {
      this.#replayHorizon = this.#resourceVersion;
    } else {
      this.#history.push(event);
      if (this.#history.length > this.#watchHistory) this.#replayHorizon = this.#history.shift()?.resourceVersion ?? this.#replayHorizon;
    }
    for (const watcher of this.#watchers) {
      if (watcher.ending !== undefined) continue;
      enqueue(watcher, event);
      this.#schedule(watcher);
    }
    return JSON.parse(json) as AnyResource;
  }

  #endAfterQueue(watcher: Watcher, ending: { error: unknown } | undefined): void {
    if (watcher.ending !== undefined || watcher.end.ended) return;
    watcher.ending = ending ?? { error: undefined };
    this.#schedule(watcher);
  }

  #schedule(watcher: Watcher): void {
    if (watcher.scheduled) return;
    watcher.scheduled = true;
    setImmediate(() => {
      watcher.scheduled = false;
      this.#drain(watcher);
    });
  }

  #drain(watcher: Watcher): void {
    while (!watcher.end.ended) {
      const next = watcher.queue.shift();
      if (next === undefined) break;
      const object = JSON.parse(next.json) as AnyResource;
      const bindings = { kind: watcher.kind, type: next.type, resourceVersion: object.metadata.resourceVersion };
      callListener(this.#logger, bindings, () => watcher.onEvent({ type: next.type, object }));
    }
    if (watcher.ending !== undefined && watcher.queue.length === 0) watcher.end.end(watcher.ending.error);
  }
}

function enqueue(watcher: Watcher, event: StoredEvent): void {
  if (event.kind !== watcher.kind) return;
  if (watcher.namespace !== undefined && event.namespace !== watcher.namespace) return;
  const type = eventTypeForSelector(event.type, event.labels, event.previousLabels, watcher.labelSelector);
  if (type !== undefined) watcher.queue.push({ type, json: event.json });
}

function storageKey(kind: ResourceKind, key: ObjectKey): string {
  return `${kind}/${key.namespace}/${key.name}`;
}

function parseResourceVersion(value: string): number {
  if (typeof value !== "string" || !/^\d+$/.test(value)) {
    throw new ValidationError("resourceVersion", `${JSON.stringify(value)} is not a resourceVersion; watch from the resourceVersion of a list`);
  }
  return Number(value);
}
