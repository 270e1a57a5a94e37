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
import { ValidationError } from "@fast-sandbox/api";

export interface Listed {
  startedAt: string;
  sandboxID: string;
}

/** What a listed sandbox is paged by: its record's creation (RFC 3339) and its name, both fixed for its life. */
export interface ListKey {
  createdAt: string;
  name: string;
}

/**
 * The keys of the items listedSandboxOf made, kept beside them rather than in them: an item is what
 * E2B's API answers, field for field.
 */
const listKeys = new WeakMap<Listed, ListKey>();

/** `item`, paged by `key` (its sandbox's creation and name). */
export function withListKey<T extends Listed>(item: T, key: ListKey): T {
  listKeys.set(item, key);
  return item;
}

export interface ListPage<T extends Listed> {
  items: T[];
  /** Undefined on the last page. */
  nextToken: string | undefined;
}

type SortKey = [createdAtMs: number, name: string];

/** An item without a key of its own (not made by listedSandboxOf) is paged by its start and sandbox id. */
function keyOf(item: Listed): SortKey {
  const key = listKeys.get(item);
  return key ? [Date.parse(key.createdAt), key.name] : [Date.parse(item.startedAt), item.sandboxID];
}

function compareAscending(a: SortKey, b: SortKey): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
}

export function encodeCursor(item: Listed): string {
  return Buffer.from(JSON.stringify(keyOf(item))).toString("base64url");
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

/** One page of `items` (in any order): sorted, after the cursor `nextToken`, at most `limit`. */
export function pageOf<T extends Listed>(items: readonly T[], options: { order: "asc" | "desc"; limit: number; nextToken?: string | undefined }): ListPage<T> {
  const direction = options.order === "asc" ? 1 : -1;
  const compare = (a: SortKey, b: SortKey) => direction * compareAscending(a, b);
  const after = options.nextToken === undefined ? undefined : decodeCursor(options.nextToken);
  const sorted = [...items].sort((a, b) => compare(keyOf(a), keyOf(b)));
  const rest = after ? sorted.filter((item) => compare(keyOf(item), after) > 0) : sorted;
  const page = rest.slice(0, options.limit);
  const last = page.at(-1);
  return { items: page, nextToken: rest.length > page.length && last ? encodeCursor(last) : undefined };
}
