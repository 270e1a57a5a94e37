import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { Duplex } from "node:stream";

type Handler = (request: http.IncomingMessage | http2.Http2ServerRequest, response: http.ServerResponse | http2.Http2ServerResponse) => void;

export interface CleartextServer {
  /** The bound port (useful with port 0). */
  port: number;
  close(): Promise<void>;
}

function replayingStream(socket: net.Socket, head: Buffer): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      socket.write(chunk, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(error, callback) {
      socket.destroy(error ?? undefined);
      callback(error);
    },
  });
  duplex.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.once("end", () => duplex.push(null));
  socket.once("close", () => duplex.destroy());
  return duplex;
}

const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * One port that speaks HTTP/2 with prior knowledge (gRPC, Connect over h2c) and HTTP/1.1 (curl,
 * Connect JSON, gRPC-Web). Node's cleartext HTTP/2 server cannot fall back to HTTP/1.1 by itself,
 * so the first bytes of each connection decide which server gets it.
 */
export async function listenCleartext(handler: Handler, host: string, port: number): Promise<CleartextServer> {
  const h1 = http.createServer(handler as http.RequestListener);
  h1.keepAliveTimeout = 65_000;
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
      if (isHttp2) {
        // Node's HTTP/2 session reads the socket's native handle, bypassing unshift(): give it a
        // stream that replays the bytes already read, then forwards the socket both ways.
        h2.emit("connection", replayingStream(socket, received));
      } else {
        socket.unshift(received);
        h1.emit("connection", socket);
      }
      socket.resume();
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
