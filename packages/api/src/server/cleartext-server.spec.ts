import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { Duplex } from "node:stream";
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

/** Everything a raw connection received until it closed (the server closed it, or the test did). */
function receivedUntilClose(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    socket.on("data", (chunk: Buffer) => (text += chunk.toString()));
    socket.once("close", () => resolve(text));
    socket.on("error", () => undefined);
  });
}

/** What a raw connection receives up to `marker`. */
function readUntil(socket: net.Socket, marker: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (chunk: Buffer) => {
      text += chunk.toString();
      if (!text.includes(marker)) return;
      socket.off("data", onData);
      resolve(text);
    };
    socket.on("data", onData);
    socket.once("error", reject);
  });
}

function connectRaw(port: number, allowHalfOpen = false): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", allowHalfOpen });
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A CONNECT handler that answers 200 and echoes what it receives. */
function echoTunnel(_request: http.IncomingMessage, socket: Duplex): void {
  socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
  socket.pipe(socket);
}

// A test whose server never cuts the client would otherwise wait forever: it fails instead.
const GUARD = { timeout: 10_000 };

describe("listenCleartext with clients that stall", () => {
  it("answers 408 and closes an HTTP/1.1 connection whose head does not arrive within the headers timeout, also with no request timeout", GUARD, async () => {
    const server = await listenCleartext(echo, "127.0.0.1", 0, { requestTimeoutMs: 0, headersTimeoutMs: 100 });
    try {
      const socket = await connectRaw(server.port);
      const received = receivedUntilClose(socket);
      socket.write("GET /slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\n");
      assert.match(await received, /^HTTP\/1\.1 408/);
    } finally {
      await server.close();
    }
  });

  it("takes a headers timeout longer than the request timeout: the request timeout bounds the head", GUARD, async () => {
    const server = await listenCleartext(echo, "127.0.0.1", 0, { requestTimeoutMs: 100, headersTimeoutMs: 60_000 });
    try {
      const socket = await connectRaw(server.port);
      const received = receivedUntilClose(socket);
      socket.write("GET /slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\n");
      assert.match(await received, /^HTTP\/1\.1 408/);
    } finally {
      await server.close();
    }
  });

  it("closes a connection that does not tell HTTP/1.1 from HTTP/2 within the first-bytes timeout: silent, or a partial HTTP/2 preface", GUARD, async () => {
    const server = await listenCleartext(echo, "127.0.0.1", 0, { firstBytesTimeoutMs: 100 });
    try {
      const silent = await connectRaw(server.port);
      const partial = await connectRaw(server.port);
      const closed = Promise.all([receivedUntilClose(silent), receivedUntilClose(partial)]);
      partial.write("PRI * HTTP/2.0\r\n");
      assert.deepEqual(await closed, ["", ""]);
    } finally {
      await server.close();
    }
  });

  it("keeps a kept-alive HTTP/1.1 connection past the first-bytes timeout once its protocol is known", GUARD, async () => {
    const server = await listenCleartext(echo, "127.0.0.1", 0, { firstBytesTimeoutMs: 200 });
    try {
      const socket = await connectRaw(server.port);
      const request = "GET /again HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
      socket.write(request);
      assert.match(await readUntil(socket, "}"), /^HTTP\/1\.1 200/);
      await pause(500);
      socket.write(request);
      assert.match(await readUntil(socket, "}"), /^HTTP\/1\.1 200/);
      socket.destroy();
    } finally {
      await server.close();
    }
  });

  it("keeps an open CONNECT tunnel past the headers and request timeouts", GUARD, async () => {
    const server = await listenCleartext(echo, "127.0.0.1", 0, { onConnect: echoTunnel, requestTimeoutMs: 100, headersTimeoutMs: 50 });
    try {
      const socket = await connectRaw(server.port);
      socket.write("CONNECT somewhere:1 HTTP/1.1\r\nHost: somewhere:1\r\n\r\n");
      assert.match(await readUntil(socket, "\r\n\r\n"), /^HTTP\/1\.1 200/);
      await pause(400);
      socket.write("still there");
      assert.equal(await readUntil(socket, "there"), "still there");
      socket.destroy();
    } finally {
      await server.close();
    }
  });

  it("closes an HTTP/2 session that has had no open stream for the idle timeout, and never one while a stream is open, however quiet", GUARD, async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const server = await listenCleartext(
      (request, response) => {
        if (request.url !== "/hold") return echo(request, response);
        const streamed = response as http2.Http2ServerResponse;
        streamed.writeHead(200);
        streamed.write("started");
        void held.then(() => streamed.end("done"));
      },
      "127.0.0.1",
      0,
      { http2IdleTimeoutMs: 100 },
    );
    try {
      const idle = await connectHttp2(server.port);
      idle.on("error", () => undefined);
      await http2Request(idle, "/one", "");
      await new Promise<void>((resolve) => idle.once("close", () => resolve()));

      const busy = await connectHttp2(server.port);
      busy.on("error", () => undefined);
      const stream = busy.request({ ":path": "/hold" });
      let body = "";
      stream.on("data", (chunk: Buffer) => (body += chunk.toString()));
      const ended = new Promise<void>((resolve) => stream.once("end", () => resolve()));
      await pause(400);
      assert.equal(busy.closed || busy.destroyed, false, "a session with an open stream stays open");
      const busyClosed = new Promise<void>((resolve) => busy.once("close", () => resolve()));
      release();
      await ended;
      assert.equal(body, "starteddone");
      // Idle once its last stream closed: closed in turn.
      await busyClosed;
    } finally {
      release();
      await server.close();
    }
  });
});

describe("listenCleartext with clients that half-close", () => {
  it("lets a CONNECT tunnel answer after the client's FIN", GUARD, async () => {
    const server = await listenCleartext(echo, "127.0.0.1", 0, {
      // A far end that answers only once the client is done sending (`printf q | nc -N host port`),
      // and not at once: a tunnel's answer comes back from the far end later.
      onConnect: (_request, socket) => {
        socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        let got = "";
        socket.on("data", (chunk: Buffer) => (got += chunk.toString()));
        socket.once("end", () => setTimeout(() => socket.end(`got ${got}`), 20));
      },
    });
    try {
      const socket = await connectRaw(server.port, true);
      socket.write("CONNECT somewhere:1 HTTP/1.1\r\nHost: somewhere:1\r\n\r\n");
      assert.match(await readUntil(socket, "\r\n\r\n"), /^HTTP\/1\.1 200/);
      const answer = receivedUntilClose(socket);
      socket.end("q");
      assert.equal(await answer, "got q");
    } finally {
      await server.close();
    }
  });

  it("serves kept-alive HTTP/1.1 requests and still closes the connection on the client's FIN", GUARD, async () => {
    const server = await listenCleartext(echo, "127.0.0.1", 0);
    try {
      const socket = await connectRaw(server.port, true);
      for (const path of ["/first", "/second"]) {
        socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
        assert.match(await readUntil(socket, "}"), new RegExp(`^HTTP/1\\.1 200[\\s\\S]*"path":"${path}"`));
      }
      const serverEnded = new Promise<void>((resolve) => socket.once("end", () => resolve()));
      socket.end();
      await serverEnded;
      socket.destroy();
    } finally {
      await server.close();
    }
  });
});

describe("listenCleartext's TCP keep-alive", () => {
  /** Each setKeepAlive on a socket while `fn` runs: its peer's port, and the arguments. */
  async function keepAliveCalls(
    fn: () => Promise<void>,
  ): Promise<{ remotePort: number | undefined; enable: boolean | undefined; delay: number | undefined }[]> {
    const calls: { remotePort: number | undefined; enable: boolean | undefined; delay: number | undefined }[] = [];
    const original = net.Socket.prototype.setKeepAlive;
    net.Socket.prototype.setKeepAlive = function (this: net.Socket, enable?: boolean, delay?: number) {
      calls.push({ remotePort: this.remotePort, enable, delay });
      return original.call(this, enable, delay);
    };
    try {
      await fn();
    } finally {
      net.Socket.prototype.setKeepAlive = original;
    }
    return calls;
  }

  it("probes every accepted connection once idle for tcpKeepAliveMs (a peer gone without a FIN or RST is found), and none without it", GUARD, async () => {
    for (const tcpKeepAliveMs of [60_000, undefined]) {
      const server = await listenCleartext(echo, "127.0.0.1", 0, tcpKeepAliveMs === undefined ? {} : { tcpKeepAliveMs });
      try {
        let clientPort: number | undefined;
        const calls = await keepAliveCalls(async () => {
          const socket = await connectRaw(server.port);
          clientPort = socket.localPort;
          socket.write("GET /probed HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
          assert.match(await readUntil(socket, "}"), /^HTTP\/1\.1 200/);
          socket.destroy();
        });
        const accepted = calls.filter((call) => call.remotePort === clientPort);
        assert.deepEqual(accepted, tcpKeepAliveMs === undefined ? [] : [{ remotePort: clientPort, enable: true, delay: tcpKeepAliveMs }]);
      } finally {
        await server.close();
      }
    }
  });
});
