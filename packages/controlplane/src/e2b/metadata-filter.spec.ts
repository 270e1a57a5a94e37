import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import { decodeMetadataFilter, metadataMatches } from "./metadata-filter.js";

/** What `new URL(...).searchParams.get("metadata")` gives the server for a query string. */
function received(queryString: string): string {
  return new URLSearchParams(queryString).get("metadata") ?? "";
}

/** E2B's JS SDK (SandboxPaginator.nextItems): encodeURIComponent each, URLSearchParams, then openapi-fetch's query encoding. */
function jsSdkQuery(metadata: Record<string, string>): string {
  const pairs = Object.fromEntries(Object.entries(metadata).map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)]));
  return `metadata=${encodeURIComponent(new URLSearchParams(pairs).toString())}`;
}

/** Python's urllib.parse.quote: UTF-8 bytes, all but letters, digits, `_.-~` and `safe` escaped. */
function pyQuote(text: string, safe: string): string {
  return [...Buffer.from(text, "utf8")]
    .map((byte) => {
      const char = String.fromCharCode(byte);
      return /[A-Za-z0-9_.~-]/.test(char) || safe.includes(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
    })
    .join("");
}

/** quote_plus: quote with spaces as `+`. */
function pyQuotePlus(text: string): string {
  return pyQuote(text, " ").replace(/ /g, "+");
}

/** E2B's Python SDK (paginator): quote each, urlencode the pairs, then httpx's query encoding. */
function pythonSdkQuery(metadata: Record<string, string>): string {
  const pairs = Object.entries(metadata).map(([k, v]) => `${pyQuotePlus(pyQuote(k, "/"))}=${pyQuotePlus(pyQuote(v, "/"))}`);
  return `metadata=${pyQuotePlus(pairs.join("&"))}`;
}

const TRICKY: Record<string, string> = {
  user: "abc",
  "a key": "a value",
  "k&=": "v&=x",
  "100%": "50%+50%",
  "path/to": "é/ü ✓",
  plus: "a+b",
};

describe("the metadata filter of GET /v2/sandboxes decodes E2B's layered encoding", () => {
  it("decodes what E2B's JS SDK sends back into the exact keys and values, & = % + / and non-ASCII included", () => {
    assert.deepEqual(Object.fromEntries(decodeMetadataFilter(received(jsSdkQuery(TRICKY)))), TRICKY);
  });

  it("decodes what E2B's Python SDK sends back into the exact keys and values", () => {
    assert.deepEqual(Object.fromEntries(decodeMetadataFilter(received(pythonSdkQuery(TRICKY)))), TRICKY);
  });

  it("reads a hand-written filter as well: metadata=user%3Dabc%26app%3Dprod", () => {
    assert.deepEqual(Object.fromEntries(decodeMetadataFilter(received("metadata=user%3Dabc%26app%3Dprod"))), { user: "abc", app: "prod" });
  });

  it("is empty for an empty parameter, and keeps an empty value", () => {
    assert.equal(decodeMetadataFilter("").size, 0);
    assert.deepEqual(Object.fromEntries(decodeMetadataFilter("k%3D")), { k: "" });
  });

  it("refuses a pair without '=' and a malformed escape, naming the metadata field", () => {
    assert.throws(
      () => decodeMetadataFilter("user"),
      (error: unknown) => error instanceof ValidationError && error.field === "metadata" && /no '='/.test(error.message),
    );
    assert.throws(
      () => decodeMetadataFilter("k%3D%25zz"),
      (error: unknown) => error instanceof ValidationError && error.field === "metadata" && /not valid URL encoding/.test(error.message),
    );
  });

  it("matches a sandbox only when its metadata holds every pair, values compared exactly", () => {
    const filter = new Map([
      ["user", "abc"],
      ["app", "prod"],
    ]);
    assert.ok(metadataMatches({ user: "abc", app: "prod", extra: "x" }, filter));
    assert.ok(!metadataMatches({ user: "abc" }, filter));
    assert.ok(!metadataMatches({ user: "abc", app: "Prod" }, filter));
    assert.ok(metadataMatches({}, new Map()));
    assert.ok(!metadataMatches({}, new Map([["constructor", ""]])), "inherited properties are no metadata");
  });
});
