import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import type { Duplex } from "node:stream";

type Handler = (request: http.IncomingMessage | http2.Http2ServerRequest, response: http.ServerResponse | http2.Http2ServerResponse) => void;

/** What else an HTTP/1.1 connection may ask for besides requests (e.g. a proxy's WebSockets and tunnels). */
export interface CleartextServerOptions {
  /** Requests with `Connection: upgrade` (WebSocket); without it Node answers them as plain requests. */
  onUpgrade?: (request: http.IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** `CONNECT` requests (tunnels); without it Node closes their connection. */
  onConnect?: (request: http.IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Longest time to receive a whole HTTP/1.1 request, body included; 0: no limit (long uploads). @default Node's (300000) */
  requestTimeoutMs?: number;
}

export interface CleartextServer {
  /** The bound port (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * One port that speaks HTTP/2 with prior knowledge (gRPC, Connect over h2c) and HTTP/1.1 (curl,
 * Connect JSON, gRPC-Web). Node's cleartext HTTP/2 server cannot fall back to HTTP/1.1 by itself,
 * so the first bytes of each connection decide which server gets it.
 */
export async function listenCleartext(handler: Handler, host: string, port: number, options: CleartextServerOptions = {}): Promise<CleartextServer> {
  const h1 = http.createServer(options.requestTimeoutMs !== undefined ? { requestTimeout: options.requestTimeoutMs } : {}, handler as http.RequestListener);
  h1.keepAliveTimeout = 65_000;
  if (options.onUpgrade) h1.on("upgrade", options.onUpgrade);
  if (options.onConnect) h1.on("connect", options.onConnect);
  const h2 = http2.createServer(handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.setNoDelay(true);
    let received = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const length = Math.min(received.length, HTTP2_PREFACE.length);
      const isHttp2 = received.subarray(0, length).equals(HTTP2_PREFACE.subarray(0, length));
      if (isHttp2 && received.length < HTTP2_PREFACE.length) return;
      socket.off("data", onData);
      socket.pause();
      socket.unshift(received);
      if (isHttp2) {
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
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}
