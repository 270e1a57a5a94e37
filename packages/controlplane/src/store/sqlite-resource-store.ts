/**
 * The embedded-mode `ResourceStore`: Kubernetes-like objects in one SQLite file (better-sqlite3).
 *
 * - One process owns a database file: every write is one synchronous `BEGIN IMMEDIATE` transaction
 *   and watches are fed from this process's own writes only (another process writing to the same
 *   file would not be seen by its watches).
 * - `resourceVersion` is a store-wide counter persisted in `store_state`, bumped by one per write,
 *   so it survives restarts and never goes backwards. Writes are synchronous = NORMAL (WAL): a
 *   process crash loses nothing, but a power loss or kernel crash may lose the last writes since
 *   the WAL was last synced (the reconcilers and the janitor then converge on what remains). So
 *   that versions handed out by such lost writes are never handed out again for other content,
 *   every open (but the one that creates the database) moves the counter ahead by
 *   RESOURCE_VERSION_GAP in a synced write.
 * - Lists sort by the key "namespace/name" as one string, like the memory store and the API server.
 * - Watches replay from an in-memory ring of the last `watchHistory` events. The ring starts empty
 *   on open, so after a restart a watch from an older version gets ExpiredError and relists —
 *   the same contract as the Kubernetes API's 410 Gone.
 * - SQLite errors are translated into the Fast Sandbox error hierarchy here and nowhere else.
 */
import Database from "better-sqlite3";
import { systemClock, type Clock } from "../controller/clock.js";
import { FailedPreconditionError, FsbError, UnavailableError, ValidationError, type ObjectMeta } from "@fast-sandbox/api";
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
  checkKey,
  checkKind,
  checkPreconditions,
  consoleLogger,
  continueAfter,
  continueToken,
  jsonEqual,
  keyOfObject,
  matchesLabels,
  notFoundError,
  pageLimit,
  preconditionVersion,
  requireShape,
  type StoreLogger,
} from "./store-rules.js";
import { WatchHub, storedEvent, watchHistoryOption, type StoredEvent } from "./watch-hub.js";
import { planCreate, planDelete, planStatusUpdate, planUpdate, withResourceVersion, type WritePlan } from "./write-plan.js";

export { jsonEqual, type StoreLogger };

export interface SqliteResourceStoreOptions {
  /** Database file, or `":memory:"` for a throw-away store. The directory must exist. */
  path: string;
  /**
   * Events kept in memory so that a watch can resume from an older resourceVersion.
   * @default DEFAULT_WATCH_HISTORY (1 000)
   */
  watchHistory?: number;
  /**
   * Source of creationTimestamp and deletionTimestamp.
   * @default systemClock
   */
  clock?: Clock;
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

/** The order of every list across namespaces (KEY_ORDER_INDEX's expression, written exactly as there). */
const KEY_ORDER = "(namespace || '/' || name)";

/**
 * Lists sort by the key "namespace/name" as one string, as the memory store and the API server
 * (etcd's keys) do: by (namespace, name) `team` came before `team-b`, by key after it ('-' < '/').
 * Made at every open rather than by a migration: an index changes no schema version, so a release
 * before it still opens the file (and SQLite keeps the index up to date under that release's writes).
 */
const KEY_ORDER_INDEX = `CREATE INDEX IF NOT EXISTS objects_by_key ON objects (kind, ${KEY_ORDER})`;

/** The schema version this code writes; a database with a higher `user_version` is refused. */
export const SQLITE_STORE_SCHEMA_VERSION = MIGRATIONS.length;

/** Opens (creating and migrating when needed) a SQLite-backed ResourceStore. */
export function openSqliteResourceStore(options: SqliteResourceStoreOptions): SqliteResourceStore {
  const watchHistory = watchHistoryOption(options.watchHistory);
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new ValidationError("busyTimeoutMs", `${String(busyTimeoutMs)} is not a whole number of milliseconds >= 0`);
  }
  let db: Database.Database;
  try {
    db = new Database(options.path);
  } catch (error) {
    throw translateOpenError(error, options.path);
  }
  try {
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    db.pragma("journal_mode = WAL");
    const created = migrate(db, options.path);
    db.exec(KEY_ORDER_INDEX);
    skipLostResourceVersions(db, created);
    db.pragma("synchronous = NORMAL");
  } catch (error) {
    db.close();
    throw translateOpenError(error, options.path);
  }
  return new SqliteResourceStore(db, {
    watchHistory,
    clock: options.clock ?? systemClock,
    logger: options.logger ?? consoleLogger,
  });
}

/**
 * How far each open moves the resourceVersion counter ahead: more than the writes a WAL holds
 * between two syncs (SQLite checkpoints it, synced, every 1000 pages).
 */
export const RESOURCE_VERSION_GAP = 2 ** 20;

/**
 * Moves the counter ahead by RESOURCE_VERSION_GAP, synced to disk before the store takes writes; a
 * store whose schema this very open created starts at 1, as the Kubernetes contract tests expect.
 * Any other store gets the gap, even one whose counter reads 0: a new file's first writes may have
 * been in the WAL only when the power went, leaving the schema (synced when it was created) and a
 * counter of 0 that would hand out 1, 2, … again.
 */
function skipLostResourceVersions(db: Database.Database, created: boolean): void {
  db.pragma("synchronous = FULL");
  if (created) return;
  db.prepare(`UPDATE store_state SET resource_version = resource_version + ${RESOURCE_VERSION_GAP} WHERE id = 1`).run();
}

/** Brings the schema to SQLITE_STORE_SCHEMA_VERSION; true when it created it (the file had none). */
function migrate(db: Database.Database, path: string): boolean {
  const check = (version: number): void => {
    if (version > MIGRATIONS.length) {
      throw new FailedPreconditionError(
        `the SQLite database ${path} has store schema version ${version}, but this control plane knows versions up to ` +
          `${MIGRATIONS.length}; run a newer Fast Sandbox or point the control plane at another database file`,
      );
    }
  };
  check(userVersion(db));
  if (userVersion(db) === MIGRATIONS.length) return false;
  return db
    .transaction(() => {
      // Read again under the write lock: another process may have migrated meanwhile.
      const from = userVersion(db);
      check(from);
      for (const migration of MIGRATIONS.slice(from)) db.exec(migration.sql);
      db.pragma(`user_version = ${MIGRATIONS.length}`);
      return from === 0;
    })
    .immediate();
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

/** A write's result, and the event to publish once its transaction has committed. */
interface WriteOutcome {
  result: AnyResource;
  event: StoredEvent | undefined;
}

interface StoreSettings {
  watchHistory: number;
  clock: Clock;
  logger: StoreLogger;
}

export class SqliteResourceStore implements ResourceStore {
  readonly #db: Database.Database;
  readonly #settings: StoreSettings;
  readonly #statements: ReturnType<typeof prepareStatements>;
  readonly #runImmediate: (fn: () => unknown) => unknown;
  readonly #runDeferred: (fn: () => unknown) => unknown;
  /** Watches are fed from this process's writes; the replay ring starts empty on open. */
  readonly #hub: WatchHub;
  #closed = false;

  /** Use openSqliteResourceStore. */
  constructor(db: Database.Database, settings: StoreSettings) {
    this.#db = db;
    this.#settings = settings;
    this.#statements = prepareStatements(db);
    const transaction = db.transaction((fn: () => unknown) => fn());
    this.#runImmediate = (fn) => transaction.immediate(fn);
    this.#runDeferred = (fn) => transaction.deferred(fn);
    this.#hub = new WatchHub({
      history: settings.watchHistory,
      resourceVersion: this.#statements.readCounter.get()?.resource_version ?? 0,
      delivery: "after-write",
      logger: settings.logger,
    });
  }

  get<K extends ResourceKind>(kind: K, key: ObjectKey): Promise<ResourceByKind[K] | undefined> {
    return attempt(() => {
      this.#assertOpen();
      checkKind(kind);
      checkKey(key);
      return this.#read(kind, key) as ResourceByKind[K] | undefined;
    });
  }

  list<K extends ResourceKind>(kind: K, options: ListOptions & PageOptions = {}): Promise<ListResult<ResourceByKind[K]>> {
    return attempt(() => {
      this.#assertOpen();
      checkKind(kind);
      const { namespace, labelSelector } = options;
      const limit = pageLimit(options);
      const after = continueAfter(options);
      // One read transaction: the items and the version belong to the same snapshot.
      return this.#runDeferred(() => {
        const items: ResourceByKind[K][] = [];
        let more = false;
        // A page reads the rows one at a time (in key order, after the previous page's last), up to
        // one more match than it returns: never the whole table.
        for (const row of this.#rows(kind, namespace, after, limit !== undefined)) {
          const object = decodeRow(row);
          if (!matchesLabels(object.metadata.labels, labelSelector)) continue;
          if (items.length === limit) {
            more = true;
            break;
          }
          items.push(object as ResourceByKind[K]);
        }
        const resourceVersion = String(this.#statements.readCounter.get()?.resource_version ?? 0);
        const last = items.at(-1);
        return { items, resourceVersion, ...(more && last ? { continue: continueToken(keyOfObject(last)) } : {}) };
      }) as ListResult<ResourceByKind[K]>;
    });
  }

  /**
   * The rows of a kind (in a namespace), in key order (compareKeys': namespaces and names are DNS
   * labels, ASCII, so SQLite's byte order is JavaScript's), after a key; one at a time (`lazily`)
   * or all at once.
   */
  #rows(kind: ResourceKind, namespace: string | undefined, after: ObjectKey | undefined, lazily: boolean): Iterable<ObjectRow> {
    const statements = this.#statements;
    if (namespace === undefined) {
      if (!after) return lazily ? statements.selectKind.iterate(kind) : statements.selectKind.all(kind);
      const afterKey = `${after.namespace}/${after.name}`;
      return lazily ? statements.selectKindAfter.iterate(kind, afterKey) : statements.selectKindAfter.all(kind, afterKey);
    }
    if (!after) return lazily ? statements.selectNamespace.iterate(kind, namespace) : statements.selectNamespace.all(kind, namespace);
    if (after.namespace !== namespace) throw new ValidationError("continue", `is a token of a list of another namespace than ${namespace}`);
    return lazily ? statements.selectNamespaceAfter.iterate(kind, namespace, after.name) : statements.selectNamespaceAfter.all(kind, namespace, after.name);
  }

  create<K extends ResourceKind>(kind: K, object: ResourceByKind[K]): Promise<ResourceByKind[K]> {
    return attempt(() => {
      checkKind(kind);
      const given = requireShape(object);
      return this.#write(() => {
        const key = keyOfObject(given);
        if (this.#read(kind, key) !== undefined) throw alreadyExistsError(kind, key);
        return this.#persist(kind, planCreate(kind, given, this.#settings.clock));
      }).result as ResourceByKind[K];
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
    return this.#writeExisting(kind, object, options, planUpdate);
  }

  /**
   * Writes status only; spec and metadata of the given object are ignored. Same preconditions as
   * `update`. A status equal to the stored one writes nothing and keeps the resourceVersion.
   */
  updateStatus<K extends ResourceKind>(kind: K, object: ResourceByKind[K], options?: WriteOptions): Promise<ResourceByKind[K]> {
    return this.#writeExisting(kind, object, options, planStatusUpdate, { statusOnly: true });
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
      const outcome = this.#write(() => {
        const current = this.#read(kind, key);
        if (current === undefined) throw notFoundError(kind, key);
        return this.#persist(kind, planDelete(current, this.#settings.clock));
      });
      return outcome.event?.type === "DELETED" ? undefined : (outcome.result as ResourceByKind[K]);
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
    return this.#hub.watch(kind, options, onEvent);
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#hub.close();
      this.#db.close();
    }
    return Promise.resolve();
  }

  #assertOpen(): void {
    if (this.#closed) throw new UnavailableError("the SQLite resource store is closed");
  }

  #read(kind: ResourceKind, key: ObjectKey): AnyResource | undefined {
    const row = this.#statements.select.get(kind, key.namespace, key.name);
    return row === undefined ? undefined : decodeRow(row);
  }

  /** update and updateStatus: the object `object` names, its preconditions checked, changed as `plan` says. */
  #writeExisting<K extends ResourceKind>(
    kind: K,
    object: ResourceByKind[K],
    options: WriteOptions | undefined,
    plan: (kind: ResourceKind, current: AnyResource, given: AnyResource) => WritePlan,
    persist: { statusOnly?: boolean } = {},
  ): Promise<ResourceByKind[K]> {
    return attempt(() => {
      checkKind(kind);
      const given = requireShape(object);
      const version = preconditionVersion(kind, given, options);
      return this.#write(() => {
        const key = keyOfObject(given);
        const current = this.#read(kind, key);
        if (current === undefined) throw notFoundError(kind, key);
        checkPreconditions(kind, key, current, version, given.metadata.uid);
        return this.#persist(kind, plan(kind, current, given), persist);
      }).result as ResourceByKind[K];
    });
  }

  /** Runs `fn` in one write transaction, then publishes its event — never inside the transaction. */
  #write(fn: () => WriteOutcome): WriteOutcome {
    this.#assertOpen();
    const outcome = this.#runImmediate(fn) as WriteOutcome;
    if (outcome.event !== undefined) this.#hub.publish(outcome.event);
    return outcome;
  }

  /** Stores what `plan` changes under the next resourceVersion (inside the write transaction). */
  #persist(kind: ResourceKind, plan: WritePlan, options: { statusOnly?: boolean } = {}): WriteOutcome {
    if (plan.event === undefined) return { result: plan.object, event: undefined };
    const resourceVersion = this.#nextResourceVersion();
    const { object } = plan;
    switch (plan.event) {
      case "ADDED":
        this.#statements.insert.run(encodeRow(kind, object, resourceVersion));
        break;
      case "DELETED":
        this.#statements.remove.run(kind, object.metadata.namespace ?? "", object.metadata.name);
        break;
      case "MODIFIED":
        if (options.statusOnly === true) {
          this.#statements.updateStatus.run({
            kind,
            namespace: object.metadata.namespace ?? "",
            name: object.metadata.name,
            resource_version: resourceVersion,
            status_json: object.status === undefined ? null : JSON.stringify(object.status),
          });
        } else {
          this.#statements.update.run(encodeRow(kind, object, resourceVersion));
        }
        break;
    }
    const event = storedEvent(kind, plan.event, withResourceVersion(object, resourceVersion), plan.previousLabels);
    return { result: JSON.parse(event.json) as AnyResource, event };
  }

  #nextResourceVersion(): number {
    const row = this.#statements.bumpCounter.get();
    if (row === undefined) throw new FsbError("internal", "the store_state row is missing from the SQLite database");
    return row.resource_version;
  }
}

function prepareStatements(db: Database.Database) {
  const columns = "kind, namespace, name, uid, resource_version, api_version, metadata_json, spec_json, status_json";
  return {
    select: db.prepare<[string, string, string], ObjectRow>(`SELECT ${columns} FROM objects WHERE kind = ? AND namespace = ? AND name = ?`),
    selectKind: db.prepare<[string], ObjectRow>(`SELECT ${columns} FROM objects WHERE kind = ? ORDER BY ${KEY_ORDER}`),
    // In one namespace the key order is the names' (the primary key's).
    selectNamespace: db.prepare<[string, string], ObjectRow>(`SELECT ${columns} FROM objects WHERE kind = ? AND namespace = ? ORDER BY name`),
    // Pages: the rows after a key ("namespace/name"), in the same order.
    selectKindAfter: db.prepare<[string, string], ObjectRow>(`SELECT ${columns} FROM objects WHERE kind = ? AND ${KEY_ORDER} > ? ORDER BY ${KEY_ORDER}`),
    selectNamespaceAfter: db.prepare<[string, string, string], ObjectRow>(
      `SELECT ${columns} FROM objects WHERE kind = ? AND namespace = ? AND name > ? ORDER BY name`,
    ),
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

/** Runs a synchronous body as a promise: every failure is a rejection, translated into an FsbError. */
function attempt<T>(body: () => T): Promise<T> {
  try {
    return Promise.resolve(body());
  } catch (error) {
    return Promise.reject(translateSqliteError(error));
  }
}

/**
 * The errors of openSqliteResourceStore. A database it cannot write (SQLITE_READONLY*: a read-only
 * file, directory or filesystem; SQLite then opens the file read-only and the first write of the
 * open fails) is the operator's to fix, not a failure to retry: FailedPrecondition, saying what.
 */
function translateOpenError(error: unknown, path: string): FsbError {
  if (error instanceof Database.SqliteError && error.code.startsWith("SQLITE_READONLY")) {
    return new FsbError(
      "failed_precondition",
      `the state database ${path} is read-only: ${error.message} (${error.code}); make it writable for this process's user: ` +
        "the file, its directory (SQLite creates the -wal and -shm files there) and the filesystem",
      { cause: error },
    );
  }
  return translateSqliteError(error, `cannot open the SQLite database ${path}`);
}

/** The one place SQLite errors become Fast Sandbox errors (translateOpenError first, while opening). */
function translateSqliteError(error: unknown, context?: string): FsbError {
  if (error instanceof FsbError) return error;
  const prefix = context === undefined ? "" : `${context}: `;
  if (error instanceof Database.SqliteError) {
    const options = { cause: error };
    if (error.code.startsWith("SQLITE_BUSY") || error.code.startsWith("SQLITE_LOCKED")) {
      return new UnavailableError(`${prefix}the SQLite database is locked by another connection; retry later`, options);
    }
    // Once open (translateOpenError handles opening), a write can still find the database read-only:
    // its file moved or replaced (SQLITE_READONLY_DBMOVED), its -wal or -shm file no longer writable.
    // Reads go on, and writes may again once it is writable: unavailable, not a bug of the caller's.
    if (error.code.startsWith("SQLITE_READONLY")) {
      return new UnavailableError(`${prefix}the SQLite database cannot be written: ${error.message} (${error.code}); make it writable and retry`, options);
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
