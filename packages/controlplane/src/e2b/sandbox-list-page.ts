/**
 * The pages of `GET /v2/sandboxes`: sandboxes in order of start (newest first unless `asc`), `limit`
 * at a time, with a cursor. A sandbox's place is when it was created (its record's
 * creationTimestamp, the start E2B clients see until a resume, reset or recreation starts a new
 * instance), ties by its name: a key that never changes while the sandbox lives, unlike its
 * `startedAt` (its current instance's start) and its sandbox id (a recreation's is new), which would
 * move it past the cursor of a walk under way. The cursor (`X-Next-Token` → `nextToken`) is the key
 * of the last sandbox of the page, so the next page starts right after it: a sandbox created or
 * deleted, resumed or recreated between two pages neither shifts nor repeats the others, nor itself.
 */
import { ValidationError, type Sandbox } from "@fast-sandbox/api";

/** What a listed sandbox is paged by: its record's creation (RFC 3339) and its name, both fixed for its life. */
export interface ListKey {
  createdAt: string;
  name: string;
}

/** A listed item (what E2B's API answers, field for field) and the key it is paged by, kept beside it. */
export interface Keyed<T> {
  item: T;
  key: ListKey;
}

/** The key `sandbox` is paged by: its record's creation and its name (not its instance's start or sandbox id, which a resume, reset or recreation changes). */
export function listKeyOf(sandbox: Sandbox): ListKey {
  return { createdAt: sandbox.metadata.creationTimestamp ?? new Date(0).toISOString(), name: sandbox.metadata.name };
}

export interface ListPage<T> {
  items: T[];
  /** Undefined on the last page. */
  nextToken: string | undefined;
}

type SortKey = [createdAtMs: number, name: string];

function sortKeyOf(key: ListKey): SortKey {
  return [Date.parse(key.createdAt), key.name];
}

function compareAscending(a: SortKey, b: SortKey): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
}

function encodeCursor(key: SortKey): string {
  return Buffer.from(JSON.stringify(key)).toString("base64url");
}

function decodeCursor(token: string): SortKey {
  const invalid = () =>
    new ValidationError("nextToken", `${JSON.stringify(token)} is not a cursor of this API: pass the X-Next-Token header of the previous page unchanged`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalid();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || !Number.isFinite(parsed[0]) || typeof parsed[1] !== "string") throw invalid();
  return [parsed[0] as number, parsed[1]];
}

/** One page of `entries` (in any order): sorted by their keys, after the cursor `nextToken`, at most `limit`. */
export function pageOf<T>(entries: readonly Keyed<T>[], options: { order: "asc" | "desc"; limit: number; nextToken?: string | undefined }): ListPage<T> {
  const direction = options.order === "asc" ? 1 : -1;
  const compare = (a: SortKey, b: SortKey) => direction * compareAscending(a, b);
  const after = options.nextToken === undefined ? undefined : decodeCursor(options.nextToken);
  const sorted = entries.map((entry) => ({ item: entry.item, key: sortKeyOf(entry.key) })).sort((a, b) => compare(a.key, b.key));
  const rest = after ? sorted.filter((entry) => compare(entry.key, after) > 0) : sorted;
  const page = rest.slice(0, options.limit);
  const last = page.at(-1);
  return { items: page.map((entry) => entry.item), nextToken: rest.length > page.length && last ? encodeCursor(last.key) : undefined };
}
