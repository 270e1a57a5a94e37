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

const SIGNATURE = /^v1_[A-Za-z0-9+/]{43}$/;

/** A signed `GET|POST /files?...` request, or undefined when the request is not one. */
export function parseSignedFileRequest(method: string | undefined, url: string | undefined): SignedFileRequest | undefined {
  if (!url || (method !== "GET" && method !== "POST")) return undefined;
  const parsed = new URL(url, "http://proxy.invalid");
  if (parsed.pathname !== "/files") return undefined;
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
