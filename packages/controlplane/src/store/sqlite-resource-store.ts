/**
 * The embedded-mode `ResourceStore`: Kubernetes-like objects in one SQLite file (better-sqlite3).
 *
 * - One process owns a database file: every write is one synchronous `BEGIN IMMEDIATE` transaction
 *   and watches are fed from this process's own writes only (another process writing to the same
 *   file would not be seen by its watches).
 * - `resourceVersion` is a store-wide counter persisted in `store_state`, bumped by exactly one per
 *   write, so it survives restarts and never goes backwards.
 * - Watches replay from an in-memory ring of the last `watchHistory` events. The ring starts empty
 *   on open, so after a restart a watch from an older version gets ExpiredError and relists —
 *   the same contract as the Kubernetes API's 410 Gone.
 * - SQLite errors are translated into the Fast Sandbox error hierarchy here and nowhere else.
 */
import { randomUUID } from "node:crypto";
import Database from "better-sqlite3";
import {
  AlreadyExistsError,
  ConflictError,
  ExpiredError,
  FailedPreconditionError,
  FsbError,
  NotFoundError,
  UnavailableError,
  ValidationError,
  type ObjectMeta,
} from "@fast-sandbox/api";
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

export { jsonEqual, type StoreLogger };

export interface SqliteResourceStoreOptions {
  /** Database file, or `":memory:"` for a throw-away store. The directory must exist. */
  path: string;
  /**
   * Events kept in memory so that a watch can resume from an older resourceVersion.
   * @default 10_000
   */
  watchHistory?: number;
  /**
   * Source of creationTimestamp and deletionTimestamp.
   * @default () => new Date()
   */
  clock?: () => Date;
  /**
   * How long a statement waits for a lock held by another connection before failing with UnavailableError.
   * @default 5_000
   */
  busyTimeoutMs?: number;
  /**
   * Receives errors thrown by watch listeners.
   * @default console
   */
  logger?: StoreLogger;
}

const DEFAULT_WATCH_HISTORY = 10_000;
const DEFAULT_BUSY_TIMEOUT_MS = 5_000;

interface Migration {
  description: string;
  sql: string;
}

/**
 * Schema steps; step i brings `PRAGMA user_version` from i to i + 1. Append only: never edit a
 * released step, add a new one.
 */
const MIGRATIONS: readonly Migration[] = [
  {
    description: "objects and the store-wide resourceVersion counter",
    sql: `
      CREATE TABLE objects (
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        uid TEXT NOT NULL UNIQUE,
        resource_version INTEGER NOT NULL,
        api_version TEXT NOT NULL,
        -- metadata without resourceVersion: the column above is its only source of truth
        metadata_json TEXT NOT NULL,
        spec_json TEXT NOT NULL,
        status_json TEXT,
        PRIMARY KEY (kind, namespace, name)
      );
      CREATE TABLE store_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        resource_version INTEGER NOT NULL
      );
      INSERT INTO store_state (id, resource_version) VALUES (1, 0);
    `,
  },
];

/** The schema version this code writes; a database with a higher `user_version` is refused. */
export const SQLITE_STORE_SCHEMA_VERSION = MIGRATIONS.length;

/** Opens (creating and migrating when needed) a SQLite-backed ResourceStore. */
export function openSqliteResourceStore(options: SqliteResourceStoreOptions): SqliteResourceStore {
  const watchHistory = options.watchHistory ?? DEFAULT_WATCH_HISTORY;
  if (!Number.isSafeInteger(watchHistory) || watchHistory < 0) {
    throw new ValidationError("watchHistory", `${String(watchHistory)} is not a whole number of events >= 0`);
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new ValidationError("busyTimeoutMs", `${String(busyTimeoutMs)} is not a whole number of milliseconds >= 0`);
  }
  let db: Database.Database;
  try {
    db = new Database(options.path);
  } catch (error) {
    throw translateSqliteError(error, `cannot open the SQLite database ${options.path}`);
  }
  try {
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    migrate(db, options.path);
  } catch (error) {
    db.close();
    throw translateSqliteError(error, `cannot open the SQLite database ${options.path}`);
  }
  return new SqliteResourceStore(db, {
    watchHistory,
    clock: options.clock ?? (() => new Date()),
    logger: options.logger ?? consoleLogger,
  });
}

function migrate(db: Database.Database, path: string): void {
  const check = (version: number): void => {
    if (version > MIGRATIONS.length) {
      throw new FailedPreconditionError(
        `the SQLite database ${path} has store schema version ${version}, but this control plane knows versions up to ` +
          `${MIGRATIONS.length}; run a newer Fast Sandbox or point the control plane at another database file`,
      );
    }
  };
  check(userVersion(db));
  if (userVersion(db) === MIGRATIONS.length) return;
  db.transaction(() => {
    // Read again under the write lock: another process may have migrated meanwhile.
    const from = userVersion(db);
    check(from);
    for (const migration of MIGRATIONS.slice(from)) db.exec(migration.sql);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  }).immediate();
}

function userVersion(db: Database.Database): number {
  return db.pragma("user_version", { simple: true }) as number;
}

interface ObjectRow {
  kind: string;
  namespace: string;
  name: string;
  uid: string;
  resource_version: number;
  api_version: string;
  metadata_json: string;
  spec_json: string;
  status_json: string | null;
}

/** One committed change, kept in the replay ring. The object is kept serialized: compact, and each delivery parses its own copy. */
interface StoredEvent {
  resourceVersion: number;
  kind: ResourceKind;
  type: WatchEventType;
  namespace: string;
  labels: Record<string, string> | undefined;
  /** Labels before a MODIFIED event, so filtered watches see objects enter and leave their selector. */
  previousLabels: Record<string, string> | undefined;
  json: string;
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
}

interface WriteOutcome<T> {
  result: T;
  events: StoredEvent[];
}

interface StoreSettings {
  watchHistory: number;
  clock: () => Date;
  logger: StoreLogger;
}

export class SqliteResourceStore implements ResourceStore {
  readonly #db: Database.Database;
  readonly #settings: StoreSettings;
  readonly #statements: ReturnType<typeof prepareStatements>;
  readonly #runImmediate: (fn: () => unknown) => unknown;
  readonly #runDeferred: (fn: () => unknown) => unknown;

  /** Ring buffer of the last `watchHistory` events, oldest at `#historyStart`. */
  readonly #history: (StoredEvent | undefined)[];
  #historyStart = 0;
  #historyLength = 0;
  /** Watches from versions below this cannot be replayed: their events were evicted or predate this process. */
  #replayHorizon: number;
  /** The resourceVersion of the last committed write. */
  #latestResourceVersion: number;

  readonly #watchers = new Set<Watcher>();
  #flushing = false;
  #closed = false;

  /** Use openSqliteResourceStore. */
  constructor(db: Database.Database, settings: StoreSettings) {
    this.#db = db;
    this.#settings = settings;
    this.#statements = prepareStatements(db);
    const transaction = db.transaction((fn: () => unknown) => fn());
    this.#runImmediate = (fn) => transaction.immediate(fn);
    this.#runDeferred = (fn) => transaction.deferred(fn);
    this.#history = new Array<StoredEvent | undefined>(settings.watchHistory);
    this.#latestResourceVersion = this.#statements.readCounter.get()?.resource_version ?? 0;
    this.#replayHorizon = this.#latestResourceVersion;
  }

  get<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    return attempt(() => {
      this.#assertOpen();
      checkKind(kind);
      checkKey(key);
      const row = this.#statements.select.get(kind, key.namespace, key.name);
      return row === undefined ? undefined : (decodeRow(row) as ResourceByKind[K]);
    });
  }

  list<K extends ResourceKind>(kind: K, options: ListOptions = {}): Promise<ListResult<ResourceByKind[K]>> {
    return attempt(() => {
      this.#assertOpen();
      checkKind(kind);
      const { namespace, labelSelector } = options;
      // One read transaction: the items and the version belong to the same snapshot.
      return this.#runDeferred(() => {
        const rows = namespace === undefined ? this.#statements.selectKind.all(kind) : this.#statements.selectNamespace.all(kind, namespace);
        const items: ResourceByKind[K][] = [];
        for (const row of rows) {
          const object = decodeRow(row);
          if (matchesLabels(object.metadata.labels, labelSelector)) items.push(object as ResourceByKind[K]);
        }
        const resourceVersion = String(this.#statements.readCounter.get()?.resource_version ?? 0);
        return { items, resourceVersion };
      }) as ListResult<ResourceByKind[K]>;
    });
  }

  create<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]> {
    return attempt(() => {
      checkKind(kind);
      const given = requireShape(object);
      return this.#write<AnyResource | undefined>(() => {
        const key = keyOfObject(given);
        if (this.#statements.select.get(kind, key.namespace, key.name) !== undefined) {
          throw new AlreadyExistsError(`${describe(kind, key)} already exists; choose another name or delete it first`);
        }
        // Like a Kubernetes resource with a status subresource: create ignores status, the store owns identity fields.
        const { status: _ignored, ...rest } = given;
        const candidate = normalize<AnyResource>({
          ...rest,
          metadata: {
            ...given.metadata,
            uid: randomUUID(),
            resourceVersion: "0",
            generation: 1,
            creationTimestamp: this.#timestamp(),
            deletionTimestamp: undefined,
          },
        });
        dropEmptyFinalizers(candidate.metadata);
        VALIDATORS[kind](candidate);
        requireNamespace(candidate);
        const resourceVersion = this.#nextResourceVersion();
        this.#statements.insert.run(encodeRow(kind, candidate, resourceVersion));
        const stored = withResourceVersion(candidate, resourceVersion);
        return this.#outcome(kind, "ADDED", stored, undefined);
      }) as ResourceByKind[K];
    });
  }

  /**
   * Writes spec, labels, annotations and finalizers; keeps the stored status and identity fields.
   * `metadata.uid`, when given, must match (the name may have been deleted and created again). An
   * update that changes nothing writes nothing and keeps the resourceVersion. Removing the last
   * finalizer of an object with a deletionTimestamp removes it: the DELETED event and the returned
   * object carry its final state.
   */
  update<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    return attempt(() => {
      checkKind(kind);
      const given = requireShape(object);
      const version = preconditionVersion(kind, given, options);
      return this.#write<AnyResource | undefined>(() => {
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
        if (!specChanged && !metadataChanged) return { result: current, events: [] };
        if (specChanged) meta.generation = (currentMeta.generation ?? 0) + 1;
        const resourceVersion = this.#nextResourceVersion();
        const stored = withResourceVersion(candidate, resourceVersion);
        if (meta.deletionTimestamp !== undefined && meta.finalizers === undefined) {
          this.#statements.remove.run(kind, current.metadata.namespace ?? "", meta.name);
          return this.#outcome(kind, "DELETED", stored, undefined);
        }
        this.#statements.update.run(encodeRow(kind, candidate, resourceVersion));
        return this.#outcome(kind, "MODIFIED", stored, currentMeta.labels);
      }) as ResourceByKind[K];
    });
  }

  /**
   * Writes status only; spec and metadata of the given object are ignored. Same preconditions as
   * `update`. A status equal to the stored one writes nothing and keeps the resourceVersion.
   */
  updateStatus<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    return attempt(() => {
      checkKind(kind);
      const given = requireShape(object);
      const version = preconditionVersion(kind, given, options);
      return this.#write<AnyResource | undefined>(() => {
        const current = this.#readForWrite(kind, given, version);
        const candidate = normalize<AnyResource>({ ...current, status: given.status });
        VALIDATORS[kind](candidate);
        if (jsonEqual(candidate.status, current.status)) return { result: current, events: [] };
        const resourceVersion = this.#nextResourceVersion();
        this.#statements.updateStatus.run({
          kind,
          namespace: candidate.metadata.namespace ?? "",
          name: candidate.metadata.name,
          resource_version: resourceVersion,
          status_json: candidate.status === undefined ? null : JSON.stringify(candidate.status),
        });
        const stored = withResourceVersion(candidate, resourceVersion);
        return this.#outcome(kind, "MODIFIED", stored, current.metadata.labels);
      }) as ResourceByKind[K];
    });
  }

  /**
   * Without finalizers: removes the object (DELETED event carrying its last state) and returns undefined.
   * With finalizers: sets deletionTimestamp and bumps generation once (MODIFIED event) and returns
   * the object; later calls change nothing.
   */
  delete<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    return attempt(() => {
      checkKind(kind);
      checkKey(key);
      return this.#write<AnyResource | undefined>(() => {
        const row = this.#statements.select.get(kind, key.namespace, key.name);
        if (row === undefined) throw new NotFoundError(`${describe(kind, key)} not found`);
        const current = decodeRow(row);
        const meta = current.metadata;
        if (meta.finalizers !== undefined && meta.finalizers.length > 0) {
          if (meta.deletionTimestamp !== undefined) return { result: current, events: [] };
          const candidate = normalize(current);
          candidate.metadata.deletionTimestamp = this.#timestamp();
          candidate.metadata.generation = (meta.generation ?? 0) + 1;
          const resourceVersion = this.#nextResourceVersion();
          this.#statements.update.run(encodeRow(kind, candidate, resourceVersion));
          const stored = withResourceVersion(candidate, resourceVersion);
          return this.#outcome(kind, "MODIFIED", stored, meta.labels);
        }
        const resourceVersion = this.#nextResourceVersion();
        this.#statements.remove.run(kind, key.namespace, key.name);
        const event = this.#outcome(kind, "DELETED", withResourceVersion(current, resourceVersion), undefined);
        return { result: undefined, events: event.events };
      }) as ResourceByKind[K] | undefined;
    });
  }

  /**
   * Delivers, in resourceVersion order, the events after `options.resourceVersion` that match the
   * filters: first those still in the replay ring (from a microtask, so `stop()` is usable by then),
   * then live ones right after each write commits. With a labelSelector, an object whose labels stop
   * (start) matching arrives as DELETED (ADDED), as from the Kubernetes API.
   * A version older than the ring (or newer than the store) ends the watch at once with ExpiredError
   * through `done` (from a microtask): list again.
   */
  watch<K extends ResourceKind>(kind: K, options: WatchOptions, onEvent: (event: WatchEvent<ResourceByKind[K]>) => void): Watch {
    this.#assertOpen();
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
    };
    let expired: ExpiredError | undefined;
    if (from > this.#latestResourceVersion) {
      expired = new ExpiredError(
        `resourceVersion ${from} is newer than the store's ${this.#latestResourceVersion} (was the database replaced?); ` +
          "list again and watch from the list's resourceVersion",
      );
    } else if (from < this.#replayHorizon) {
      expired = new ExpiredError(
        `resourceVersion ${from} is too old to replay: the store keeps the events after ${this.#replayHorizon} ` +
          `(watchHistory ${this.#settings.watchHistory}); list again and watch from the list's resourceVersion`,
      );
    }
    if (expired !== undefined) {
      const error = expired;
      queueMicrotask(() => watcher.end.end(error));
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
    if (watcher.queue.length > 0) queueMicrotask(() => this.#flush());
    return watcher.end;
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const watcher of [...this.#watchers]) watcher.end.end();
      this.#db.close();
    }
    return Promise.resolve();
  }

  #assertOpen(): void {
    if (this.#closed) throw new UnavailableError("the SQLite resource store is closed");
  }

  #timestamp(): string {
    return timestamp(this.#settings.clock());
  }

  /** Runs `fn` in one write transaction, then publishes its events — never inside the transaction. */
  #write<T>(fn: () => WriteOutcome<T>): T {
    this.#assertOpen();
    const outcome = this.#runImmediate(fn) as WriteOutcome<T>;
    for (const event of outcome.events) this.#publish(event);
    this.#flush();
    return outcome.result;
  }

  #nextResourceVersion(): number {
    const row = this.#statements.bumpCounter.get();
    if (row === undefined) throw new FsbError("internal", "the store_state row is missing from the SQLite database");
    return row.resource_version;
  }

  /** Loads the object `given` names and checks the optimistic-concurrency preconditions. */
  #readForWrite(kind: ResourceKind, given: AnyResource, version: string | undefined): AnyResource {
    const key = keyOfObject(given);
    const row = this.#statements.select.get(kind, key.namespace, key.name);
    if (row === undefined) throw new NotFoundError(`${describe(kind, key)} not found`);
    const current = decodeRow(row);
    if (version !== undefined && version !== current.metadata.resourceVersion) {
      throw new ConflictError(conflictMessage(kind, key, current.metadata.resourceVersion, version));
    }
    const sentUid = given.metadata.uid;
    if (sentUid !== undefined && sentUid !== "" && sentUid !== current.metadata.uid) {
      throw new ConflictError(uidConflictMessage(kind, key, current.metadata.uid, sentUid));
    }
    return current;
  }

  #outcome<T extends AnyResource>(kind: ResourceKind, type: WatchEventType, stored: T, previousLabels: Record<string, string> | undefined): WriteOutcome<T> {
    const json = JSON.stringify(stored);
    const event: StoredEvent = {
      resourceVersion: Number(stored.metadata.resourceVersion),
      kind,
      type,
      namespace: stored.metadata.namespace ?? "",
      labels: stored.metadata.labels,
      previousLabels,
      json,
    };
    return { result: JSON.parse(json) as T, events: [event] };
  }

  #historyAt(index: number): StoredEvent {
    return this.#history[(this.#historyStart + index) % this.#history.length] as StoredEvent;
  }

  #publish(event: StoredEvent): void {
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
    for (const watcher of this.#watchers) enqueue(watcher, event);
  }

  /**
   * Delivers queued events. Each watcher's own queue keeps its events in resourceVersion order even
   * when a listener writes; a re-entrant call returns at once so the outer loop delivers what that
   * write queued, keeping the stack flat.
   */
  #flush(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      let delivered = true;
      while (delivered && !this.#closed) {
        delivered = false;
        for (const watcher of this.#watchers) {
          if (watcher.end.ended) continue;
          const next = watcher.queue[watcher.head];
          if (next === undefined) continue;
          watcher.head++;
          if (watcher.head === watcher.queue.length) {
            watcher.queue = [];
            watcher.head = 0;
          }
          delivered = true;
          this.#deliver(watcher, next);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }

  #deliver(watcher: Watcher, pending: PendingDelivery): void {
    const object = JSON.parse(pending.json) as AnyResource;
    const bindings = { kind: watcher.kind, type: pending.type, resourceVersion: object.metadata.resourceVersion };
    callListener(this.#settings.logger, bindings, () => watcher.onEvent({ type: pending.type, object }));
  }
}

function enqueue(watcher: Watcher, event: StoredEvent): void {
  if (event.kind !== watcher.kind) return;
  if (watcher.namespace !== undefined && event.namespace !== watcher.namespace) return;
  const type = eventTypeForSelector(event.type, event.labels, event.previousLabels, watcher.labelSelector);
  if (type !== undefined) watcher.queue.push({ type, json: event.json });
}

function prepareStatements(db: Database.Database) {
  const columns = "kind, namespace, name, uid, resource_version, api_version, metadata_json, spec_json, status_json";
  return {
    select: db.prepare<[string, string, string], ObjectRow>(`SELECT ${columns} FROM objects WHERE kind = ? AND namespace = ? AND name = ?`),
    selectKind: db.prepare<[string], ObjectRow>(`SELECT ${columns} FROM objects WHERE kind = ? ORDER BY namespace, name`),
    selectNamespace: db.prepare<[string, string], ObjectRow>(`SELECT ${columns} FROM objects WHERE kind = ? AND namespace = ? ORDER BY name`),
    insert: db.prepare<[ObjectRow], void>(
      `INSERT INTO objects (${columns}) VALUES (@kind, @namespace, @name, @uid, @resource_version, @api_version, @metadata_json, @spec_json, @status_json)`,
    ),
    update: db.prepare<[ObjectRow], void>(
      `UPDATE objects SET uid = @uid, resource_version = @resource_version, api_version = @api_version,
         metadata_json = @metadata_json, spec_json = @spec_json, status_json = @status_json
       WHERE kind = @kind AND namespace = @namespace AND name = @name`,
    ),
    updateStatus: db.prepare<[Pick<ObjectRow, "kind" | "namespace" | "name" | "resource_version" | "status_json">], void>(
      `UPDATE objects SET resource_version = @resource_version, status_json = @status_json
       WHERE kind = @kind AND namespace = @namespace AND name = @name`,
    ),
    remove: db.prepare<[string, string, string], void>(`DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?`),
    readCounter: db.prepare<[], { resource_version: number }>(`SELECT resource_version FROM store_state WHERE id = 1`),
    bumpCounter: db.prepare<[], { resource_version: number }>(
      `UPDATE store_state SET resource_version = resource_version + 1 WHERE id = 1 RETURNING resource_version`,
    ),
  };
}

function decodeRow(row: ObjectRow): AnyResource {
  const metadata = JSON.parse(row.metadata_json) as ObjectMeta;
  const object: Record<string, unknown> = {
    apiVersion: row.api_version,
    kind: row.kind,
    metadata: { ...metadata, resourceVersion: String(row.resource_version) },
    spec: JSON.parse(row.spec_json) as unknown,
  };
  if (row.status_json !== null) object.status = JSON.parse(row.status_json) as unknown;
  return object as unknown as AnyResource;
}

function encodeRow(kind: ResourceKind, object: AnyResource, resourceVersion: number): ObjectRow {
  const { resourceVersion: _version, ...metadata } = object.metadata;
  return {
    kind,
    namespace: object.metadata.namespace ?? "",
    name: object.metadata.name,
    uid: object.metadata.uid ?? "",
    resource_version: resourceVersion,
    api_version: object.apiVersion,
    metadata_json: JSON.stringify(metadata),
    spec_json: JSON.stringify(object.spec),
    status_json: object.status === undefined ? null : JSON.stringify(object.status),
  };
}

function withResourceVersion<T extends AnyResource>(object: T, resourceVersion: number): T {
  return { ...object, metadata: { ...object.metadata, resourceVersion: String(resourceVersion) } };
}

function requireNamespace(object: AnyResource): void {
  keyOfObject(object);
}

function parseResourceVersion(value: string): number {
  if (typeof value !== "string" || !/^\d+$/.test(value)) {
    throw new ValidationError("resourceVersion", `${JSON.stringify(value)} is not a resourceVersion; watch from the resourceVersion of a list`);
  }
  return Number(value);
}

/** Runs a synchronous body as a promise: every failure is a rejection, translated into an FsbError. */
function attempt<T>(body: () => T): Promise<T> {
  try {
    return Promise.resolve(body());
  } catch (error) {
    return Promise.reject(translateSqliteError(error));
  }
}

/** The one place SQLite errors become Fast Sandbox errors. */
function translateSqliteError(error: unknown, context?: string): FsbError {
  if (error instanceof FsbError) return error;
  const prefix = context === undefined ? "" : `${context}: `;
  if (error instanceof Database.SqliteError) {
    const options = { cause: error };
    if (error.code.startsWith("SQLITE_BUSY") || error.code.startsWith("SQLITE_LOCKED")) {
      return new UnavailableError(`${prefix}the SQLite database is locked by another connection; retry later`, options);
    }
    if (error.code === "SQLITE_FULL" || error.code.startsWith("SQLITE_IOERR") || error.code.startsWith("SQLITE_CANTOPEN")) {
      return new UnavailableError(`${prefix}${error.message} (${error.code})`, options);
    }
    if (error.code === "SQLITE_NOTADB" || error.code.startsWith("SQLITE_CORRUPT")) {
      return new FsbError("failed_precondition", `${prefix}the file is not a usable SQLite database: ${error.message}`, options);
    }
    return new FsbError("internal", `${prefix}${error.message} (${error.code})`, options);
  }
  if (context !== undefined && error instanceof Error) {
    return new UnavailableError(`${prefix}${error.message}`, { cause: error });
  }
  return FsbError.from(error);
}
