/**
 * An informer: one kind of the `ResourceStore` kept in an in-memory cache by list + watch, with
 * named indexes (e.g. sandboxes by agent), and handlers told about every change.
 * - Handlers run asynchronously, in the order the changes happened, after the cache holds the
 *   change, and never inside the store's write call: a writer cannot depend on them.
 * - A watch that ends (`Watch.done` resolves: the API server closes watches after a while) is
 *   started again from the last version seen. One that fails (ExpiredError: its version is too old
 *   to replay; or any other error) makes the informer list again, after a back-off through the
 *   Clock, and tell the handlers what changed between the two lists (adds, updates, deletes). So
 *   does a list that has not finished after `listTimeoutMs`: a store whose request nobody answers
 *   must not freeze the cache for good (the Kubernetes store gives up on its own sooner).
 * - It can be shared: several controllers of one process watch one kind through one cache (one copy
 *   of every object, one watch). Each adds its handlers and indexes — also once it runs: handlers
 *   added late are first told about every cached object (onAdd), in order with the other changes —
 *   and each start() is matched by a stop(): it stops with the last of its users.
 */
import type { Logger } from "pino";
import { ExpiredError, UnavailableError } from "@fast-sandbox/api";
import type { ListOptions, ResourceByKind, ResourceKind, ResourceStore, Watch, WatchEvent } from "../store/resource-store.js";
import { systemClock, type Clock, type Timer } from "./clock.js";
import { objectKey } from "./object-key.js";
import { backoffDelayMs } from "./work-queue.js";

/** The values an object is indexed under (none, one or several). */
export type IndexFunction<T> = (object: T) => readonly string[];

export interface InformerHandlers<T> {
  onAdd?(object: T): void;
  onUpdate?(previous: T, current: T): void;
  /** The object as last seen (from the watch's DELETED event, or the cache when a relist found it gone). */
  onDelete?(object: T): void;
}

export interface InformerOptions<K extends ResourceKind> {
  store: ResourceStore;
  kind: K;
  logger: Logger;
  /** Only this namespace. @default all namespaces */
  namespace?: string;
  /** Only objects with all these labels. @default every object */
  labelSelector?: Record<string, string>;
  /** Named indexes over the cache, e.g. sandboxes by agent: `{ agent: (s) => (s.status?.assignedPod ? [s.status.assignedPod] : []) }`. @default none */
  indexes?: Record<string, IndexFunction<ResourceByKind[K]>>;
  /** @default systemClock */
  clock?: Clock;
  /** Delay before the first relist after a failed list or watch; it doubles per further failure. @default 100 */
  relistInitialDelayMs?: number;
  /** The longest delay between relists (and between watches that keep ending at once). @default 10000 */
  relistMaxDelayMs?: number;
  /**
   * A list not finished after this long is given up (its result, should it come, is dropped) and
   * tried again like a failed one. Longer than the store's own limit, which says better what hung.
   * @default 120000
   */
  listTimeoutMs?: number;
}

/** A watch that lasted this long was healthy: its end does not count as a repeated failure. */
const HEALTHY_WATCH_MS = 1000;

/** Past the Kubernetes store's own limit on a list (90 s: kubernetes-request-timeout.ts). */
const DEFAULT_LIST_TIMEOUT_MS = 120_000;

type Delta<T> = { type: "replace"; items: T[] } | { type: "event"; event: WatchEvent<T> } | { type: "join"; handlers: HandlerEntry<T> };

interface HandlerEntry<T> {
  handlers: InformerHandlers<T>;
  /** False once removed: a late handler removed before it joined never joins. */
  active: boolean;
}

interface Index<T> {
  valuesOf: IndexFunction<T>;
  keysByValue: Map<string, Set<string>>;
}

export class Informer<K extends ResourceKind> {
  readonly kind: K;
  private readonly options: InformerOptions<K>;
  private readonly clock: Clock;
  private readonly cache = new Map<string, ResourceByKind[K]>();
  private readonly indexes = new Map<string, Index<ResourceByKind[K]>>();
  private readonly handlers: HandlerEntry<ResourceByKind[K]>[] = [];
  /** Changes received from the store and not yet applied to the cache. */
  private inbox: Delta<ResourceByKind[K]>[] = [];
  private deliveryScheduled = false;
  private watch: Watch | undefined;
  /** Bumped by every (re)list: what an older list or its watches still deliver is dropped. */
  private generation = 0;
  /** The pending relist or re-watch. */
  private retryTimer: Timer | undefined;
  /** Gives up the list in flight when it takes too long. */
  private listTimer: Timer | undefined;
  private failures = 0;
  private started = false;
  /** The users holding it: start() adds one, stop() removes one; the last stop() stops it. */
  private holders = 0;
  private stopped = false;
  private synced = false;
  private readonly syncWaiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  private readonly idleWaiters: (() => void)[] = [];

  constructor(options: InformerOptions<K>) {
    this.options = options;
    this.kind = options.kind;
    this.clock = options.clock ?? systemClock;
    this.addIndexes(options.indexes ?? {});
  }

  /**
   * Registers handlers, which see every object: added before start(), from the first list on; added
   * later, they are first told about every object in the cache (onAdd, asynchronously, after the
   * changes received before and before those received after). Returns the function that removes them.
   */
  addHandlers(handlers: InformerHandlers<ResourceByKind[K]>): () => void {
    const entry: HandlerEntry<ResourceByKind[K]> = { handlers, active: true };
    if (this.started) this.receive({ type: "join", handlers: entry });
    else this.handlers.push(entry);
    return () => {
      entry.active = false;
      const at = this.handlers.indexOf(entry);
      if (at >= 0) this.handlers.splice(at, 1);
    };
  }

  /**
   * Adds named indexes, built at once over what the cache holds. An index of a name it has already
   * is kept when it is the same function (users sharing the informer and an index), refused otherwise.
   */
  addIndexes(indexes: Record<string, IndexFunction<ResourceByKind[K]>>): void {
    for (const [name, valuesOf] of Object.entries(indexes)) {
      const existing = this.indexes.get(name);
      if (existing?.valuesOf === valuesOf) continue;
      if (existing) throw new Error(`informer of ${this.kind} has an index ${JSON.stringify(name)} already, made by another function`);
      const index: Index<ResourceByKind[K]> = { valuesOf, keysByValue: new Map() };
      this.indexes.set(name, index);
      for (const [key, object] of this.cache) this.indexUnder(index, key, object);
    }
  }

  /**
   * Lists and watches in the background; `waitForSync()` tells when the first list is in the cache.
   * Each call holds the informer until a matching stop().
   */
  start(): void {
    if (this.stopped) return;
    this.holders += 1;
    if (this.started) return;
    this.started = true;
    void this.listAndWatch();
  }

  /** True once the cache holds the first list (and the handlers have been told about it). */
  hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves once the cache holds the first list; rejects when the informer stops before that. */
  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    if (this.stopped) return Promise.reject(this.stoppedError());
    return new Promise((resolve, reject) => this.syncWaiters.push({ resolve, reject }));
  }

  /** The cached object of key `namespace/name`. */
  get(key: string): ResourceByKind[K] | undefined {
    return this.cache.get(key);
  }

  list(): ResourceByKind[K][] {
    return [...this.cache.values()];
  }

  /** The cached objects indexed under `value` by the index `name`. */
  byIndex(name: string, value: string): ResourceByKind[K][] {
    const index = this.indexes.get(name);
    if (!index) throw new Error(`informer of ${this.kind} has no index ${JSON.stringify(name)} (it has: ${[...this.indexes.keys()].join(", ") || "none"})`);
    return [...(index.keysByValue.get(value) ?? [])].flatMap((key) => this.cache.get(key) ?? []);
  }

  /** True when every change received from the store so far is in the cache and handed to the handlers. */
  isIdle(): boolean {
    return this.inbox.length === 0 && !this.deliveryScheduled;
  }

  /** Resolves when the informer is idle (at once if it is). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Releases what one start() holds; the last holder's stop() (or a stop() before any start) stops it for good. */
  stop(): void {
    if (this.stopped) return;
    if (this.holders > 1) {
      this.holders -= 1;
      return;
    }
    this.holders = 0;
    this.stopped = true;
    this.watch?.stop();
    this.watch = undefined;
    this.retryTimer?.cancel();
    this.listTimer?.cancel();
    this.inbox = [];
    for (const waiter of this.syncWaiters.splice(0)) waiter.reject(this.stoppedError());
    this.notifyIfIdle();
  }

  /** Lists, replaces the cache with the list, and watches from the list's version. */
  private async listAndWatch(): Promise<void> {
    const generation = this.nextGeneration();
    const timeoutMs = this.options.listTimeoutMs ?? DEFAULT_LIST_TIMEOUT_MS;
    const listTimer = this.clock.setTimeout(() => {
      if (this.stopped || generation !== this.generation) return;
      this.listLater(new UnavailableError(`the list of ${this.kind} did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    this.listTimer = listTimer;
    try {
      const { items, resourceVersion } = await this.options.store.list(this.kind, this.filter());
      if (this.stopped || generation !== this.generation) return;
      listTimer.cancel();
      this.receive({ type: "replace", items });
      this.watchFrom(resourceVersion, generation);
    } catch (error) {
      if (this.stopped || generation !== this.generation) return;
      this.listLater(error);
    }
  }

  private watchFrom(resourceVersion: string, generation: number): void {
    let lastVersion = resourceVersion;
    const startedAtMs = this.clock.now().getTime();
    // A watch that ran for a while was healthy: trouble after it starts the back-off from the beginning.
    const forgetFailuresIfItLasted = () => {
      if (this.clock.now().getTime() - startedAtMs >= HEALTHY_WATCH_MS) this.failures = 0;
    };
    let watch: Watch;
    try {
      const onProgress = (version: string) => {
        if (!this.stopped && generation === this.generation) lastVersion = version;
      };
      watch = this.options.store.watch(this.kind, { ...this.filter(), resourceVersion, onProgress }, (event) => {
        if (this.stopped || generation !== this.generation) return;
        lastVersion = event.object.metadata.resourceVersion ?? lastVersion;
        // A watch that delivers is healthy too.
        this.failures = 0;
        this.receive({ type: "event", event });
      });
    } catch (error) {
      this.listLater(error);
      return;
    }
    this.watch = watch;
    watch.done.then(
      () => {
        if (this.stopped || generation !== this.generation) return;
        // Ended without an error: carry on from the last version seen, at once unless it keeps ending.
        forgetFailuresIfItLasted();
        this.failures += 1;
        const delayMs = this.failures > 1 ? this.backoffMs() : 0;
        this.options.logger.debug({ kind: this.kind, resourceVersion: lastVersion, retryInMs: delayMs }, "watch ended; watching again");
        if (delayMs === 0) this.watchFrom(lastVersion, generation);
        else this.retryTimer = this.clock.setTimeout(() => this.watchFrom(lastVersion, generation), delayMs);
      },
      (error: unknown) => {
        if (this.stopped || generation !== this.generation) return;
        forgetFailuresIfItLasted();
        this.listLater(error);
      },
    );
  }

  private listLater(error: unknown): void {
    this.nextGeneration();
    this.failures += 1;
    const delayMs = this.backoffMs();
    const message =
      error instanceof ExpiredError ? `watch of ${this.kind} expired; listing again` : `list or watch of ${this.kind} failed; listing again after a pause`;
    this.options.logger.warn({ err: error, kind: this.kind, failures: this.failures, retryInMs: delayMs }, message);
    this.retryTimer = this.clock.setTimeout(() => void this.listAndWatch(), delayMs);
  }

  /** Stops the current watch and invalidates everything it (or a list in flight) would still deliver. */
  private nextGeneration(): number {
    this.retryTimer?.cancel();
    this.listTimer?.cancel();
    this.watch?.stop();
    this.watch = undefined;
    return ++this.generation;
  }

  private backoffMs(): number {
    return backoffDelayMs(this.failures, this.options.relistInitialDelayMs ?? 100, this.options.relistMaxDelayMs ?? 10_000);
  }

  private filter(): ListOptions {
    return {
      ...(this.options.namespace !== undefined ? { namespace: this.options.namespace } : {}),
      ...(this.options.labelSelector !== undefined ? { labelSelector: this.options.labelSelector } : {}),
    };
  }

  private receive(delta: Delta<ResourceByKind[K]>): void {
    this.inbox.push(delta);
    if (this.deliveryScheduled) return;
    this.deliveryScheduled = true;
    // A macrotask later: the writer whose write produced the event has long returned.
    setImmediate(() => this.deliver());
  }

  private deliver(): void {
    this.deliveryScheduled = false;
    const batch = this.inbox;
    this.inbox = [];
    for (const delta of batch) {
      if (this.stopped) break;
      if (delta.type === "replace") this.replace(delta.items);
      else if (delta.type === "event") this.apply(delta.event);
      else this.join(delta.handlers);
    }
    this.notifyIfIdle();
  }

  /** A handler added while running: it is told about what the cache holds now, then about every change after. */
  private join(entry: HandlerEntry<ResourceByKind[K]>): void {
    if (!entry.active) return;
    this.handlers.push(entry);
    for (const object of this.cache.values()) this.notifyOne(entry.handlers, (handlers) => handlers.onAdd?.(object));
  }

  /** Makes the cache equal to a fresh list, telling the handlers the difference. */
  private replace(items: ResourceByKind[K][]): void {
    const listed = new Set<string>();
    for (const object of items) {
      const key = objectKey(object);
      listed.add(key);
      this.upsert(key, object);
    }
    for (const [key, object] of [...this.cache]) {
      if (listed.has(key)) continue;
      this.remove(key, object);
      this.notify((handlers) => handlers.onDelete?.(object));
    }
    if (!this.synced) {
      this.synced = true;
      for (const waiter of this.syncWaiters.splice(0)) waiter.resolve();
    }
  }

  private apply(event: WatchEvent<ResourceByKind[K]>): void {
    const key = objectKey(event.object);
    if (event.type !== "DELETED") {
      this.upsert(key, event.object);
      return;
    }
    const previous = this.cache.get(key);
    if (!previous) return;
    this.remove(key, previous);
    this.notify((handlers) => handlers.onDelete?.(event.object));
  }

  private upsert(key: string, object: ResourceByKind[K]): void {
    const previous = this.cache.get(key);
    // The same version again (a replayed event, an unchanged object in a relist) is no change.
    if (previous && previous.metadata.resourceVersion === object.metadata.resourceVersion) return;
    if (previous) this.unindex(key, previous);
    this.cache.set(key, object);
    for (const index of this.indexes.values()) this.indexUnder(index, key, object);
    if (previous) this.notify((handlers) => handlers.onUpdate?.(previous, object));
    else this.notify((handlers) => handlers.onAdd?.(object));
  }

  private indexUnder(index: Index<ResourceByKind[K]>, key: string, object: ResourceByKind[K]): void {
    for (const value of index.valuesOf(object)) {
      let keys = index.keysByValue.get(value);
      if (!keys) index.keysByValue.set(value, (keys = new Set()));
      keys.add(key);
    }
  }

  private remove(key: string, previous: ResourceByKind[K]): void {
    this.unindex(key, previous);
    this.cache.delete(key);
  }

  private unindex(key: string, previous: ResourceByKind[K]): void {
    for (const index of this.indexes.values()) {
      for (const value of index.valuesOf(previous)) {
        const keys = index.keysByValue.get(value);
        keys?.delete(key);
        if (keys?.size === 0) index.keysByValue.delete(value);
      }
    }
  }

  private notify(call: (handlers: InformerHandlers<ResourceByKind[K]>) => void): void {
    // A copy: a handler may remove handlers (its own user stopping).
    for (const entry of [...this.handlers]) if (entry.active) this.notifyOne(entry.handlers, call);
  }

  private notifyOne(handlers: InformerHandlers<ResourceByKind[K]>, call: (handlers: InformerHandlers<ResourceByKind[K]>) => void): void {
    try {
      call(handlers);
    } catch (error) {
      this.options.logger.error({ err: error, kind: this.kind }, "an informer handler failed; the others still run");
    }
  }

  private notifyIfIdle(): void {
    if (!this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private stoppedError(): UnavailableError {
    return new UnavailableError(`the informer of ${this.kind} stopped before its first list`);
  }
}
