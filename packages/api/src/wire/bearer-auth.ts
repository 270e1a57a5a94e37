import { timingSafeEqual } from "node:crypto";
import type { Interceptor } from "@connectrpc/connect";
import { UnauthenticatedError } from "../errors.js";
import { toConnectError } from "./connect-errors.js";

/** Compares two tokens in constant time (for their length). */
export function equalTokens(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

/** Server side: refuses every call whose `authorization` header is not `Bearer <token>`. */
export function requireBearerToken(token: string): Interceptor {
  if (token.length < 16) throw new Error("refusing to serve with a bearer token shorter than 16 characters");
  return (next) => async (request) => {
    const header = request.header.get("authorization") ?? "";
    if (!header)
      throw toConnectError(new UnauthenticatedError("missing bearer token: send 'authorization: Bearer <token>' (fsb reads it from its data directory)"));
    const match = /^Bearer (.+)$/.exec(header);
    if (!match?.[1] || !equalTokens(match[1], token)) {
      throw toConnectError(new UnauthenticatedError("invalid bearer token: use the token in the data directory of the running 'fsb up'"));
    }
    return next(request);
  };
}

/** Client side: adds the bearer token to every call. */
export function sendBearerToken(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}
