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
import { ExpiredError, UnavailableError } from "@fast-sandbox/api";
import { systemClock, type Clock } from "../controller/clock.js";
import type {
  AnyResource,
  ListOptions,
  ListResult,
  ObjectKey,
  PageOptions,
  ResourceByKind,
  ResourceKind,
  ResourceStore,
  Watch,
  WatchEvent,
  WatchOptions,
  WriteOptions,
} from "./resource-store.js";
import {
  alreadyExistsError,
  byNamespaceAndName,
  checkKey,
  checkKind,
  checkPreconditions,
  compareKeys,
  consoleLogger,
  continueAfter,
  continueToken,
  keyOfObject,
  matchesLabels,
  notFoundError,
  pageLimit,
  preconditionVersion,
  requireShape,
  type StoreLogger,
} from "./store-rules.js";
import { WatchHub, storedEvent, watchHistoryOption } from "./watch-hub.js";
import { planCreate, planDelete, planStatusUpdate, planUpdate, withResourceVersion, type Change, type WritePlan } from "./write-plan.js";

export interface MemoryResourceStoreOptions {
  /**
   * Events kept so that a watch can resume from an older resourceVersion.
   * @default DEFAULT_WATCH_HISTORY (1 000)
   */
  watchHistory?: number;
  /**
   * Source of creationTimestamp and deletionTimestamp.
   * @default systemClock
   */
  clock?: Clock;
  /**
   * Receives errors thrown by watch listeners.
   * @default console
   */
  logger?: StoreLogger;
}

/** The calls `failNext` can make fail. */
export type MemoryStoreVerb = "get" | "list" | "create" | "update" | "updateStatus" | "delete" | "watch";

export class MemoryResourceStore implements ResourceStore {
  /** kind/namespace/name → the object, serialized (every read parses its own copy). */
  readonly #objects = new Map<string, string>();
  readonly #hub: WatchHub;
  readonly #clock: Clock;
  readonly #failures = new Map<MemoryStoreVerb, Error[]>();
  #resourceVersion = 0;
  #closed = false;

  constructor(options: MemoryResourceStoreOptions = {}) {
    this.#hub = new WatchHub({
      history: watchHistoryOption(options.watchHistory),
      resourceVersion: this.#resourceVersion,
      delivery: "next-macrotask",
      logger: options.logger ?? consoleLogger,
    });
    this.#clock = options.clock ?? systemClock;
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
    this.#hub.endWatches(error);
  }

  /**
   * Forgets the replay history (like etcd's compaction) and ends every open watch with ExpiredError:
   * watching again from any version seen so far fails (the store's version moves past them), so
   * consumers must list again.
   */
  expireWatches(): void {
    this.#resourceVersion += 1;
    this.#hub.compact(this.#resourceVersion);
    this.#hub.endWatches(new ExpiredError("the watch's resourceVersion was compacted (expireWatches); list again"));
  }

  /** How many watches are open: tests check that consumers stop theirs. */
  get openWatches(): number {
    return this.#hub.openWatches;
  }

  get<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    return this.#call("get", () => {
      checkKind(kind);
      checkKey(key);
      return this.#read(kind, key) as ResourceByKind[K] | undefined;
    });
  }

  list<K extends ResourceKind>(kind: K, options: ListOptions & PageOptions = {}): Promise<ListResult<ResourceByKind[K]>> {
    return this.#call("list", () => {
      checkKind(kind);
      const limit = pageLimit(options);
      const after = continueAfter(options);
      const items: AnyResource[] = [];
      for (const [storedKey, json] of this.#objects) {
        if (!storedKey.startsWith(`${kind}/`)) continue;
        const object = JSON.parse(json) as AnyResource;
        if (options.namespace !== undefined && object.metadata.namespace !== options.namespace) continue;
        if (matchesLabels(object.metadata.labels, options.labelSelector)) items.push(object);
      }
      items.sort(byNamespaceAndName);
      const keyOf = (object: AnyResource) => ({ namespace: object.metadata.namespace ?? "", name: object.metadata.name });
      const found = after ? items.findIndex((object) => compareKeys(keyOf(object), after) > 0) : 0;
      const start = found < 0 ? items.length : found;
      const end = limit === undefined ? items.length : Math.min(items.length, start + limit);
      const page = items.slice(start, end);
      const last = page.at(-1);
      return {
        items: page as ResourceByKind[K][],
        resourceVersion: String(this.#resourceVersion),
        ...(end < items.length && last ? { continue: continueToken(keyOf(last)) } : {}),
      };
    });
  }

  create<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]> {
    return this.#call("create", () => {
      checkKind(kind);
      const given = requireShape(object);
      const key = keyOfObject(given);
      if (this.#objects.has(storageKey(kind, key))) throw alreadyExistsError(kind, key);
      return this.#commit(kind, planCreate(kind, given, this.#clock)) as ResourceByKind[K];
    });
  }

  update<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    return this.#writeExisting("update", kind, object, options, planUpdate);
  }

  updateStatus<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    return this.#writeExisting("updateStatus", kind, object, options, planStatusUpdate);
  }

  delete<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    return this.#call("delete", () => {
      checkKind(kind);
      checkKey(key);
      const current = this.#read(kind, key);
      if (current === undefined) throw notFoundError(kind, key);
      const plan = planDelete(current, this.#clock);
      const result = this.#apply(kind, plan);
      return plan.event === "DELETED" ? undefined : (result as ResourceByKind[K]);
    });
  }

  watch<K extends ResourceKind>(kind: K, options: WatchOptions, onEvent: (event: WatchEvent<ResourceByKind[K]>) => void): Watch {
    if (this.#closed) throw new UnavailableError("the memory resource store is closed");
    return this.#hub.watch(kind, options, onEvent, () => this.#takeFailure("watch"));
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#hub.close();
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

  #read(kind: ResourceKind, key: ObjectKey): AnyResource | undefined {
    const json = this.#objects.get(storageKey(kind, key));
    return json === undefined ? undefined : (JSON.parse(json) as AnyResource);
  }

  /** update and updateStatus: the object `object` names, its preconditions checked, changed as `plan` says. */
  #writeExisting<K extends ResourceKind>(
    verb: MemoryStoreVerb,
    kind: K,
    object: ResourceByKind[K],
    options: WriteOptions | undefined,
    plan: (kind: ResourceKind, current: AnyResource, given: AnyResource) => WritePlan,
  ): Promise<ResourceByKind[K]> {
    return this.#call(verb, () => {
      checkKind(kind);
      const given = requireShape(object);
      const version = preconditionVersion(kind, given, options);
      const key = keyOfObject(given);
      const current = this.#read(kind, key);
      if (current === undefined) throw notFoundError(kind, key);
      checkPreconditions(kind, key, current, version, given.metadata.uid);
      return this.#apply(kind, plan(kind, current, given)) as ResourceByKind[K];
    });
  }

  /** The object after the write: the current one when the plan changes nothing. */
  #apply(kind: ResourceKind, plan: WritePlan): AnyResource {
    return plan.event === undefined ? plan.object : this.#commit(kind, plan);
  }

  /** Stores (or removes, for DELETED) the object with the next resourceVersion and publishes the event. */
  #commit(kind: ResourceKind, change: Change): AnyResource {
    this.#resourceVersion += 1;
    const event = storedEvent(kind, change.event, withResourceVersion(change.object, this.#resourceVersion), change.previousLabels);
    const key = storageKey(kind, keyOfObject(change.object));
    if (change.event === "DELETED") this.#objects.delete(key);
    else this.#objects.set(key, event.json);
    this.#hub.publish(event);
    return JSON.parse(event.json) as AnyResource;
  }
}

function storageKey(kind: ResourceKind, key: ObjectKey): string {
  return `${kind}/${key.namespace}/${key.name}`;
}
