/**
 * The watches of the stores that publish their own writes (memory, SQLite; the Kubernetes store gets
 * its events from the API server): each write's event is kept in a ring of the last `history` events,
 * so that a watch can resume from an older resourceVersion, and fanned out to the watches whose kind,
 * namespace and label selector it matches — to each in resourceVersion order, each listener its own
 * copy (parsed from the event's JSON), a listener that throws logged. A watch from a version the ring
 * no longer holds, or newer than the store's, ends with ExpiredError: the consumer lists again.
 * Internal to store/.
 */
import { ExpiredError, ValidationError } from "@fast-sandbox/api";
import type { AnyResource, ResourceByKind, ResourceKind, Watch, WatchEvent, WatchEventType, WatchOptions } from "./resource-store.js";
import { WatchEnd, callListener, checkKind, eventTypeForSelector, type StoreLogger } from "./store-rules.js";

/**
 * Enough for what replays: this process's informers watch from the version of the list they just
 * made, or resume a watch that ended, and list again after a longer gap. The ring holds each event
 * serialized (some 650 bytes a Sandbox): 10 000 of them were ~6 MiB of a control plane's heap.
 */
export const DEFAULT_WATCH_HISTORY = 1_000;

/** A store's `watchHistory` option, checked: how many events it keeps for replay (default DEFAULT_WATCH_HISTORY). */
export function watchHistoryOption(value: number | undefined): number {
  const history = value ?? DEFAULT_WATCH_HISTORY;
  if (!Number.isSafeInteger(history) || history < 0) {
    throw new ValidationError("watchHistory", `${String(history)} is not a whole number of events >= 0`);
  }
  return history;
}

/** One committed change. The object is kept serialized: compact, and each delivery parses its own copy. */
export interface StoredEvent {
  resourceVersion: number;
  kind: ResourceKind;
  type: WatchEventType;
  namespace: string;
  labels: Record<string, string> | undefined;
  /** Labels as stored before a MODIFIED or DELETED event, so filtered watches see objects enter and leave their selector. */
  previousLabels: Record<string, string> | undefined;
  json: string;
}

/** The event of a write that stored `object` (carrying its new resourceVersion; for DELETED its final state). */
export function storedEvent(kind: ResourceKind, type: WatchEventType, object: AnyResource, previousLabels: Record<string, string> | undefined): StoredEvent {
  return {
    resourceVersion: Number(object.metadata.resourceVersion),
    kind,
    type,
    namespace: object.metadata.namespace ?? "",
    labels: object.metadata.labels,
    previousLabels,
    json: JSON.stringify(object),
  };
}

/**
 * When events reach the listeners:
 * - "after-write": live events during `publish`, so before the write returns (a store publishes
 *   after its transaction commits, never inside it); replayed events, and the end of a watch that
 *   cannot start, from a microtask, once the caller holds the Watch. A listener that writes is not
 *   re-entered: the delivery under way goes on with what that write queued, one event per watch in
 *   turn, so every watch still sees resourceVersion order.
 * - "next-macrotask": everything a macrotask (setImmediate) after the write or the watch call, each
 *   watch's queue drained on its own: a writer never runs inside a listener, as with the API server.
 */
export type Delivery = "after-write" | "next-macrotask";

export interface WatchHubOptions {
  /** Events kept for replay (see watchHistoryOption). */
  history: number;
  /** The store's resourceVersion when the hub starts: watches from older versions expire. */
  resourceVersion: number;
  delivery: Delivery;
  /** Receives what listeners throw. */
  logger: StoreLogger;
}

interface PendingDelivery {
  type: WatchEventType;
  json: string;
}

interface Watcher {
  kind: ResourceKind;
  namespace: string | undefined;
  labelSelector: Record<string, string> | undefined;
  onEvent: (event: WatchEvent<AnyResource>) => void;
  end: WatchEnd;
  queue: PendingDelivery[];
  /** Index of the next undelivered entry of `queue`. */
  head: number;
  /** The watch ends (cleanly, or failed with `error`) once its queue is delivered; it takes no new events. */
  ending: { error: unknown } | undefined;
  /** A drain of this watch is scheduled ("next-macrotask"). */
  scheduled: boolean;
}

export class WatchHub {
  /** Ring buffer of the last `history` events, oldest at `#historyStart`. */
  readonly #history: (StoredEvent | undefined)[];
  #historyStart = 0;
  #historyLength = 0;
  /** Watches from versions below this cannot be replayed: their events were evicted, compacted or predate the hub. */
  #replayHorizon: number;
  /** The resourceVersion of the last published write (or of the store when the hub started). */
  #latestResourceVersion: number;
  readonly #watchers = new Set<Watcher>();
  readonly #delivery: Delivery;
  readonly #logger: StoreLogger;
  #flushing = false;

  constructor(options: WatchHubOptions) {
    this.#history = new Array<StoredEvent | undefined>(options.history);
    this.#latestResourceVersion = options.resourceVersion;
    this.#replayHorizon = options.resourceVersion;
    this.#delivery = options.delivery;
    this.#logger = options.logger;
  }

  /** How many watches are open. */
  get openWatches(): number {
    return this.#watchers.size;
  }

  /**
   * Starts a watch: first the kept events after `options.resourceVersion` that match, then live ones.
   * Throws ValidationError for an invalid kind or resourceVersion; a version that cannot be served —
   * or the error `failure` returns, checked after the arguments (the memory store's injected
   * failures) — ends the watch through `done` before any event.
   */
  watch<K extends ResourceKind>(
    kind: K,
    options: WatchOptions,
    onEvent: (event: WatchEvent<ResourceByKind[K]>) => void,
    failure?: () => Error | undefined,
  ): Watch {
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
        watcher.head = 0;
      }),
      queue: [],
      head: 0,
      ending: undefined,
      scheduled: false,
    };
    const refusal = failure?.() ?? this.#expiry(from);
    if (refusal !== undefined) {
      this.#later(() => watcher.end.end(refusal));
      return watcher.end;
    }
    const replay: StoredEvent[] = [];
    for (let i = this.#historyLength - 1; i >= 0; i--) {
      const event = this.#historyAt(i);
      if (event.resourceVersion <= from) break;
      replay.push(event);
    }
    for (const event of replay.reverse()) enqueue(watcher, event);
    this.#watchers.add(watcher);
    if (this.#delivery === "next-macrotask") this.#schedule(watcher);
    else if (watcher.queue.length > 0) queueMicrotask(() => this.#flush());
    return watcher.end;
  }

  /** Keeps a committed write's event for replay and delivers it to the watches it matches. */
  publish(event: StoredEvent): void {
    this.#latestResourceVersion = event.resourceVersion;
    const capacity = this.#history.length;
    if (capacity === 0) {
      this.#replayHorizon = event.resourceVersion;
    } else if (this.#historyLength < capacity) {
      this.#history[(this.#historyStart + this.#historyLength) % capacity] = event;
      this.#historyLength++;
    } else {
      this.#replayHorizon = this.#historyAt(0).resourceVersion;
      this.#history[this.#historyStart] = event;
      this.#historyStart = (this.#historyStart + 1) % capacity;
    }
    // Queued for every watch before any delivery: a listener that writes must not overtake this event.
    for (const watcher of this.#watchers) if (watcher.ending === undefined) enqueue(watcher, event);
    this.#deliverQueued();
  }

  /**
   * Ends every open watch after the events already queued for it, as the API server does after its
   * watch timeout (`error` undefined: `done` resolves) or on a failure (`done` rejects with it).
   */
  endWatches(error?: Error): void {
    for (const watcher of this.#watchers) watcher.ending ??= { error };
    this.#deliverQueued();
  }

  /**
   * Forgets every kept event, as etcd's compaction does, and moves the store's version to
   * `resourceVersion`: a watch from any version before it expires. Open watches go on (see endWatches).
   */
  compact(resourceVersion: number): void {
    this.#history.fill(undefined);
    this.#historyStart = 0;
    this.#historyLength = 0;
    this.#latestResourceVersion = resourceVersion;
    this.#replayHorizon = resourceVersion;
  }

  /** Ends every watch at once, dropping what is queued: their `done` resolves. */
  close(): void {
    for (const watcher of [...this.#watchers]) watcher.end.end();
  }

  #expiry(from: number): ExpiredError | undefined {
    if (from > this.#latestResourceVersion) {
      return new ExpiredError(
        `resourceVersion ${from} is newer than the store's ${this.#latestResourceVersion} (from another store, or a replaced database?); ` +
          "list again and watch from the list's resourceVersion",
      );
    }
    if (from < this.#replayHorizon) {
      return new ExpiredError(
        `resourceVersion ${from} is too old to replay: the store keeps the events after ${this.#replayHorizon} ` +
          `(watchHistory ${this.#history.length}); list again and watch from the list's resourceVersion`,
      );
    }
    return undefined;
  }

  #historyAt(index: number): StoredEvent {
    return this.#history[(this.#historyStart + index) % this.#history.length] as StoredEvent;
  }

  /** Runs `fn` when the delivery mode delivers what is not a live event. */
  #later(fn: () => void): void {
    if (this.#delivery === "next-macrotask") setImmediate(fn);
    else queueMicrotask(fn);
  }

  /** Delivers what the watches have queued (events, ends), when the delivery mode says. */
  #deliverQueued(): void {
    if (this.#delivery === "after-write") this.#flush();
    else for (const watcher of this.#watchers) this.#schedule(watcher);
  }

  #schedule(watcher: Watcher): void {
    if (watcher.scheduled) return;
    watcher.scheduled = true;
    setImmediate(() => {
      watcher.scheduled = false;
      while (this.#deliverNext(watcher));
    });
  }

  /**
   * Delivers every queued event, one per watch in turn. A re-entrant call (a listener that writes)
   * returns at once: the outer loop delivers what that write queued, keeping the stack flat.
   */
  #flush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      let delivered = true;
      while (delivered) {
        delivered = false;
        for (const watcher of this.#watchers) if (this.#deliverNext(watcher)) delivered = true;
      }
    } finally {
      this.#flushing = false;
    }
  }

  /** Delivers the watcher's next event; false when there is none (then an ending watch ends). */
  #deliverNext(watcher: Watcher): boolean {
    if (watcher.end.ended) return false;
    const next = watcher.queue[watcher.head];
    if (next === undefined) {
      if (watcher.ending !== undefined) watcher.end.end(watcher.ending.error);
      return false;
    }
    watcher.head++;
    if (watcher.head === watcher.queue.length) {
      watcher.queue = [];
      watcher.head = 0;
    }
    const object = JSON.parse(next.json) as AnyResource;
    const bindings = { kind: watcher.kind, type: next.type, resourceVersion: object.metadata.resourceVersion };
    callListener(this.#logger, bindings, () => watcher.onEvent({ type: next.type, object }));
    return true;
  }
}

function enqueue(watcher: Watcher, event: StoredEvent): void {
  if (event.kind !== watcher.kind) return;
  if (watcher.namespace !== undefined && event.namespace !== watcher.namespace) return;
  const type = eventTypeForSelector(event.type, event.labels, event.previousLabels, watcher.labelSelector);
  if (type !== undefined) watcher.queue.push({ type, json: event.json });
}

function parseResourceVersion(value: string): number {
  if (typeof value !== "string" || !/^\d+$/.test(value)) {
    throw new ValidationError("resourceVersion", `${JSON.stringify(value)} is not a resourceVersion; watch from the resourceVersion of a list`);
  }
  return Number(value);
}
