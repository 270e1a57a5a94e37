/**
 * E2B's presigned file URLs (`sandbox.download_url(path)` / `upload_url(path)`): with one sandbox URL
 * for every sandbox (E2B_SANDBOX_URL), such a URL is `<proxy>/files?path=P&username=U&signature=S
 * [&signature_expiration=E]` and names no sandbox. Its signature does, implicitly:
 * `v1_` + base64 (unpadded) of sha256(`P:<read|write>:U:<the sandbox's access token>[:E]`), which
 * only the sandbox whose token signed it reproduces. The proxy routes such a request to the daemon
 * of the sandbox whose token gives the same signature — comparing against the sandboxes whose
 * tokens it can derive (those the E2B-compatible API created) — and refuses an expired one.
 */
import { createHash, timingSafeEqual } from "node:crypto";

export type FileOperation = "read" | "write";

export interface SignedFileRequest {
  path: string;
  operation: FileOperation;
  /** The `username` parameter; empty for the daemon's default user. */
  username: string;
  signature: string;
  /** Unix seconds, when the URL expires. */
  expiration?: number;
}

/** A request that names a signature but whose query another parser could read otherwise; refused, never forwarded. */
export interface MalformedSignedFileRequest {
  malformed: string;
}

const SIGNATURE = /^v1_[A-Za-z0-9+/]{43}$/;
/** The parameters the signature covers (with `signature` itself): each may appear once. */
const SIGNED_PARAMETERS = new Set(["path", "username", "signature", "signature_expiration"]);

/**
 * Why the raw query of a signed request is ambiguous, if it is: the daemon (Go's `url.ParseQuery`)
 * must read exactly what the signature was checked against. Go keeps a `#` in the query, skips a
 * pair with a `;` or a bad `%` escape, and a repeated parameter may be read first or last.
 */
function ambiguity(url: string): string | undefined {
  if (url.includes("#")) return "it contains '#'";
  const query = url.slice(url.indexOf("?") + 1);
  if (query.includes(";")) return "its query contains ';'";
  const seen = new Set<string>();
  for (const pair of query.split("&")) {
    const [rawKey = "", ...rest] = pair.split("=");
    let key: string;
    try {
      key = decodeURIComponent(rawKey.replace(/\+/g, " "));
      decodeURIComponent(rest.join("=").replace(/\+/g, " "));
    } catch {
      return "its query has a malformed %-escape";
    }
    if (SIGNED_PARAMETERS.has(key)) {
      if (seen.has(key)) return `it repeats the ${key} parameter`;
      seen.add(key);
    }
  }
  return undefined;
}

/**
 * A signed `GET|POST /files?...` request; undefined when the request is not one; malformed when it
 * names a signature in a query that could be read two ways.
 */
export function parseSignedFileRequest(method: string | undefined, url: string | undefined): SignedFileRequest | MalformedSignedFileRequest | undefined {
  if (!url || (method !== "GET" && method !== "POST")) return undefined;
  // Node's parser takes request targets (`http://[`) that are no URL: a bad request, not the proxy's failure.
  if (!URL.canParse(url, "http://proxy.invalid")) return { malformed: `the request target ${JSON.stringify(url.slice(0, 200))} is not a URL` };
  const parsed = new URL(url, "http://proxy.invalid");
  if (parsed.pathname !== "/files") return undefined;
  if (!parsed.searchParams.has("signature")) return undefined;
  const why = ambiguity(url);
  if (why) return { malformed: `this file URL cannot be read one way only (${why}): use the URL download_url/upload_url gave` };
  const signature = parsed.searchParams.get("signature");
  const path = parsed.searchParams.get("path");
  if (!signature || !SIGNATURE.test(signature) || !path) return undefined;
  const expiration = parsed.searchParams.get("signature_expiration");
  if (expiration !== null && !/^\d{1,12}$/.test(expiration)) return undefined;
  return {
    path,
    operation: method === "GET" ? "read" : "write",
    username: parsed.searchParams.get("username") ?? "",
    signature,
    ...(expiration !== null ? { expiration: Number(expiration) } : {}),
  };
}

/**
 * The request target the daemon is sent for a signed request: rebuilt from the values the signature
 * was checked against, never the caller's raw query, so both sides read the same path and user.
 */
export function signedFileTarget(request: SignedFileRequest): string {
  const query = new URLSearchParams({ path: request.path, username: request.username, signature: request.signature });
  if (request.expiration !== undefined) query.set("signature_expiration", String(request.expiration));
  return `/files?${query.toString()}`;
}

/** The signature a sandbox whose token is `token` gives the request's path, operation, user and expiration. */
export function fileSignature(request: Omit<SignedFileRequest, "signature">, token: string): string {
  const raw = `${request.path}:${request.operation}:${request.username}:${token}${request.expiration !== undefined ? `:${request.expiration}` : ""}`;
  return `v1_${createHash("sha256").update(raw, "utf8").digest("base64").replace(/=+$/, "")}`;
}

/** Whether `token` signed the request. */
export function signedBy(request: SignedFileRequest, token: string): boolean {
  const expected = Buffer.from(fileSignature(request, token));
  const given = Buffer.from(request.signature);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

/** Whether the URL has expired at `nowSeconds` (a URL without an expiration does not). */
export function signatureExpired(request: SignedFileRequest, nowSeconds: number): boolean {
  return request.expiration !== undefined && request.expiration < nowSeconds;
}
