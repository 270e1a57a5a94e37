/**
 * The sandbox proxy: authenticated ingress to the ports sandboxes expose. One cleartext port speaks
 * HTTP/1.1 and HTTP/2 with prior knowledge (h2c): the first bytes of a connection decide (the HTTP/2
 * preface), since Node's HTTP/2 server falls back to HTTP/1.1 only over TLS (`listenCleartext`).
 * - Requests (HTTP/1.1 or 2) are forwarded as HTTP/1.1 to the sandbox's port, streamed both ways with
 *   back-pressure and never buffered (http2-proxy: hop-by-hop headers, `Forwarded`, trailers).
 * - WebSocket upgrades (HTTP/1.1) are forwarded and then relayed byte for byte.
 * - `CONNECT <port>-<sandboxID>.<domain>:<proxy port>` opens a raw TCP tunnel to the port
 *   (`fsb port-forward`), to any port but the in-sandbox daemon's, whose requests the proxy checks.
 * Every one of them is routed and authenticated the same way (proxy-target.ts); `X-Access-Token` is
 * removed before anything reaches the sandbox. Request targets are paths (origin-form) only: the path
 * checked is the path forwarded. A tunnel, WebSocket or request in flight is cut once its sandbox's
 * token changes or the sandbox is deleted (open-tunnels.ts). Refusals are JSON
 * `{code, message, sandboxId?}`, readable by a page of any origin. A browser's CORS preflight to a sandbox's daemon port (E2B's JS
 * SDK in a browser) is answered here, as the daemon would, since a preflight carries no token.
 * Connections go to the sandbox directly or through its agent's relay (sandbox-dialer.ts).
 */
import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import { posix } from "node:path";
import type { Duplex } from "node:stream";
import proxy from "http2-proxy";
import type { Logger } from "pino";
import { ACCESS_TOKEN_HEADER, ERROR_CODE_HEADER, SANDBOX_DAEMON_PORT, TRAFFIC_ACCESS_TOKEN_HEADER, listenCleartext } from "@fast-sandbox/api";
import { OpenTunnels } from "./open-tunnels.js";
import { DialTimeoutError, SandboxDialer } from "./sandbox-dialer.js";
import { TCP_KEEPALIVE_DELAY_MS } from "./relay-dial.js";
import { isProxyRefusal, resolveProxyTarget, type ProxyRefusal, type ProxyTarget, type ProxyTargetSources, type RequestLine } from "./proxy-target.js";
import type { ProxyMetrics } from "./proxy-metrics.js";
import { SANDBOX_ID_HEADER, isRefusal, routeOf } from "./sandbox-route.js";

export interface SandboxProxyOptions {
  /** Where the sandboxes and their agents are, and the public domain routes are read under. */
  sources: ProxyTargetSources;
  logger: Logger;
  /** @default "127.0.0.1" */
  host?: string;
  /** @default 0 (any free port) */
  port?: number;
  /** @default no metrics */
  metrics?: ProxyMetrics;
  /** The agent token, for targets reached through an agent's relay (`sources.agentRelay`): one for every agent, or each relay's (SandboxDialer). */
  agentToken?: string | ((relay: string) => string | undefined);
  /** How long a kept-alive connection to a sandbox may stay idle before the proxy closes it. @default DEFAULT_IDLE_CONNECTION_TIMEOUT_MS */
  idleConnectionTimeoutMs?: number;
  /** How long the first connection to a port of a sandbox is tried again while the port refuses it (port-start-grace.ts). @default 3000 */
  portStartGraceMs?: number;
  /** How long one try at a connection to a sandbox (through a relay: and the relay's answer) may take before the caller is answered 504. @default 10000 */
  connectTimeoutMs?: number;
}

export interface SandboxProxy {
  /** The bound port (useful with port 0). */
  port: number;
  /** Stops listening and cuts every connection, WebSockets and tunnels included. */
  close(): Promise<void>;
}

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  405: "Method Not Allowed",
  409: "Conflict",
  429: "Too Many Requests",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/** The methods whose request body http2-proxy never forwards (it reads and discards it). */
const BODILESS_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * A paused sandbox's refusal to a Connect streaming call (E2B's SDKs start commands so): as the
 * stream's end message (HTTP 200, flags 0x02, `{"error": {code, message}}`), the only answer whose
 * words Connect clients read on a stream — a 409 with a JSON body reaches the caller as
 * "[unknown] HTTP 409". Other refusals keep their HTTP status, which the SDKs act on (a 502 or 503
 * is their "sandbox not running").
 */
function sendConnectStreamEnd(response: Response, refusal: ProxyRefusal, contentType: string): void {
  const code = refusal.errorCode ?? "unknown";
  // The code in the end message's metadata too: what Connect clients keep of a failed stream's headers varies.
  const end = Buffer.from(JSON.stringify({ error: { code, message: refusal.body.message }, metadata: { [ERROR_CODE_HEADER]: [code] } }));
  const envelope = Buffer.alloc(5 + end.length);
  envelope.writeUInt8(0x02, 0);
  envelope.writeUInt32BE(end.length, 1);
  end.copy(envelope, 5);
  response.statusCode = 200;
  response.setHeader("access-control-allow-origin", "*");
  response.setHeader("content-type", contentType);
  response.setHeader("content-length", envelope.length);
  response.setHeader(ERROR_CODE_HEADER, code);
  response.setHeader("access-control-expose-headers", ERROR_CODE_HEADER);
  response.end(envelope);
}

const CONNECT_STREAM_CONTENT_TYPE = /^application\/connect\+(?:json|proto)\b/i;

function sendRefusal(request: Request, response: Response, refusal: ProxyRefusal): void {
  const contentType = single(request.headers["content-type"]) ?? "";
  if (refusal.status === 409 && refusal.errorCode === "failed_precondition" && CONNECT_STREAM_CONTENT_TYPE.test(contentType)) {
    sendConnectStreamEnd(response, refusal, contentType);
  } else {
    sendJson(response, refusal);
  }
}

function sendJson(response: Response, refusal: ProxyRefusal): void {
  const body = JSON.stringify(refusal.body);
  response.statusCode = refusal.status;
  // A page that called a sandbox sees why it was refused (the body holds nothing secret).
  response.setHeader("access-control-allow-origin", "*");
  response.setHeader("content-type", "application/json");
  response.setHeader("content-length", Buffer.byteLength(body));
  if (refusal.errorCode) {
    response.setHeader(ERROR_CODE_HEADER, refusal.errorCode);
    response.setHeader("access-control-expose-headers", ERROR_CODE_HEADER);
  }
  response.end(body);
}

/**
 * Whether a request is a browser's CORS preflight (OPTIONS with Access-Control-Request-Method) to a
 * sandbox's daemon port: a preflight never carries the access token, and the daemon answers every one
 * the same (packages/envd: withCORS), so the proxy answers it in the daemon's stead. Other ports'
 * preflights need the token like any request: what a sandbox's own service allows is its business.
 * A preflight of a request routed by E2B's headers (the one sandbox URL of `fsb e2b env`) carries
 * their names, not their values: it names no sandbox, and is answered alike (the request itself
 * still needs the token, sent as a header, never as a cookie).
 */
function isDaemonPreflight(request: Request, domain: string): boolean {
  if (request.method !== "OPTIONS" || request.headers["access-control-request-method"] === undefined) return false;
  const route = routeOf(request.headers, domain);
  if (!isRefusal(route)) return route.port === SANDBOX_DAEMON_PORT;
  const asked = single(request.headers["access-control-request-headers"]) ?? "";
  return asked.split(",").some((name) => name.trim().toLowerCase() === SANDBOX_ID_HEADER);
}

/**
 * The daemon's `/init` is its host's (E2B's orchestrator calls it as a sandbox starts), never a
 * client's: through the proxy, which strips X-Access-Token, an `/init` that set a daemon token would
 * lock every later call out of the daemon for good, and one that set defaults would change them
 * under every other client of the sandbox. So the proxy answers it itself, as E2B's does.
 */
export function internalDaemonRoute(target: Pick<ProxyTarget, "port" | "sandboxId">, url: string | undefined): ProxyRefusal | undefined {
  if (target.port !== SANDBOX_DAEMON_PORT) return undefined;
  // As the daemon's router sees it: decoded (`/%69nit`), cleaned (`//init`, `/x/../init`).
  let path = (url ?? "/").split("?")[0] ?? "/";
  try {
    path = decodeURIComponent(path);
  } catch {
    // Not decodable: the daemon refuses it too.
  }
  if (posix.normalize(`/${path}`).replace(/\/+$/, "") !== "/init") return undefined;
  return {
    status: 403,
    body: {
      code: 403,
      message: "the sandbox daemon's /init is not served through the proxy (the sandbox's own settings come from its create)",
      sandboxId: target.sandboxId,
      port: target.port,
    },
    errorCode: "permission_denied",
  };
}

/**
 * The proxy forwards origin-form request targets only (a path, RFC 9112 section 3.2.1): it checks
 * the path it forwards (`internalDaemonRoute`), and a sandbox's server reads the path of any other
 * form its own way (Go's reads the path of `http://host/init` as `/init`). A client that sends the
 * absolute form takes the proxy for an HTTP proxy; `CONNECT` (fsb port-forward) is what opens a tunnel.
 */
function nonOriginFormTarget(url: string | undefined): ProxyRefusal | undefined {
  if (url?.startsWith("/")) return undefined;
  return {
    status: 400,
    body: {
      code: 400,
      message:
        "the sandbox proxy takes origin-form request targets only (a path that starts with '/', not an absolute URL or '*'): send requests to it as to the sandbox's server, not as to an HTTP proxy",
    },
  };
}

/**
 * The in-sandbox daemon's port is reached by requests only, which the proxy checks
 * (`internalDaemonRoute`): a tunnel would carry any request to it, its host's `/init` included.
 */
function daemonTunnel(target: Pick<ProxyTarget, "port" | "sandboxId">): ProxyRefusal | undefined {
  if (target.port !== SANDBOX_DAEMON_PORT) return undefined;
  return {
    status: 403,
    body: {
      code: 403,
      message: `no tunnel (CONNECT) is opened to the sandbox daemon's port ${SANDBOX_DAEMON_PORT}: send its requests to the proxy over HTTP`,
      sandboxId: target.sandboxId,
      port: target.port,
    },
    errorCode: "permission_denied",
  };
}

/** The daemon's answer to a preflight: any origin, its methods, the headers asked for, for two hours. */
function answerDaemonPreflight(request: Request, response: Response): void {
  response.statusCode = 204;
  response.setHeader("access-control-allow-origin", "*");
  response.setHeader("access-control-allow-methods", "GET, HEAD, POST, OPTIONS");
  const requested = single(request.headers["access-control-request-headers"]);
  if (requested) response.setHeader("access-control-allow-headers", requested);
  response.setHeader("access-control-max-age", "7200");
  response.end();
}

/** A refusal written on a raw connection (a WebSocket upgrade or a CONNECT that is not forwarded), which is then closed. */
function refuseRaw(socket: Duplex, refusal: ProxyRefusal): void {
  const body = JSON.stringify(refusal.body);
  socket.end(
    `HTTP/1.1 ${refusal.status} ${STATUS_TEXT[refusal.status] ?? "Error"}\r\n` +
      `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      (refusal.errorCode ? `${ERROR_CODE_HEADER}: ${refusal.errorCode}\r\n` : "") +
      `connection: close\r\n\r\n${body}`,
  );
}

/**
 * The answer when the sandbox runs but its port could not be reached: nothing listens, it reset,
 * or what it answered is not HTTP (502); or no connection came within the connect timeout (504: the
 * sandbox or its agent is not answering, which may pass).
 */
function portUnreachable(target: ProxyTarget, error: unknown): ProxyRefusal {
  const reason = error instanceof Error ? error.message : String(error);
  if (error instanceof DialTimeoutError) {
    return {
      status: 504,
      body: {
        sandboxId: target.sandboxId,
        message: `The sandbox is running but port ${target.port} did not answer in time (${reason})`,
        port: target.port,
        code: 504,
      },
    };
  }
  const code = (error as { code?: unknown } | undefined)?.code;
  // Node's HTTP parser (llhttp) names what it could not read: the port is open, its answer is not HTTP.
  const what =
    typeof code === "string" && code.startsWith("HPE_")
      ? `answered with something that is not a valid HTTP response`
      : code === "ECONNRESET" || /socket hang up/.test(reason)
        ? `closed the connection without an answer`
        : `is not open`;
  return {
    status: 502,
    body: { sandboxId: target.sandboxId, message: `The sandbox is running but port ${target.port} ${what} (${reason})`, port: target.port, code: 502 },
  };
}

export async function startSandboxProxy(options: SandboxProxyOptions): Promise<SandboxProxy> {
  const { sources, logger, metrics } = options;
  // Keep-alive connections to sandbox ports, per address and port (and agent relay). A request may
  // stream or wait for as long as the sandbox and the caller like; an idle connection is closed by
  // the proxy after a few seconds (sandbox-dialer.ts: no TIME-WAIT left in the sandbox to block a pause).
  const dialer = new SandboxDialer(options.agentToken, {
    ...(options.idleConnectionTimeoutMs !== undefined ? { idleTimeoutMs: options.idleConnectionTimeoutMs } : {}),
    ...(options.portStartGraceMs !== undefined ? { portStartGraceMs: options.portStartGraceMs } : {}),
    ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
  });
  const rawConnections = new Set<Duplex>();
  // Tunnels, WebSockets and requests in flight, cut when their sandbox's token changes or the sandbox goes.
  const tunnels = new OpenTunnels();
  const stopWatching = sources.onSandboxChange?.((sandbox, deleted) => tunnels.sandboxChanged(sandbox, deleted));

  const resolve = async (headers: Record<string, string | string[] | undefined>, line?: RequestLine): Promise<ProxyTarget | ProxyRefusal> => {
    try {
      return await resolveProxyTarget(headers, sources, line);
    } catch (error) {
      logger.error({ err: error }, "sandbox proxy: could not resolve a target");
      return { status: 503, body: { code: 503, message: "the sandbox proxy cannot look sandboxes up right now; retry shortly" } };
    }
  };

  /** The request to the sandbox: the caller's, less the access token, with the original Host and X-Forwarded-*. */
  const upstreamRequest = (
    request: Request,
    options: http.RequestOptions,
    counted: { toSandbox: number },
    connection: Pick<http.ClientRequestArgs, "agent" | "createConnection">,
    port: number,
  ): http.ClientRequest => {
    const headers = (options.headers ?? {}) as http.OutgoingHttpHeaders;
    delete headers[ACCESS_TOKEN_HEADER];
    delete headers[TRAFFIC_ACCESS_TOKEN_HEADER];
    // The daemon refuses browsers (requests with an Origin) while it has no access token of its own,
    // so that a page cannot drive it directly; through the proxy the caller has shown the sandbox's
    // token, and a browser SDK's requests go on without the header (the daemon's CORS answer does
    // not depend on it).
    if (port === SANDBOX_DAEMON_PORT) delete headers.origin;
    // http2-proxy sends no body with these methods (it drains the caller's): a Content-Length left
    // on would make the sandbox's server wait for that many bytes on the kept-alive connection, and
    // take them from the next request sent on it, another caller's. The sandbox sees a request without a body.
    if (BODILESS_METHODS.has((options.method ?? "GET").toUpperCase())) {
      delete headers["content-length"];
      delete headers["transfer-encoding"];
    }
    const host = single(request.headers[":authority"]) ?? request.headers.host;
    if (host) {
      headers.host = host;
      headers["x-forwarded-host"] = host;
    }
    const remote = request.socket.remoteAddress;
    if (remote) {
      const before = single(request.headers["x-forwarded-for"]);
      headers["x-forwarded-for"] = before ? `${before}, ${remote}` : remote;
    }
    headers["x-forwarded-proto"] = "http";
    const upstream = http.request({ ...options, headers, ...connection });
    // The head goes out at once, not with the first chunk of the body: a server may answer before
    // the caller sends any (and a caller may wait for that answer before sending).
    upstream.flushHeaders();
    // Counts what goes to the sandbox as it goes, without holding any of it.
    const write = upstream.write.bind(upstream) as (chunk: unknown, ...rest: unknown[]) => boolean;
    upstream.write = ((chunk: unknown, ...rest: unknown[]) => {
      if (typeof chunk === "string" || chunk instanceof Uint8Array) counted.toSandbox += Buffer.byteLength(chunk);
      return write(chunk, ...rest);
    }) as typeof upstream.write;
    return upstream;
  };

  const onRequest = async (request: Request, response: Response): Promise<void> => {
    let responseClosed = false;
    response.once("close", () => (responseClosed = true));
    if (isDaemonPreflight(request, sources.domain)) {
      answerDaemonPreflight(request, response);
      metrics?.answered("http", 204);
      return;
    }
    // The target checked here is the one forwarded (`onReq` below), never another reading of it.
    const url = request.url;
    const malformed = nonOriginFormTarget(url);
    if (malformed) {
      sendJson(response, malformed);
      metrics?.answered("http", malformed.status);
      return;
    }
    const target = await resolve(request.headers, { method: request.method, url, remoteAddress: request.socket.remoteAddress });
    if (isProxyRefusal(target)) {
      sendRefusal(request, response, target);
      metrics?.answered("http", target.status);
      return;
    }
    const internal = internalDaemonRoute(target, url);
    if (internal) {
      sendJson(response, internal);
      metrics?.answered("http", internal.status);
      return;
    }
    // Held from the lookup on, in the same turn, until its response closes: a request may stream for
    // as long as a tunnel (a shell's input and output), so a token change seen after the lookup cuts it too.
    const release = tunnels.hold({ destroy: () => cutRequest(request) }, target);
    response.once("close", release);
    if (responseClosed) release();
    const counted = { toSandbox: 0, fromSandbox: 0 };
    const hungUp = abortedOnClose(response);
    try {
      await proxy.web(request as http.IncomingMessage, response as http.ServerResponse, {
        hostname: target.host,
        port: target.port,
        onReq: (incoming, requestOptions) => {
          // The request target goes out as it was checked above. A presigned file URL goes out as its
          // signature was checked, not as the caller wrote it, and without an Authorization header,
          // which would choose another user than the signed one.
          let options: http.RequestOptions = { ...requestOptions, path: url ?? "/" };
          if (target.path !== undefined) {
            const headers = { ...(requestOptions.headers as http.OutgoingHttpHeaders) };
            delete headers.authorization;
            options = { ...requestOptions, path: target.path, headers };
          }
          return Promise.resolve(upstreamRequest(incoming, options, counted, dialer.pooledConnection(target, hungUp), target.port));
        },
        // http2-proxy's own answer, except that the head goes out at once (not with the first byte
        // of the body): a streaming answer (server-sent events, a long poll) is seen to start.
        onRes: (_incoming, outgoing, answer) => {
          const upstreamAnswer = answer as unknown as http.IncomingMessage;
          outgoing.statusCode = upstreamAnswer.statusCode ?? 502;
          for (const [name, value] of Object.entries(upstreamAnswer.headers)) if (value !== undefined) outgoing.setHeader(name, value);
          outgoing.flushHeaders();
          upstreamAnswer.on("data", (chunk: Buffer) => (counted.fromSandbox += chunk.length));
          upstreamAnswer.once("end", () => {
            if (Object.keys(upstreamAnswer.trailers).length > 0) outgoing.addTrailers(upstreamAnswer.trailers);
          });
          upstreamAnswer.pipe(outgoing);
          return Promise.resolve();
        },
      });
    } catch (error) {
      if (!response.headersSent) sendJson(response, portUnreachable(target, error));
      else response.destroy();
      logger.debug({ err: error, sandboxId: target.sandboxId, port: target.port }, "sandbox proxy: request failed");
    } finally {
      metrics?.answered("http", response.statusCode);
      metrics?.transferred(counted.toSandbox, counted.fromSandbox);
    }
  };

  const onUpgrade = (request: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    void (async () => {
      rawConnections.add(socket);
      socket.once("close", () => rawConnections.delete(socket));
      socket.on("error", () => socket.destroy());
      if (single(request.headers.upgrade)?.toLowerCase() !== "websocket") {
        const refusal: ProxyRefusal = {
          status: 400,
          body: { code: 400, message: "only WebSocket upgrades are proxied; for HTTP/2 without TLS use prior knowledge (curl --http2-prior-knowledge)" },
        };
        refuseRaw(socket, refusal);
        metrics?.answered("websocket", refusal.status);
        return;
      }
      if (request.method !== "GET") {
        refuseRaw(socket, { status: 405, body: { code: 405, message: `a WebSocket upgrade is a GET request, not ${request.method ?? "?"}` } });
        metrics?.answered("websocket", 405);
        return;
      }
      // Checked as a request's target is: the one forwarded (http2-proxy sends `request.url` as it is).
      const malformed = nonOriginFormTarget(request.url);
      if (malformed) {
        refuseRaw(socket, malformed);
        metrics?.answered("websocket", malformed.status);
        return;
      }
      const found = await resolve(request.headers);
      const target = isProxyRefusal(found) ? found : (internalDaemonRoute(found, request.url) ?? found);
      if (isProxyRefusal(target)) {
        refuseRaw(socket, target);
        metrics?.answered("websocket", target.status);
        return;
      }
      // Held from the lookup on, in the same turn: a token change seen after the lookup closes it.
      tunnels.add(socket, target);
      // The Upgrade token is case-insensitive (RFC 9110), http2-proxy compares it to "websocket" as is.
      request.headers.upgrade = "websocket";
      const hungUp = abortedOnHangUp(socket);
      let upstreamSocket: net.Socket | undefined;
      /** What the connection had read before the request (a relay tunnel: the CONNECT's answer). */
      let readBefore = 0;
      const readFromSandbox = () => (upstreamSocket ? upstreamSocket.bytesRead - readBefore : 0);
      let upgraded = false;
      try {
        await proxy.ws(request, socket as net.Socket, head, {
          hostname: target.host,
          port: target.port,
          onReq: (incoming, requestOptions) => {
            // A fresh connection: after the upgrade it belongs to this WebSocket alone.
            const upstream = upstreamRequest(incoming, requestOptions, { toSandbox: 0 }, dialer.freshConnection(target, hungUp), target.port);
            upstream.once("socket", (connection: net.Socket) => {
              upstreamSocket = connection;
              readBefore = connection.bytesRead;
            });
            upstream.once("upgrade", () => {
              upgraded = true;
              metrics?.answered("websocket", 101);
              metrics?.opened("websocket");
            });
            upstream.once("response", (answer: http.IncomingMessage) => metrics?.answered("websocket", answer.statusCode ?? 502));
            return Promise.resolve(upstream);
          },
        });
      } catch (error) {
        // Nothing came back from the sandbox (no connection made, or it said nothing): the caller is told why.
        if (!upgraded && readFromSandbox() === 0) {
          const refusal = portUnreachable(target, error);
          refuseRaw(socket, refusal);
          metrics?.answered("websocket", refusal.status);
        } else socket.destroy();
        logger.debug({ err: error, sandboxId: target.sandboxId, port: target.port }, "sandbox proxy: WebSocket ended with an error");
      } finally {
        if (upgraded) metrics?.closed("websocket");
        if (upstreamSocket) metrics?.transferred(upstreamSocket.bytesWritten, readFromSandbox());
      }
    })();
  };

  const onConnect = (request: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    void (async () => {
      rawConnections.add(socket);
      socket.once("close", () => rawConnections.delete(socket));
      socket.on("error", () => socket.destroy());
      // The CONNECT target (`<port>-<id>.<domain>:<proxy port>`) names the sandbox when no Host does.
      const found = await resolve({ ...request.headers, host: request.headers.host ?? request.url });
      const target = isProxyRefusal(found) ? found : (daemonTunnel(found) ?? found);
      if (isProxyRefusal(target)) {
        refuseRaw(socket, target);
        metrics?.answered("tunnel", target.status);
        return;
      }
      // Held from the lookup on, in the same turn: a token change seen after the lookup closes it.
      tunnels.add(socket, target);
      const hungUp = abortedOnHangUp(socket);
      let upstream: net.Socket;
      try {
        upstream = await dialer.connect(target, hungUp);
      } catch (error) {
        const refusal = portUnreachable(target, error);
        refuseRaw(socket, refusal);
        metrics?.answered("tunnel", refusal.status);
        return;
      }
      rawConnections.add(upstream);
      if (socket.destroyed) {
        upstream.destroy();
        return;
      }
      metrics?.answered("tunnel", 200);
      metrics?.opened("tunnel");
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length > 0) upstream.write(head);
      // Each direction ends on its own (half-close), as a TCP connection does.
      upstream.pipe(socket);
      socket.pipe(upstream);
      upstream.on("error", () => socket.destroy());
      socket.once("close", () => upstream.destroy());
      upstream.once("close", () => {
        rawConnections.delete(upstream);
        socket.destroy();
        metrics?.closed("tunnel");
        metrics?.transferred(upstream.bytesWritten, upstream.bytesRead);
      });
    })();
  };

  const server = await listenCleartext(
    (request, response) => void onRequest(request, response),
    options.host ?? "127.0.0.1",
    options.port ?? 0,
    // Uploads to sandboxes may take long: no limit on receiving one request. Tunnels, WebSockets and
    // requests that wait on a sandbox may be quiet for as long: probes find a client that went without a word.
    { onUpgrade, onConnect, requestTimeoutMs: 0, tcpKeepAliveMs: TCP_KEEPALIVE_DELAY_MS },
  );
  return {
    port: server.port,
    async close() {
      stopWatching?.();
      for (const connection of rawConnections) connection.destroy();
      dialer.close();
      await server.close();
    },
  };
}

/**
 * Cuts one request in flight: over HTTP/2, its own stream alone (RST_STREAM), never the session,
 * which carries the client's other requests, to other sandboxes too; over HTTP/1.1, its connection,
 * which carries nothing else meanwhile (a kept-alive connection's next request waits for this one's
 * answer), since nothing less ends a request whose answer has begun.
 */
function cutRequest(request: Request): void {
  if ("stream" in request) request.stream.close(http2.constants.NGHTTP2_CANCEL);
  else request.socket.destroy();
}

/** A signal that aborts once the client's side closes (it hung up): a port's grace stops dialling for it. */
function abortedOnClose(client: { once(event: "close", listener: () => void): unknown }): AbortSignal {
  const controller = new AbortController();
  client.once("close", () => controller.abort(new Error("the client hung up")));
  return controller.signal;
}

/**
 * The same for a raw connection (a tunnel or WebSocket being opened), which also counts its client's
 * FIN as hanging up: the connection is half-open (the FIN of an open tunnel is relayed, and the answer
 * may follow), so a client that went would not close it; and before the sandbox is reached there is
 * nothing the client could be waiting for an answer to. The signal only serves the dial.
 */
function abortedOnHangUp(client: Duplex): AbortSignal {
  const controller = new AbortController();
  const hangUp = () => controller.abort(new Error("the client hung up"));
  client.once("close", hangUp);
  client.once("end", hangUp);
  return controller.signal;
}
