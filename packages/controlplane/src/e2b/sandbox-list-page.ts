/**
 * The pages of `GET /v2/sandboxes`: sandboxes in order of start time (newest first unless `asc`,
 * ties by sandbox id), `limit` at a time, with a cursor. The cursor (`X-Next-Token` → `nextToken`)
 * is the sort key of the last sandbox of the page, so the next page starts right after it: a
 * sandbox created or deleted between two pages neither shifts nor repeats the others.
 */
import { ValidationError } from "@fast-sandbox/api";

export interface Listed {
  startedAt: string;
  sandboxID: string;
}

export interface ListPage<T extends Listed> {
  items: T[];
  /** Undefined on the last page. */
  nextToken: string | undefined;
}

type SortKey = [startedAtMs: number, sandboxID: string];

function keyOf(item: Listed): SortKey {
  return [Date.parse(item.startedAt), item.sandboxID];
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
