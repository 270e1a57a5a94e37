/**
 * The embedded mode's ApiKeyStore: the hashes of the E2B API keys in their own SQLite file in the
 * data directory (`e2b-api-keys.db`), apart from `state.db`, whose schema versions belong to the
 * resource store. SQLite errors become Fast Sandbox errors here and nowhere else.
 */
import Database from "better-sqlite3";
import { FailedPreconditionError, FsbError, UnavailableError } from "@fast-sandbox/api";
import type { ApiKeyStore } from "./api-key-store.js";

/** The file name of the store in the data directory. */
export const API_KEY_DATABASE_FILE = "e2b-api-keys.db";

/** Schema steps; step i brings `PRAGMA user_version` from i to i + 1. Append only. */
const MIGRATIONS: readonly string[] = [`CREATE TABLE api_keys (hash TEXT PRIMARY KEY, created_at TEXT NOT NULL) WITHOUT ROWID;`];

/** Opens (creating and migrating when needed) the store at `path` (`":memory:"` for a throw-away one). */
export function openSqliteApiKeyStore(path: string): SqliteApiKeyStore {
  let db: Database.Database;
  try {
    db = new Database(path);
  } catch (error) {
    throw translateSqliteError(error, `cannot open the API key database ${path}`);
  }
  try {
    db.pragma("busy_timeout = 5000");
    db.pragma("journal_mode = WAL");
    db.transaction(() => {
      const version = db.pragma("user_version", { simple: true }) as number;
      if (version > MIGRATIONS.length) {
        throw new FailedPreconditionError(
          `the API key database ${path} has schema version ${version}, but this control plane knows versions up to ${MIGRATIONS.length}; run a newer Fast Sandbox`,
        );
      }
      for (const sql of MIGRATIONS.slice(version)) db.exec(sql);
      db.pragma(`user_version = ${MIGRATIONS.length}`);
    }).immediate();
  } catch (error) {
    db.close();
    throw translateSqliteError(error, `cannot open the API key database ${path}`);
  }
  return new SqliteApiKeyStore(db);
}

export class SqliteApiKeyStore implements ApiKeyStore {
  readonly #db: Database.Database;
  readonly #insert: Database.Statement<[string, string]>;
  readonly #select: Database.Statement<[string]>;
  readonly #delete: Database.Statement<[string]>;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#insert = db.prepare("INSERT INTO api_keys (hash, created_at) VALUES (?, ?) ON CONFLICT (hash) DO NOTHING");
    this.#select = db.prepare("SELECT 1 FROM api_keys WHERE hash = ?");
    this.#delete = db.prepare("DELETE FROM api_keys WHERE hash = ?");
  }

  add(hash: string, createdAt: Date): Promise<void> {
    return attempt(() => {
      this.#insert.run(hash, createdAt.toISOString());
    });
  }

  has(hash: string): Promise<boolean> {
    return attempt(() => this.#select.get(hash) !== undefined);
  }

  remove(hash: string): Promise<boolean> {
    return attempt(() => this.#delete.run(hash).changes > 0);
  }

  close(): Promise<void> {
    return attempt(() => {
      if (this.#db.open) this.#db.close();
    });
  }
}

function attempt<T>(body: () => T): Promise<T> {
  try {
    return Promise.resolve(body());
  } catch (error) {
    return Promise.reject(translateSqliteError(error));
  }
}

function translateSqliteError(error: unknown, context?: string): FsbError {
  if (error instanceof FsbError) return error;
  const prefix = context === undefined ? "" : `${context}: `;
  if (error instanceof Database.SqliteError) {
    const options = { cause: error };
    if (error.code.startsWith("SQLITE_BUSY") || error.code.startsWith("SQLITE_LOCKED")) {
      return new UnavailableError(`${prefix}the API key database is locked by another connection; retry later`, options);
    }
    if (error.code === "SQLITE_FULL" || error.code.startsWith("SQLITE_IOERR") || error.code.startsWith("SQLITE_CANTOPEN")) {
      return new UnavailableError(`${prefix}${error.message} (${error.code})`, options);
    }
    return new FsbError("internal", `${prefix}${error.message} (${error.code})`, options);
  }
  if (context !== undefined && error instanceof Error) return new UnavailableError(`${prefix}${error.message}`, { cause: error });
  return FsbError.from(error);
}
