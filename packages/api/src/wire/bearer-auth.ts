import { timingSafeEqual } from "node:crypto";
import type http from "node:http";
import type { ConnectError, Interceptor } from "@connectrpc/connect";
import { encodeEnvelope } from "@connectrpc/connect/protocol";
import * as connectProtocol from "@connectrpc/connect/protocol-connect";
import * as grpcProtocol from "@connectrpc/connect/protocol-grpc";
import * as grpcWebProtocol from "@connectrpc/connect/protocol-grpc-web";
import { UnauthenticatedError } from "../errors.js";
import type { HttpHandler, HttpRequest, HttpResponse } from "../server/probe-routes.js";
import { toConnectError } from "./connect-errors.js";

/** Compares two tokens in constant time (for their length). */
export function equalTokens(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

/** Why a request whose `authorization` header is `header` is refused; undefined when it is `Bearer <token>`. */
function bearerTokenRefusal(header: string | undefined, token: string): ConnectError | undefined {
  if (!header)
    return toConnectError(new UnauthenticatedError("missing bearer token: send 'authorization: Bearer <token>' (fsb reads it from its data directory)"));
  const match = /^Bearer (.+)$/.exec(header);
  if (!match?.[1] || !equalTokens(match[1], token)) {
    return toConnectError(new UnauthenticatedError("invalid bearer token: use the token in the data directory of the running 'fsb up'"));
  }
  return undefined;
}

/**
 * Answers `error` to a request without reading its body, in the shape Connect gives an error of an
 * interceptor in the request's protocol (its content type), built with Connect's own serializers:
 * gRPC, its status in the trailers; gRPC-Web, its status in a trailer frame; a Connect stream, an
 * end-of-stream frame; anything else a Connect unary call's, the error as JSON under its HTTP status
 * (401 for Unauthenticated).
 */
export function answerConnectError(request: HttpRequest, response: HttpResponse, error: ConnectError): void {
  const contentType = request.headers["content-type"] ?? null;
  const grpc = grpcProtocol.parseContentType(contentType);
  const grpcWeb = grpcWebProtocol.parseContentType(contentType);
  const connect = connectProtocol.parseContentType(contentType);
  let status = 200;
  const header = new Headers();
  let body: Uint8Array | undefined;
  let trailer: Headers | undefined;
  if (grpc) {
    header.set(grpcProtocol.headerContentType, grpc.binary ? grpcProtocol.contentTypeProto : grpcProtocol.contentTypeJson);
    trailer = grpcProtocol.setTrailerStatus(new Headers(), error);
  } else if (grpcWeb && !grpcWeb.text) {
    header.set(grpcWebProtocol.headerContentType, grpcWeb.binary ? grpcWebProtocol.contentTypeProto : grpcWebProtocol.contentTypeJson);
    body = encodeEnvelope(grpcWebProtocol.trailerFlag, grpcWebProtocol.trailerSerialize(grpcWebProtocol.setTrailerStatus(new Headers(), error)));
  } else if (connect?.stream) {
    header.set(connectProtocol.headerContentType, connect.binary ? connectProtocol.contentTypeStreamProto : connectProtocol.contentTypeStreamJson);
    body = encodeEnvelope(connectProtocol.endStreamFlag, connectProtocol.createEndStreamSerialization({}).serialize({ metadata: new Headers(), error }));
  } else {
    status = connectProtocol.codeToHttpStatus(error.code);
    error.metadata.forEach((value, key) => header.set(key, value));
    header.set(connectProtocol.headerContentType, connectProtocol.contentTypeUnaryJson);
    body = connectProtocol.errorToJsonBytes(error, {});
  }
  // The two response types share these methods; their overloads differ, hence the cast.
  const out = response as http.ServerResponse;
  out.writeHead(status, Object.fromEntries(header));
  if (trailer) out.addTrailers(Object.fromEntries(trailer));
  out.end(body);
}

/** The interceptor `requireBearerToken` makes, which also puts its check in front of an HTTP handler. */
export type BearerTokenCheck = Interceptor & {
  /**
   * `handler` behind the same check, made on the request's headers before anything reads its body.
   * The interceptor runs only once Connect has read, decompressed and parsed the whole body (up to
   * its `readMaxBytes`): without this, anyone who reaches the port makes the server hold that much
   * before the refusal. A refused request is answered as the interceptor's error would be; its body
   * is never read (Node discards what arrives of it). Put open routes (probes) in front of it.
   */
  guard(handler: HttpHandler): HttpHandler;
};

/**
 * Server side: refuses every call whose `authorization` header is not `Bearer <token>` — as an
 * interceptor, and (`guard`) in front of the Connect adapter, before the request's body is read.
 */
export function requireBearerToken(token: string): BearerTokenCheck {
  if (token.length < 16) throw new Error("refusing to serve with a bearer token shorter than 16 characters");
  const interceptor: Interceptor = (next) => async (request) => {
    const refusal = bearerTokenRefusal(request.header.get("authorization") ?? undefined, token);
    if (refusal) throw refusal;
    return next(request);
  };
  return Object.assign(interceptor, {
    guard:
      (handler: HttpHandler): HttpHandler =>
      (request, response) => {
        const refusal = bearerTokenRefusal(request.headers.authorization, token);
        if (refusal) answerConnectError(request, response, refusal);
        else handler(request, response);
      },
  });
}

/** Client side: adds the bearer token to every call (`token()`'s at each call, for one that is renewed). */
export function sendBearerToken(token: string | (() => string)): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${typeof token === "function" ? token() : token}`);
    return next(request);
  };
}
