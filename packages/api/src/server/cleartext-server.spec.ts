import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { listenCleartext, type CleartextServer } from "./cleartext-server.js";

/** Echoes the protocol version, method, path and body, so each test sees what reached the handler. */
function echo(request: http.IncomingMessage | http2.Http2ServerRequest, response: http.ServerResponse | http2.Http2ServerResponse): void {
  const chunks: Buffer[] = [];
  request.on("data", (chunk: Buffer) => chunks.push(chunk));
  request.on("end", () => {
    const body = JSON.stringify({
      httpVersion: request.httpVersion,
      method: request.method,
      path: request.url,
      body: Buffer.concat(chunks).toString(),
    });
    response.writeHead(200, { "content-type": "application/json" });
    response.end(body);
  });
}

interface Echo {
  httpVersion: string;
  method: string;
  path: string;
  body: string;
}

function http2Request(session: http2.ClientHttp2Session, path: string, body: string): Promise<{ status: number; echo: Echo }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "text/plain",
    });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on("response", (headers) => (status = Number(headers[":status"])));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () =>
      resolve({
        status,
        echo: JSON.parse(Buffer.concat(chunks).toString()) as Echo,
      }),
    );
    stream.on("error", reject);
    stream.end(body);
  });
}

function connectHttp2(port: number): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.once("connect", () => resolve(session));
    session.once("error", reject);
  });
}

describe("listenCleartext", () => {
  let server: CleartextServer;

  before(async () => {
    server = await listenCleartext(echo, "127.0.0.1", 0);
  });

  after(async () => {
    await server.close();
  });

  it("binds an ephemeral port when asked for port 0", () => {
    assert.ok(Number.isInteger(server.port) && server.port > 0, `port ${server.port}`);
  });

  it("serves HTTP/1.1 (fetch) on the port", async () => {
    const response = await fetch(`http://127.0.0.1:${server.port}/h1/path?q=1`, { method: "POST", body: "hello over h1" });
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), {
      httpVersion: "1.1",
      method: "POST",
      path: "/h1/path?q=1",
      body: "hello over h1",
    });
  });

  it("serves HTTP/2 with prior knowledge on the same port, several streams on one session", async () => {
    const session = await connectHttp2(server.port);
    try {
      const [first, second] = await Promise.all([http2Request(session, "/h2/one", "first"), http2Request(session, "/h2/two", "x".repeat(100_000))]);
      assert.equal(first.status, 200);
      assert.deepEqual(first.echo, {
        httpVersion: "2.0",
        method: "POST",
        path: "/h2/one",
        body: "first",
      });
      assert.equal(second.echo.path, "/h2/two");
      assert.equal(second.echo.body.length, 100_000);
    } finally {
      session.close();
    }
  });

  it("serves an HTTP/1.1 request that arrives one byte at a time", async () => {
    const request = `GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`;
    const socket = net.connect(server.port, "127.0.0.1");
    await new Promise<void>((resolve) => socket.once("connect", resolve));
    const received: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => received.push(chunk));
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.setNoDelay(true);
    for (const byte of request) {
      socket.write(byte);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await closed;
    const text = Buffer.concat(received).toString();
    assert.match(text, /^HTTP\/1\.1 200 OK/);
    assert.match(text, /"path":"\/slow"/);
  });
});

describe("CleartextServer.close", () => {
  it("closes open HTTP/1.1 keep-alive and HTTP/2 connections and stops listening", async () => {
    const server = await listenCleartext(echo, "127.0.0.1", 0);
    const session = await connectHttp2(server.port);
    await http2Request(session, "/before-close", "");
    const sessionClosed = new Promise<void>((resolve) => session.once("close", () => resolve()));
    session.on("error", () => {});

    const agent = new http.Agent({ keepAlive: true });
    const keepAliveSocket = await new Promise<net.Socket>((resolve, reject) => {
      const request = http.get({ host: "127.0.0.1", port: server.port, path: "/keep-alive", agent }, (response) => {
        response.resume();
        response.on("end", () => resolve(request.socket as net.Socket));
      });
      request.on("error", reject);
    });
    assert.equal(keepAliveSocket.destroyed, false);
    const socketClosed = new Promise<void>((resolve) => keepAliveSocket.once("close", () => resolve()));

    // close() resolves only once the listener is closed, which waits for every connection to end.
    await server.close();
    await Promise.all([sessionClosed, socketClosed]);
    agent.destroy();

    await assert.rejects(fetch(`http://127.0.0.1:${server.port}/after-close`));
  });
});
