/**
 * The `metadata` filter of `GET /v2/sandboxes`, decoded as E2B's API does: E2B's SDKs percent-encode
 * each key and value, join them as `k=v&k2=v2`, form-encode that string, and send it as one query
 * parameter (encoded once more). After the query string's own decoding, the value is unescaped once
 * more, split on `&` and `=`, and each key and value unescaped. A key or value may therefore hold any
 * character, `&` and `=` included; a hand-written `metadata=user%3Dabc` decodes the same way.
 */
import { ValidationError } from "@fast-sandbox/api";

/** Go's url.QueryUnescape: `+` is a space, `%XX` a byte; a malformed escape is an error. */
function queryUnescape(text: string, what: string): string {
  try {
    return decodeURIComponent(text.replace(/\+/g, " "));
  } catch {
    throw new ValidationError("metadata", `${what} ${JSON.stringify(text)} is not valid URL encoding (a % must start an escape such as %20)`);
  }
}

/** The key/value pairs a sandbox's metadata must all hold; empty when the parameter is empty. */
export function decodeMetadataFilter(parameter: string): Map<string, string> {
  const pairs = new Map<string, string>();
  const query = queryUnescape(parameter, "the filter");
  if (query === "") return pairs;
  for (const pair of query.split("&")) {
    if (pair === "") continue;
    const separator = pair.indexOf("=");
    if (separator < 0) {
      throw new ValidationError("metadata", `${JSON.stringify(pair)} has no '=': the filter is key=value pairs joined by '&', e.g. user=abc&app=prod`);
    }
    const key = queryUnescape(pair.slice(0, separator), "the key");
    const value = queryUnescape(pair.slice(separator + 1), "the value");
    pairs.set(key, value);
  }
  return pairs;
}

/** Whether the metadata holds every pair of the filter. */
export function metadataMatches(metadata: Readonly<Record<string, string>>, filter: ReadonlyMap<string, string>): boolean {
  for (const [key, value] of filter) if (!Object.hasOwn(metadata, key) || metadata[key] !== value) return false;
  return true;
}
