import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import type { Duplex } from "node:stream";

type Handler = (request: http.IncomingMessage | http2.Http2ServerRequest, response: http.ServerResponse | http2.Http2ServerResponse) => void;

/** What else an HTTP/1.1 connection may ask for besides requests (e.g. a proxy's WebSockets and tunnels), and how long a client may stall. */
export interface CleartextServerOptions {
  /**
   * Requests with `Connection: upgrade` (WebSocket); without it Node answers them as plain requests.
   * The socket is half-open capable: the client's FIN ends only what it sends (a tunnel relays it on).
   */
  onUpgrade?: (request: http.IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** `CONNECT` requests (tunnels); without it Node closes their connection. The socket is half-open capable, as `onUpgrade`'s. */
  onConnect?: (request: http.IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Longest time to receive a whole HTTP/1.1 request, body included; 0: no limit (long uploads). @default Node's (300000) */
  requestTimeoutMs?: number;
  /**
   * Longest time to receive the head (request line and headers) of an HTTP/1.1 request, also when
   * `requestTimeoutMs` is 0: a client that trickles headers (slowloris) holds a connection no longer.
   * At most `requestTimeoutMs` when that is set (Node's rule). @default 60000
   */
  headersTimeoutMs?: number;
  /** Longest time a new connection may take to send the bytes that tell HTTP/1.1 from HTTP/2 (up to the 24 of HTTP/2's preface). @default 10000 */
  firstBytesTimeoutMs?: number;
  /**
   * How long an HTTP/2 session may have no open stream before it is closed (GOAWAY), as HTTP/1.1's
   * keep-alive timeout closes an idle connection. A session with an open stream is never cut, however
   * quiet the stream (a log follow, a watch). 0: never. @default 65000
   */
  http2IdleTimeoutMs?: number;
  /**
   * Idle time after which TCP keep-alive probes check each accepted connection: one whose peer went
   * without a word (no FIN or RST: a host powered off, a NAT or firewall that forgot the connection)
   * is then found dead and closed, with whatever it held open (a tunnel, a request that waits). A
   * connection nothing is sent on (a quiet tunnel, a long poll) is never cut while its peer answers
   * the probes. Absent or 0: no probes (the system's default). @default 0
   */
  tcpKeepAliveMs?: number;
}

export interface CleartextServer {
  /** The bound port (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** Node's own default period between checks of the HTTP/1.1 timeouts (`connectionsCheckingInterval`). */
const NODE_CONNECTIONS_CHECKING_INTERVAL_MS = 30_000;

/**
 * The HTTP/1.1 server's timeout options. Node derives its headers timeout from the request timeout
 * (the smaller of 60 s and it), so a request timeout of 0 (no limit) would leave no headers timeout
 * either; here it is always its own. Timeouts are checked every `connectionsCheckingInterval` (Node:
 * 30 s): half the shortest timeout at most, so a short one is enforced about on time.
 */
function http1TimeoutOptions(options: CleartextServerOptions): http.ServerOptions {
  const requestTimeout = options.requestTimeoutMs ?? 300_000;
  let headersTimeout = options.headersTimeoutMs ?? 60_000;
  // Node refuses a headers timeout longer than a (non-zero) request timeout, which bounds the head anyway.
  if (requestTimeout > 0 && headersTimeout > requestTimeout) headersTimeout = requestTimeout;
  const shortest = Math.min(...[requestTimeout, headersTimeout].filter((timeout) => timeout > 0));
  return {
    requestTimeout,
    headersTimeout,
    ...(Number.isFinite(shortest)
      ? { connectionsCheckingInterval: Math.max(1, Math.min(NODE_CONNECTIONS_CHECKING_INTERVAL_MS, Math.floor(shortest / 2))) }
      : {}),
  };
}

/**
 * Closes an HTTP/2 session once it has had no open stream for `idleTimeoutMs`. Not Node's session
 * timeout (`setTimeout`), which counts inactivity and so would cut a quiet stream that is still open.
 */
function closeWhenIdle(session: http2.ServerHttp2Session, idleTimeoutMs: number): void {
  if (idleTimeoutMs <= 0) return;
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => session.close(), idleTimeoutMs);
    timer.unref();
  };
  arm();
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    open += 1;
    clearTimeout(timer);
    stream.once("close", () => {
      open -= 1;
      if (open === 0 && !session.closed && !session.destroyed) arm();
    });
  });
  session.once("close", () => clearTimeout(timer));
}

/**
 * One port that speaks HTTP/2 with prior knowledge (gRPC, Connect over h2c) and HTTP/1.1 (curl,
 * Connect JSON, gRPC-Web). Node's cleartext HTTP/2 server cannot fall back to HTTP/1.1 by itself,
 * so the first bytes of each connection decide which server gets it.
 */
export async function listenCleartext(handler: Handler, host: string, port: number, options: CleartextServerOptions = {}): Promise<CleartextServer> {
  const h1 = http.createServer(http1TimeoutOptions(options), handler as http.RequestListener);
  h1.keepAliveTimeout = 65_000;
  // Node starts checking the request and headers timeouts when its server starts listening; this one
  // never does (connections are handed to it), so it is told it listens, or no timeout is ever enforced.
  h1.emit("listening");
  if (options.onUpgrade) h1.on("upgrade", options.onUpgrade);
  if (options.onConnect) h1.on("connect", options.onConnect);
  const h2 = http2.createServer(handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
  const http2IdleTimeoutMs = options.http2IdleTimeoutMs ?? 65_000;
  h2.on("session", (session: http2.ServerHttp2Session) => closeWhenIdle(session, http2IdleTimeoutMs));
  const firstBytesTimeoutMs = options.firstBytesTimeoutMs ?? 10_000;
  const sockets = new Set<net.Socket>();
  // Half-open, as Node's own HTTP server's sockets (which ends an HTTP/1.1 connection on the client's
  // FIN itself): a tunnel or upgrade relays the FIN to the far end, whose answer may still come back.
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.setNoDelay(true);
    if (options.tcpKeepAliveMs) socket.setKeepAlive(true, options.tcpKeepAliveMs);
    // A connection that has not said which protocol it speaks is served by neither server's timeouts yet.
    const undecided = setTimeout(() => socket.destroy(), firstBytesTimeoutMs);
    const onEndUndecided = () => socket.destroy();
    socket.once("end", onEndUndecided);
    socket.once("close", () => clearTimeout(undecided));
    let received = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const length = Math.min(received.length, HTTP2_PREFACE.length);
      const isHttp2 = received.subarray(0, length).equals(HTTP2_PREFACE.subarray(0, length));
      if (isHttp2 && received.length < HTTP2_PREFACE.length) return;
      clearTimeout(undecided);
      socket.off("end", onEndUndecided);
      socket.off("data", onData);
      socket.pause();
      socket.unshift(received);
      if (isHttp2) {
        // HTTP/2 ends a connection with GOAWAY, not a FIN of one side: a client's FIN ends the
        // session's connection, as on Node's own HTTP/2 server (whose connections are not half-open).
        socket.allowHalfOpen = false;
        // The session takes over the socket's handle and first replays what sits in its buffer
        // (the bytes unshifted above); resuming would let those bytes flow past it, unread.
        h2.emit("connection", socket);
      } else {
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        // Stops the HTTP/1.1 server's timeout checks.
        h1.close();
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
