import assert from "node:assert/strict";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { Registry } from "prom-client";
import WebSocket, { WebSocketServer } from "ws";
import { API_VERSION, SANDBOX_DAEMON_PORT, type Sandbox } from "@fast-sandbox/api";
import { hashAccessToken } from "./access-token.js";
import { ProxyMetrics } from "./proxy-metrics.js";
import { internalDaemonRoute, startSandboxProxy, type SandboxProxy } from "./sandbox-proxy.js";
import { SignedFileLookup } from "./signed-file-lookup.js";
import { fileSignature } from "./signed-file-url.js";

const ID = "k3x9q0m2zt7c1w8r5bn4";
const TOKEN = "the-token";
/** The sandbox's E2B traffic token: its own ports, not its daemon's. */
const TRAFFIC = "the-traffic-token";

/** What the sandbox's server saw of the last request. */
let seen: { method?: string; url?: string; headers?: http.IncomingHttpHeaders } = {};

/** A sandbox's HTTP server: /echo streams every chunk back as it arrives; /big sends `size` bytes; anything else describes the request. */
function sandboxServer(): http.Server {
  return http.createServer((request, response) => {
    seen = { method: request.method ?? "", url: request.url ?? "", headers: request.headers };
    if (request.url === "/echo") {
      response.writeHead(200, { "content-type": "application/octet-stream" });
      response.flushHeaders();
      request.pipe(response);
      return;
    }
    const big = /^\/big\?size=(\d+)$/.exec(request.url ?? "");
    if (big) {
      let left = Number(big[1]);
      response.writeHead(200, { "content-length": left });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = () => {
        while (left > 0) {
          const piece = chunk.subarray(0, Math.min(chunk.length, left));
          left -= piece.length;
          if (!response.write(piece)) return void response.once("drain", pump);
        }
        response.end();
      };
      pump();
      return;
    }
    let body = 0;
    request.on("data", (chunk: Buffer) => (body += chunk.length));
    request.on("end", () => response.end(JSON.stringify({ method: request.method, url: request.url, body })));
  });
}

/** A Running sandbox `web` of agent-0 exposing `ports`, opened by `token`. */
function runningSandbox(ports: number[], name = "web", sandboxID = ID, token = TOKEN): Sandbox {
  return {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name, namespace: "default" },
    spec: { image: "busybox", poolRef: "default", exposedPorts: ports },
    status: { phase: "Running", assignedPod: "agent-0", sandboxID, accessTokenHash: hashAccessToken(token) },
  };
}

function listen(server: http.Server | net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

describe("the sandbox proxy", () => {
  const upstream = sandboxServer();
  const websockets = new WebSocketServer({ server: upstream });
  websockets.on("connection", (socket) => socket.on("message", (data, binary) => socket.send(data, { binary })));
  const tcpEcho = net.createServer((socket) => socket.pipe(socket));
  // A server whose answer is not HTTP (busybox httpd's CGI output with bare LF line ends, say).
  const notHttp = net.createServer((socket) => socket.once("data", () => socket.end("HTTP/1.1 200 OK\nContent-Length: 2\n\nhi")));
  // A server that closes every connection at once, answering nothing.
  const hangUp = net.createServer((socket) => socket.once("data", () => socket.destroy()));
  let notHttpPort: number;
  let hangUpPort: number;
  const registry = new Registry();
  let proxy: SandboxProxy;
  let port: number;
  let closedPort: number;
  let latePort: number;
  let record: Sandbox;

  before(async () => {
    port = await listen(upstream);
    const tcpPort = await listen(tcpEcho);
    // A port that refuses connections: bound, then closed.
    const spare = net.createServer();
    closedPort = await listen(spare);
    await new Promise((resolve) => spare.close(resolve));
    const late = net.createServer();
    latePort = await listen(late);
    await new Promise((resolve) => late.close(resolve));
    notHttpPort = await listen(notHttp);
    hangUpPort = await listen(hangUp);
    record = runningSandbox([port, tcpPort, closedPort, latePort, notHttpPort, hangUpPort]);
    proxy = await startSandboxProxy({
      sources: {
        lookup: (sandboxId) => Promise.resolve(sandboxId === ID ? record : undefined),
        agentAddress: (name) => (name === "agent-0" ? "127.0.0.1" : undefined),
        domain: "localhost",
        trafficTokenOf: (sandbox) => (sandbox === record ? TRAFFIC : undefined),
      },
      logger: pino({ level: "silent" }),
      metrics: new ProxyMetrics(registry),
      // Short, so the refused port's cases answer soon.
      portStartGraceMs: 300,
    });
    (record as { tcpPort?: number }).tcpPort = tcpPort;
  });

  after(async () => {
    await proxy.close();
    websockets.close();
    await new Promise((resolve) => upstream.close(resolve));
    await new Promise((resolve) => tcpEcho.close(resolve));
    await new Promise((resolve) => notHttp.close(resolve));
    await new Promise((resolve) => hangUp.close(resolve));
  });

  /** An HTTP/1.1 request to the proxy on loopback with the given Host (Node does not resolve *.localhost). */
  function request(options: {
    host?: string;
    path?: string;
    method?: string;
    headers?: Record<string, string>;
    body?: Buffer;
  }): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const outgoing = http.request(
        {
          host: "127.0.0.1",
          port: proxy.port,
          path: options.path ?? "/",
          method: options.method ?? "GET",
          headers: { host: options.host ?? `${port}-${ID}.localhost:${proxy.port}`, ...options.headers },
          agent: false,
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => chunks.push(chunk));
          response.on("end", () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
        },
      );
      outgoing.on("error", reject);
      outgoing.end(options.body);
    });
  }

  const withToken = { "x-access-token": TOKEN };

  it("forwards an HTTP/1.1 request routed by Host, without the access token, with the original Host", async () => {
    const answer = await request({ path: "/hello?x=1", method: "POST", headers: withToken, body: Buffer.from("twelve bytes") });
    assert.equal(answer.status, 200);
    assert.deepEqual(JSON.parse(answer.body.toString()), { method: "POST", url: "/hello?x=1", body: 12 });
    assert.equal(seen.headers?.["x-access-token"], undefined);
    assert.equal(seen.headers?.host, `${port}-${ID}.localhost:${proxy.port}`);
    assert.equal(seen.headers?.["x-forwarded-for"], "127.0.0.1");
  });

  it("takes E2B's traffic token (E2B-Traffic-Access-Token) for the sandbox's own ports, never for its daemon's, and forwards neither token", async () => {
    const viaE2b = (traffic: string, toPort: number) =>
      request({ host: `localhost:${proxy.port}`, headers: { "e2b-traffic-access-token": traffic, "e2b-sandbox-id": ID, "e2b-sandbox-port": String(toPort) } });
    const answer = await viaE2b(TRAFFIC, port);
    assert.equal(answer.status, 200);
    assert.equal(seen.headers?.["e2b-traffic-access-token"], undefined);
    assert.equal((await viaE2b("nope", port)).status, 401);
    // The access token opens everything, in either header (what an E2B client of an older answer holds there).
    assert.equal((await viaE2b(TOKEN, port)).status, 200);
    // The daemon's port (commands, files) needs the access token: the traffic token is handed to a service's clients.
    const daemon = await viaE2b(TRAFFIC, 49983);
    assert.equal(daemon.status, 401);
    assert.match(JSON.parse(daemon.body.toString()).message, /opens the sandbox's own ports, not its daemon's/);
  });

  it("answers a paused sandbox with E2B's 409, and a Connect stream with its end message (failed_precondition), whose words Connect clients read", async () => {
    const running = record.status;
    record.status = { ...running, phase: "Paused" };
    try {
      const plain = await request({ headers: withToken });
      assert.equal(plain.status, 409);
      assert.equal(JSON.parse(plain.body.toString()).message, "The sandbox is paused");
      assert.equal(plain.headers["fsb-error-code"], "failed_precondition");
      for (const contentType of ["application/connect+json", "application/connect+proto"]) {
        const stream = await request({
          method: "POST",
          path: "/process.Process/Start",
          headers: { ...withToken, "content-type": contentType, "connect-protocol-version": "1" },
        });
        assert.equal(stream.status, 200, contentType);
        assert.equal(stream.headers["content-type"], contentType);
        assert.equal(stream.headers["fsb-error-code"], "failed_precondition");
        assert.equal(stream.body.readUInt8(0), 0x02, "one end-stream message");
        assert.equal(stream.body.readUInt32BE(1), stream.body.length - 5);
        assert.deepEqual(JSON.parse(stream.body.subarray(5).toString()), {
          error: { code: "failed_precondition", message: "The sandbox is paused" },
          metadata: { "fsb-error-code": ["failed_precondition"] },
        });
      }
      // A unary Connect call reads the JSON body of a 409 itself.
      assert.equal((await request({ method: "POST", headers: { ...withToken, "content-type": "application/json" }, body: Buffer.from("{}") })).status, 409);
    } finally {
      record.status = running;
    }
    // Other refusals keep their status, which E2B's SDKs act on (a 502: the sandbox is not running).
    const gone = await request({
      method: "POST",
      host: `${port}-unknownsandbox000000.localhost:${proxy.port}`,
      headers: { ...withToken, "content-type": "application/connect+json" },
    });
    assert.equal(gone.status, 502);
  });

  it("forwards a request routed by the E2B headers", async () => {
    const answer = await request({ host: `localhost:${proxy.port}`, headers: { ...withToken, "e2b-sandbox-id": ID, "e2b-sandbox-port": String(port) } });
    assert.equal(answer.status, 200);
    assert.equal(JSON.parse(answer.body.toString()).url, "/");
  });

  it("answers 401 without the token or with another, 502 for an unknown sandbox, 400 without a route, 403 for a port not exposed", async () => {
    const missing = await request({});
    assert.equal(missing.status, 401);
    assert.equal(missing.headers["content-type"], "application/json");
    assert.equal(JSON.parse(missing.body.toString()).code, 401);
    assert.equal((await request({ headers: { "x-access-token": "nope" } })).status, 401);
    const unknown = await request({ host: `${port}-zzzzzzzzzz.localhost`, headers: withToken });
    assert.equal(unknown.status, 502);
    assert.deepEqual(JSON.parse(unknown.body.toString()), { sandboxId: "zzzzzzzzzz", message: "The sandbox was not found", code: 502 });
    // Fast Sandbox's own code beside E2B's body: what a Connect client of a failed stream can read (it never reads the body).
    assert.equal(unknown.headers["fsb-error-code"], "not_found");
    assert.equal(missing.headers["fsb-error-code"], undefined);
    assert.equal((await request({ host: "localhost", headers: withToken })).status, 400);
    assert.equal((await request({ host: `9-${ID}.localhost`, headers: withToken })).status, 403);
  });

  it("answers a browser's CORS preflight to a daemon port itself (no token in a preflight), and none to a sandbox's own port", async () => {
    const preflight = (host: string) =>
      request({
        host,
        method: "OPTIONS",
        headers: { origin: "https://app.example", "access-control-request-method": "POST", "access-control-request-headers": "x-access-token, content-type" },
      });
    const daemon = await preflight(`49983-${ID}.localhost:${proxy.port}`);
    assert.equal(daemon.status, 204);
    assert.equal(daemon.headers["access-control-allow-origin"], "*");
    assert.equal(daemon.headers["access-control-allow-headers"], "x-access-token, content-type");
    assert.match(String(daemon.headers["access-control-allow-methods"]), /POST/);
    // A sandbox's own service decides its CORS; without the token its preflight is refused, readably.
    const own = await preflight(`${port}-${ID}.localhost:${proxy.port}`);
    assert.equal(own.status, 401);
    assert.equal(own.headers["access-control-allow-origin"], "*");
    // Routed by E2B's headers (one URL for every sandbox): the preflight names them, without their values.
    const byHeaders = await preflight(`localhost:${proxy.port}`);
    assert.equal(byHeaders.status, 400);
    const e2bHeaders = await request({
      host: `localhost:${proxy.port}`,
      method: "OPTIONS",
      headers: {
        origin: "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "E2B-Sandbox-Id, e2b-sandbox-port, x-access-token",
      },
    });
    assert.equal(e2bHeaders.status, 204);
    assert.equal(e2bHeaders.headers["access-control-allow-headers"], "E2B-Sandbox-Id, e2b-sandbox-port, x-access-token");
    // Not a preflight (no Access-Control-Request-Method): an OPTIONS request like any other.
    assert.equal((await request({ host: `49983-${ID}.localhost:${proxy.port}`, method: "OPTIONS" })).status, 401);
  });

  it("answers 502 in JSON when nothing listens on the sandbox's port", async () => {
    const answer = await request({ host: `${closedPort}-${ID}.localhost`, headers: withToken });
    assert.equal(answer.status, 502);
    // Not "gone": the sandbox runs, its port does not answer (yet).
    assert.equal(answer.headers["fsb-error-code"], undefined);
    assert.match(JSON.parse(answer.body.toString()).message, new RegExp(`port ${closedPort} is not open`));
  });

  it("answers 502 saying what went wrong when the port is open but its answer is not HTTP, or it hangs up", async () => {
    const garbled = await request({ host: `${notHttpPort}-${ID}.localhost`, headers: withToken });
    assert.equal(garbled.status, 502);
    assert.match(
      JSON.parse(garbled.body.toString()).message,
      new RegExp(`port ${notHttpPort} answered with something that is not a valid HTTP response \\(Parse Error`),
    );
    const hungUp = await request({ host: `${hangUpPort}-${ID}.localhost`, headers: withToken });
    assert.equal(hungUp.status, 502);
    assert.match(JSON.parse(hungUp.body.toString()).message, new RegExp(`port ${hangUpPort} closed the connection without an answer`));
  });

  it("waits for a port whose server starts listening just after the first request (a sandbox still starting), body and all; 502 once it went away", async () => {
    // Long enough for the server below to start within it, however slow the machine.
    const patient = await startSandboxProxy({
      sources: { lookup: () => Promise.resolve(record), agentAddress: () => "127.0.0.1", domain: "localhost" },
      logger: pino({ level: "silent" }),
      portStartGraceMs: 30_000,
    });
    const late = sandboxServer();
    const post = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const outgoing = http.request(
          { host: "127.0.0.1", port: patient.port, path, method: "POST", headers: { host: `${latePort}-${ID}.localhost`, ...withToken }, agent: false },
          (response) => {
            let body = "";
            response.on("data", (chunk: Buffer) => (body += chunk.toString()));
            response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
          },
        );
        outgoing.on("error", reject);
        outgoing.end("a body of 20 bytes..");
      });
    try {
      const answering = post("/late");
      await new Promise((resolve) => setTimeout(resolve, 200));
      await new Promise<void>((resolve, reject) => late.once("error", reject).listen(latePort, "127.0.0.1", resolve));
      const answer = await answering;
      assert.equal(answer.status, 200, answer.body);
      assert.deepEqual(JSON.parse(answer.body), { method: "POST", url: "/late", body: 20 });
      late.closeAllConnections();
      await new Promise((resolve) => late.close(resolve));
      const gone = await post("/");
      assert.equal(gone.status, 502, "a port reached before that refuses is answered at once");
    } finally {
      late.closeAllConnections();
      if (late.listening) await new Promise((resolve) => late.close(resolve));
      await patient.close();
    }
  });

  it("stops dialling a port that is not open yet once the client hangs up (a request, a WebSocket, a tunnel)", async () => {
    const patient = await startSandboxProxy({
      sources: { lookup: () => Promise.resolve(record), agentAddress: () => "127.0.0.1", domain: "localhost" },
      logger: pino({ level: "silent" }),
      portStartGraceMs: 30_000,
    });
    const late = net.createServer((socket) => socket.destroy());
    let accepted = 0;
    late.on("connection", () => (accepted += 1));
    try {
      // A request, a WebSocket and a tunnel to the port, each dropped by its client while the proxy waits for the port.
      const hungUpRequest = http.request({
        host: "127.0.0.1",
        port: patient.port,
        path: "/",
        headers: { host: `${latePort}-${ID}.localhost`, ...withToken },
        agent: false,
      });
      hungUpRequest.on("error", () => undefined);
      hungUpRequest.end();
      const authority = `${latePort}-${ID}.localhost:${patient.port}`;
      const hungUpTunnel = net.connect(patient.port, "127.0.0.1");
      hungUpTunnel.on("error", () => undefined);
      hungUpTunnel.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\nx-access-token: ${TOKEN}\r\n\r\n`);
      const hungUpWebSocket = net.connect(patient.port, "127.0.0.1");
      hungUpWebSocket.on("error", () => undefined);
      hungUpWebSocket.write(
        `GET / HTTP/1.1\r\nhost: ${latePort}-${ID}.localhost\r\nx-access-token: ${TOKEN}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n` +
          "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      for (const client of [hungUpRequest, hungUpTunnel, hungUpWebSocket]) client.destroy();
      await new Promise((resolve) => setTimeout(resolve, 100));
      // The server starts: a proxy still dialling for them would reach it within its longest pause (250 ms).
      await new Promise<void>((resolve, reject) => late.once("error", reject).listen(latePort, "127.0.0.1", resolve));
      await new Promise((resolve) => setTimeout(resolve, 800));
      assert.equal(accepted, 0, "no connection was made for clients that had gone");
    } finally {
      if (late.listening) await new Promise((resolve) => late.close(resolve));
      await patient.close();
    }
  });

  it("streams a request body and its echo chunk by chunk over HTTP/1.1: nothing waits for the whole body", async () => {
    const outgoing = http.request({
      host: "127.0.0.1",
      port: proxy.port,
      path: "/echo",
      method: "POST",
      headers: { host: `${port}-${ID}.localhost`, ...withToken, "transfer-encoding": "chunked" },
      agent: false,
    });
    const response = await new Promise<http.IncomingMessage>((resolve) => {
      outgoing.once("response", resolve);
      outgoing.flushHeaders();
    });
    assert.equal(response.statusCode, 200);
    // Each chunk must come back before the next is sent: a proxy that buffered the body would hang here.
    for (let round = 0; round < 5; round++) {
      const chunk = Buffer.from(`round ${round};`);
      const echoed = new Promise<Buffer>((resolve) => response.once("data", resolve));
      outgoing.write(chunk);
      assert.deepEqual(await echoed, chunk);
    }
    outgoing.end();
    await new Promise((resolve) => response.on("end", resolve).resume());
  });

  it("serves HTTP/2 with prior knowledge on the same port, streaming both ways", async () => {
    const session = http2.connect(`http://127.0.0.1:${proxy.port}`);
    try {
      const get = session.request({ ":path": "/h2", ":authority": `${port}-${ID}.localhost:${proxy.port}`, ...withToken });
      const chunks: Buffer[] = [];
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => get.once("response", resolve));
      get.on("data", (chunk: Buffer) => chunks.push(chunk));
      await new Promise((resolve) => get.once("end", resolve));
      assert.equal(headers[":status"], 200);
      assert.equal(JSON.parse(Buffer.concat(chunks).toString()).url, "/h2");
      assert.equal(seen.headers?.["x-access-token"], undefined);

      const echo = session.request({ ":path": "/echo", ":method": "POST", ":authority": `${port}-${ID}.localhost`, ...withToken });
      for (let round = 0; round < 5; round++) {
        const chunk = Buffer.from(`h2 round ${round};`);
        const echoed = new Promise<Buffer>((resolve) => echo.once("data", resolve));
        echo.write(chunk);
        assert.deepEqual(await echoed, chunk);
      }
      echo.end();
      await new Promise((resolve) => echo.on("end", resolve).resume());

      const refused = session.request({ ":path": "/", ":authority": `${port}-${ID}.localhost` });
      const refusedHeaders = await new Promise<http2.IncomingHttpHeaders>((resolve) => refused.once("response", resolve));
      refused.resume();
      assert.equal(refusedHeaders[":status"], 401);
    } finally {
      session.close();
    }
  });

  it("carries 32 MiB down and up intact", async () => {
    const size = 32 * 1024 * 1024;
    const down = await request({ path: `/big?size=${size}`, headers: withToken });
    assert.equal(down.body.length, size);
    assert.ok(down.body.every((byte) => byte === 0x61));
    const up = await request({ path: "/count", method: "PUT", headers: withToken, body: Buffer.alloc(size, 1) });
    assert.equal(JSON.parse(up.body.toString()).body, size);
  });

  it("relays a WebSocket with the right token, and refuses the upgrade without it", async () => {
    const url = `ws://127.0.0.1:${proxy.port}/socket`;
    const host = `${port}-${ID}.localhost:${proxy.port}`;
    const socket = new WebSocket(url, { headers: { host, ...withToken } });
    await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
    assert.equal(seen.headers?.["x-access-token"], undefined);
    const echoed = new Promise<string>((resolve) => socket.once("message", (data: Buffer) => resolve(data.toString())));
    socket.send("hello through the proxy");
    assert.equal(await echoed, "hello through the proxy");
    const open = await metric("fsb_proxy_open_connections", 'kind="websocket"');
    assert.equal(open, 1);
    socket.close();
    await new Promise((resolve) => socket.once("close", resolve));

    const refused = new WebSocket(url, { headers: { host } });
    const status = await new Promise<number>((resolve) => refused.once("unexpected-response", (_request, response) => resolve(response.statusCode ?? 0)));
    assert.equal(status, 401);
  });

  it("relays a WebSocket whose Upgrade header is spelled in any case, and answers (not hangs up on) an upgrade it cannot relay", async () => {
    const host = `${port}-${ID}.localhost:${proxy.port}`;
    const upgrade = (method: string, spelled: string, to = host) =>
      `${method} /socket HTTP/1.1\r\nhost: ${to}\r\nupgrade: ${spelled}\r\nconnection: Upgrade\r\n` +
      `sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\nx-access-token: ${TOKEN}\r\n\r\n`;
    const answer = async (raw: string) => {
      const connection = net.connect(proxy.port, "127.0.0.1");
      connection.write(raw);
      const head = await headOrClose(connection);
      connection.destroy();
      return head;
    };
    assert.match(await answer(upgrade("GET", "WebSocket")), /^HTTP\/1\.1 101/);
    assert.match(await answer(upgrade("POST", "websocket")), /^HTTP\/1\.1 405/);
    // A port nothing listens on: the upgrade is answered 502, as a request would be.
    assert.match(await answer(upgrade("GET", "websocket", `${closedPort}-${ID}.localhost:${proxy.port}`)), /^HTTP\/1\.1 502/);
  });

  it("opens a raw TCP tunnel with CONNECT that carries bytes both ways, and refuses one without the token", async () => {
    const tcpPort = (record as { tcpPort?: number }).tcpPort ?? 0;
    const authority = `${tcpPort}-${ID}.localhost:${proxy.port}`;
    const connection = net.connect(proxy.port, "127.0.0.1");
    connection.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\nx-access-token: ${TOKEN}\r\n\r\n`);
    const head = await readUntil(connection, "\r\n\r\n");
    assert.match(head, /^HTTP\/1\.1 200/);
    for (const text of ["ping", "a second message"]) {
      const echoed = new Promise<string>((resolve) => connection.once("data", (data: Buffer) => resolve(data.toString())));
      connection.write(text);
      assert.equal(await echoed, text);
    }
    connection.end();
    await new Promise((resolve) => connection.once("close", resolve));

    const refused = net.connect(proxy.port, "127.0.0.1");
    refused.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\n\r\n`);
    assert.match(await readUntil(refused, "}"), /^HTTP\/1\.1 401[\s\S]*"code":401/);
    refused.destroy();
  });

  it("counts answers by kind and code, and bytes both ways", async () => {
    assert.ok((await metric("fsb_proxy_requests_total", 'kind="http",code="200"')) >= 5);
    assert.ok((await metric("fsb_proxy_requests_total", 'kind="http",code="401"')) >= 2);
    assert.ok((await metric("fsb_proxy_requests_total", 'kind="websocket",code="101"')) >= 1);
    assert.ok((await metric("fsb_proxy_requests_total", 'kind="tunnel",code="200"')) >= 1);
    assert.ok((await metric("fsb_proxy_bytes_total", 'direction="to_sandbox"')) >= 32 * 1024 * 1024);
    assert.ok((await metric("fsb_proxy_bytes_total", 'direction="from_sandbox"')) >= 32 * 1024 * 1024);
  });

  async function metric(name: string, labels: string): Promise<number> {
    const line = (await registry.metrics()).split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
    return Number(line?.split(" ").at(-1) ?? Number.NaN);
  }
});

/** The head of the answer on a raw connection, or whatever came before the proxy closed it (empty: closed without an answer). */
function headOrClose(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    socket.on("data", (data: Buffer) => {
      text += data.toString();
      if (text.includes("\r\n\r\n")) resolve(text);
    });
    socket.once("close", () => resolve(text));
    socket.once("error", () => resolve(text));
  });
}

/** Everything the proxy sends on a raw connection until it closes it. */
function readToClose(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    socket.on("data", (data: Buffer) => (text += data.toString()));
    socket.once("close", () => resolve(text));
    socket.once("error", () => resolve(text));
  });
}

function readUntil(socket: net.Socket, marker: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = "";
    const onData = (data: Buffer) => {
      text += data.toString();
      if (text.includes(marker)) {
        socket.off("data", onData);
        resolve(text);
      }
    };
    socket.on("data", onData);
    socket.once("error", reject);
  });
}

describe("the sandbox proxy's kept-alive connections to a sandbox", () => {
  const IDLE_MS = 200;
  /** Each connection the sandbox's server accepted: whether the proxy closed it first. */
  const connections: { closedByProxy: boolean }[] = [];
  // A server on raw sockets, to see who closes first: it answers and keeps the connection, as servers
  // with keep-alive do; `/slow` sends half its body, pauses past the idle timeout, then the rest.
  const server = net.createServer((socket) => {
    const connection = { closedByProxy: false };
    connections.push(connection);
    let text = "";
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString();
      if (!text.includes("\r\n\r\n")) return;
      const slow = text.startsWith("GET /slow ");
      text = "";
      if (!slow) {
        socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        return;
      }
      socket.write("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nhalf");
      setTimeout(() => socket.write("done"), IDLE_MS * 3);
    });
    socket.once("end", () => {
      connection.closedByProxy = true;
      socket.end();
    });
    socket.on("error", () => undefined);
  });
  let proxy: SandboxProxy;
  let port: number;

  before(async () => {
    port = await listen(server);
    const record = runningSandbox([port]);
    proxy = await startSandboxProxy({
      sources: {
        lookup: (sandboxId) => Promise.resolve(sandboxId === ID ? record : undefined),
        agentAddress: () => "127.0.0.1",
        domain: "localhost",
      },
      logger: pino({ level: "silent" }),
      idleConnectionTimeoutMs: IDLE_MS,
    });
  });

  after(async () => {
    await proxy.close();
    await new Promise((resolve) => server.close(resolve));
  });

  const get = (path: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const outgoing = http.get(
        { host: "127.0.0.1", port: proxy.port, path, headers: { host: `${port}-${ID}.localhost`, "x-access-token": TOKEN }, agent: false },
        (response) => {
          let body = "";
          response.on("data", (chunk: Buffer) => (body += chunk.toString()));
          response.on("end", () => resolve(body));
        },
      );
      outgoing.on("error", reject);
    });

  it("closes an idle one itself after the idle timeout (no TIME-WAIT left in the sandbox to block a pause)", async () => {
    const before = connections.length;
    assert.equal(await get("/quick"), "ok");
    assert.equal(connections.length, before + 1);
    assert.equal(connections[before]?.closedByProxy, false, "kept alive right after the answer");
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS * 4));
    assert.equal(connections[before]?.closedByProxy, true, "closed by the proxy once idle");
  });

  it("never cuts a request in progress, however long it pauses", async () => {
    assert.equal(await get("/slow"), "halfdone");
  });
});

describe("the sandbox proxy's presigned file URLs", () => {
  // A test whose proxy never closes a connection would otherwise wait forever: it fails instead.
  const GUARD = { timeout: 10_000 };
  // The daemon's port is fixed (49983): a loopback address of the test's own stands for the sandbox's.
  const daemonAddress = `127.${77 + (process.pid % 50)}.${(process.pid >> 8) % 250}.${1 + (process.pid % 250)}`;
  const daemonSeen: { url: string; headers: http.IncomingHttpHeaders }[] = [];
  const daemon = http.createServer((request, response) => {
    daemonSeen.push({ url: request.url ?? "", headers: request.headers });
    // A slow upload: each chunk is answered as it comes.
    if (new URL(request.url ?? "/", "http://daemon").searchParams.get("path") === "/tmp/slow") {
      response.writeHead(200);
      response.flushHeaders();
      request.pipe(response);
      return;
    }
    response.end("from the daemon");
  });
  const listeners = new Set<(sandbox: Sandbox, deleted: boolean) => void>();
  const sandbox: Sandbox = {
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "files", namespace: "default" },
    spec: { image: "busybox", poolRef: "default" },
    status: { phase: "Running", assignedPod: "agent-0", sandboxID: ID, sandboxIP: daemonAddress, accessTokenHash: hashAccessToken(TOKEN) },
  };
  let proxy: SandboxProxy;

  before(async () => {
    await new Promise<void>((resolve) => daemon.listen(SANDBOX_DAEMON_PORT, daemonAddress, resolve));
    proxy = await startSandboxProxy({
      sources: {
        lookup: (sandboxId) => Promise.resolve(sandboxId === ID ? sandbox : undefined),
        agentAddress: () => "127.0.0.1",
        domain: "localhost",
        signedFiles: new SignedFileLookup({
          signers: { list: () => [{ sandbox, token: TOKEN }], tokenOf: () => TOKEN },
          lookup: () => Promise.resolve(sandbox),
        }),
        onSandboxChange: (listener) => {
          listeners.add(listener);
          return () => listeners.delete(listener);
        },
      },
      logger: pino({ level: "silent" }),
    });
  });

  after(async () => {
    await proxy.close();
    await new Promise((resolve) => daemon.close(resolve));
  });

  /** A raw request line, as a client may send it (fetch would drop a '#' and what follows). */
  const send = (path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const outgoing = http.get({ host: "127.0.0.1", port: proxy.port, path, headers, agent: false }, (response) => {
        let body = "";
        response.on("data", (chunk: Buffer) => (body += chunk.toString()));
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      });
      outgoing.on("error", reject);
    });

  it("sends the daemon the signed path and user only: no Authorization, no extra parameter, nothing after '#'", async () => {
    const signature = fileSignature({ path: "/tmp/a.txt", operation: "read", username: "" }, TOKEN);
    const signed = `/files?${new URLSearchParams({ path: "/tmp/a.txt", signature }).toString()}`;
    const basicRoot = { authorization: `Basic ${Buffer.from("root:").toString("base64")}` };
    assert.deepEqual(await send(`${signed}&extra=1`, basicRoot), { status: 200, body: "from the daemon" });
    const forwarded = daemonSeen.at(-1);
    assert.equal(forwarded?.url, `/files?${new URLSearchParams({ path: "/tmp/a.txt", username: "", signature }).toString()}`);
    assert.equal(forwarded?.headers.authorization, undefined, "the daemon would act as the header's user, not the signed one");
    const before = daemonSeen.length;
    for (const forged of [`${signed}#/../../etc/shadow`, `${signed}&path=/etc/shadow`, `/files?path=%zz&${signed.slice("/files?".length)}`]) {
      const answer = await send(forged);
      assert.equal(answer.status, 400, `${forged}: ${answer.body}`);
    }
    assert.equal(daemonSeen.length, before, "nothing forged reached the daemon");
  });

  it("takes a presigned URL on the sandbox's own host name (49983-<id>.<domain>, E2B's SDKs without E2B_SANDBOX_URL)", GUARD, async () => {
    const signature = fileSignature({ path: "/tmp/a.txt", operation: "read", username: "user" }, TOKEN);
    const signed = `/files?${new URLSearchParams({ path: "/tmp/a.txt", username: "user", signature }).toString()}`;
    const ownHost = { host: `${SANDBOX_DAEMON_PORT}-${ID}.localhost:${proxy.port}` };
    assert.deepEqual(await send(signed, ownHost), { status: 200, body: "from the daemon" });
    assert.equal(daemonSeen.at(-1)?.url, signed);
    // Another sandbox's host name: not opened by this sandbox's signature (it is not found here: 502), nor a forged one.
    const before = daemonSeen.length;
    assert.equal((await send(signed, { host: `${SANDBOX_DAEMON_PORT}-0th3rq0m2zt7c1w8r5bn.localhost:${proxy.port}` })).status, 502);
    const forged = fileSignature({ path: "/tmp/a.txt", operation: "read", username: "user" }, "another-token");
    const refused = await send(`/files?${new URLSearchParams({ path: "/tmp/a.txt", username: "user", signature: forged }).toString()}`, ownHost);
    assert.equal(refused.status, 401, refused.body);
    assert.equal(daemonSeen.length, before);
  });

  it("cuts an upload let in by a presigned URL once the sandbox's token changes (the signature stood for the old one)", GUARD, async () => {
    const signature = fileSignature({ path: "/tmp/slow", operation: "write", username: "" }, TOKEN);
    const outgoing = http.request({
      host: "127.0.0.1",
      port: proxy.port,
      method: "POST",
      path: `/files?${new URLSearchParams({ path: "/tmp/slow", signature }).toString()}`,
      agent: false,
    });
    outgoing.on("error", () => undefined);
    const response = await new Promise<http.IncomingMessage>((resolve) => {
      outgoing.once("response", resolve);
      outgoing.flushHeaders();
    });
    assert.equal(response.statusCode, 200);
    response.on("error", () => undefined);
    const echoed = new Promise<string>((resolve) => response.once("data", (chunk: Buffer) => resolve(chunk.toString())));
    outgoing.write("part 1;");
    assert.equal(await echoed, "part 1;");
    const cut = new Promise<void>((resolve) => response.once("close", () => resolve()));
    for (const listener of listeners) listener({ ...sandbox, status: { ...sandbox.status, accessTokenHash: hashAccessToken("rotated") } }, false);
    await cut;
    outgoing.destroy();
  });

  it("answers the daemon's /init itself, in any spelling, and passes the daemon's other routes", async () => {
    const request = (method: string, path: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const outgoing = http.request(
          {
            host: "127.0.0.1",
            port: proxy.port,
            method,
            path,
            agent: false,
            headers: { "e2b-sandbox-id": ID, "e2b-sandbox-port": String(SANDBOX_DAEMON_PORT), "x-access-token": TOKEN },
          },
          (response) => {
            let body = "";
            response.on("data", (chunk: Buffer) => (body += chunk.toString()));
            response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
          },
        );
        outgoing.on("error", reject);
        outgoing.end(method === "POST" ? JSON.stringify({ accessToken: "locks-everyone-out" }) : undefined);
      });
    const before = daemonSeen.length;
    for (const path of ["/init", "/init/", "//init", "/%69nit", "/x/../init", "/init?x=1"]) {
      const answer = await request("POST", path);
      assert.equal(answer.status, 403, `${path}: ${answer.body}`);
      assert.match(answer.body, /not served through the proxy/);
    }
    assert.equal(daemonSeen.length, before, "no /init reached the daemon");
    assert.deepEqual(await request("GET", "/health"), { status: 200, body: "from the daemon" });
    assert.deepEqual(await request("GET", "/initial"), { status: 200, body: "from the daemon" });
  });

  it("forwards a browser's request to the daemon without its Origin (the daemon refuses browsers that did not show a token)", GUARD, async () => {
    const answer = await send("/health", {
      "e2b-sandbox-id": ID,
      "e2b-sandbox-port": String(SANDBOX_DAEMON_PORT),
      "x-access-token": TOKEN,
      origin: "https://app.example",
    });
    assert.deepEqual(answer, { status: 200, body: "from the daemon" });
    const forwarded = daemonSeen.at(-1);
    assert.equal(forwarded?.url, "/health");
    assert.equal(forwarded?.headers.origin, undefined);
  });

  it("refuses a request target that is not a path (absolute-form, asterisk-form): what it checks is what the daemon would serve", GUARD, async () => {
    const before = daemonSeen.length;
    const host = `${SANDBOX_DAEMON_PORT}-${ID}.localhost`;
    for (const [method, target] of [
      ["POST", `http://${host}/init`],
      ["POST", `http://${host}:${proxy.port}/%69nit`],
      ["GET", `http://${host}/health`],
      ["OPTIONS", "*"],
    ] as const) {
      const connection = net.connect(proxy.port, "127.0.0.1");
      connection.write(`${method} ${target} HTTP/1.1\r\nhost: ${host}\r\nx-access-token: ${TOKEN}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}`);
      const answer = await readToClose(connection);
      assert.match(answer, /^HTTP\/1\.1 400 /, `${method} ${target}: ${answer}`);
      assert.match(answer, /origin-form/);
    }
    assert.equal(daemonSeen.length, before, "nothing reached the daemon");
  });

  it("checks a WebSocket upgrade's target as a request's", GUARD, async () => {
    const before = daemonSeen.length;
    const host = `${SANDBOX_DAEMON_PORT}-${ID}.localhost`;
    const upgrade = async (target: string) => {
      const connection = net.connect(proxy.port, "127.0.0.1");
      connection.write(
        `GET ${target} HTTP/1.1\r\nhost: ${host}\r\nx-access-token: ${TOKEN}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n` +
          "sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      );
      return readToClose(connection);
    };
    assert.match(await upgrade(`http://${host}/init`), /^HTTP\/1\.1 400 [\s\S]*origin-form/);
    assert.match(await upgrade("/%69nit"), /^HTTP\/1\.1 403 [\s\S]*not served through the proxy/);
    assert.equal(daemonSeen.length, before, "nothing reached the daemon");
  });

  it("opens no tunnel (CONNECT) to the daemon's port, whose requests it checks", GUARD, async () => {
    const authority = `${SANDBOX_DAEMON_PORT}-${ID}.localhost:${proxy.port}`;
    let accepted = 0;
    const count = () => (accepted += 1);
    daemon.on("connection", count);
    try {
      const connection = net.connect(proxy.port, "127.0.0.1");
      connection.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\nx-access-token: ${TOKEN}\r\n\r\n`);
      const answer = await headOrClose(connection);
      connection.destroy();
      assert.match(answer, /^HTTP\/1\.1 403 /, answer);
      assert.equal(accepted, 0, "no connection to the daemon was made");
    } finally {
      daemon.off("connection", count);
    }
    // Without the token it is refused as any tunnel is.
    const refused = net.connect(proxy.port, "127.0.0.1");
    refused.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\n\r\n`);
    assert.match(await headOrClose(refused), /^HTTP\/1\.1 401 /);
    refused.destroy();
  });
});

describe("internalDaemonRoute", () => {
  it("concerns the daemon's port only", () => {
    assert.equal(internalDaemonRoute({ port: 8080, sandboxId: ID }, "/init"), undefined);
    assert.equal(internalDaemonRoute({ port: SANDBOX_DAEMON_PORT, sandboxId: ID }, "/init")?.status, 403);
    assert.equal(internalDaemonRoute({ port: SANDBOX_DAEMON_PORT, sandboxId: ID }, "/envs"), undefined);
  });
});

describe("the sandbox proxy's tunnels and WebSockets", () => {
  // A test whose proxy never closes a connection would otherwise wait forever: it fails instead.
  const GUARD = { timeout: 10_000 };
  const OTHER_ID = "0th3rq0m2zt7c1w8r5bn";
  // /echo streams each chunk of the body back as it comes (a full-duplex stream: a shell's input and output).
  /** The sandbox's side of each /echo stream, by the Host it was sent for: closed once the proxy cut it. */
  const echoing = new Map<string, Promise<void>>();
  const upstream = http.createServer((request, response) => {
    if (request.url !== "/echo") return void response.end("plain");
    echoing.set(request.headers.host ?? "", new Promise((resolve) => response.once("close", () => resolve())));
    response.writeHead(200, { "content-type": "application/octet-stream" });
    response.flushHeaders();
    request.pipe(response);
  });
  const websockets = new WebSocketServer({ server: upstream });
  websockets.on("connection", (socket) => socket.on("message", (data, binary) => socket.send(data, { binary })));
  const tcpEcho = net.createServer((socket) => socket.pipe(socket));
  // Answers only once the client is done sending (`printf q | nc -N host port`), and not at once.
  const afterEof = net.createServer({ allowHalfOpen: true }, (socket) => {
    let got = "";
    socket.on("data", (chunk: Buffer) => (got += chunk.toString()));
    socket.once("end", () => setTimeout(() => socket.end(`got ${got}`), 20));
  });
  let proxy: SandboxProxy;
  let webPort: number;
  let echoPort: number;
  let afterEofPort: number;
  const records = new Map<string, Sandbox>();
  const listeners = new Set<(sandbox: Sandbox, deleted: boolean) => void>();
  /** What the proxy's sandbox directory would tell it: the record changed, or is gone. */
  const change = (sandbox: Sandbox, deleted = false) => {
    if (deleted) records.delete(sandbox.status?.sandboxID ?? "");
    else records.set(sandbox.status?.sandboxID ?? "", sandbox);
    for (const listener of listeners) listener(sandbox, deleted);
  };
  const sandbox = (name: string, sandboxID: string, token: string): Sandbox => runningSandbox([webPort, echoPort, afterEofPort], name, sandboxID, token);

  before(async () => {
    webPort = await listen(upstream);
    echoPort = await listen(tcpEcho);
    afterEofPort = await listen(afterEof);
    change(sandbox("web", ID, TOKEN));
    change(sandbox("other", OTHER_ID, TOKEN));
    proxy = await startSandboxProxy({
      sources: {
        lookup: (sandboxId) => Promise.resolve(records.get(sandboxId)),
        agentAddress: () => "127.0.0.1",
        domain: "localhost",
        // As the E2B-compatible API's: derived from the access token's hash, so it changes with it.
        trafficTokenOf: (record) => `traffic-of-${record.status?.accessTokenHash ?? ""}`,
        onSandboxChange: (listener) => {
          listeners.add(listener);
          return () => listeners.delete(listener);
        },
      },
      logger: pino({ level: "silent" }),
    });
  });

  after(async () => {
    await proxy.close();
    websockets.close();
    await new Promise((resolve) => upstream.close(resolve));
    await new Promise((resolve) => tcpEcho.close(resolve));
    await new Promise((resolve) => afterEof.close(resolve));
  });

  /** A CONNECT tunnel to a port of a sandbox, once the proxy answered 200. */
  async function tunnel(sandboxId: string, port: number, token = TOKEN): Promise<net.Socket> {
    const authority = `${port}-${sandboxId}.localhost:${proxy.port}`;
    const connection = net.connect({ port: proxy.port, host: "127.0.0.1", allowHalfOpen: true });
    connection.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\nx-access-token: ${token}\r\n\r\n`);
    assert.match(await readUntil(connection, "\r\n\r\n"), /^HTTP\/1\.1 200/);
    return connection;
  }

  async function echoes(connection: net.Socket, text: string): Promise<void> {
    const echoed = readUntil(connection, text);
    connection.write(text);
    assert.equal(await echoed, text);
  }

  /** The proxy closed the connection (a tunnel's client is half-open: it sees the proxy's FIN, and closes when it likes). */
  const closed = (connection: net.Socket | WebSocket) =>
    new Promise<void>((resolve) => {
      connection.once("close", () => resolve());
      if (connection instanceof net.Socket) connection.once("end", () => resolve());
    });

  it("relays the client's FIN through a tunnel, and the answer the sandbox sends after it", GUARD, async () => {
    const connection = await tunnel(ID, afterEofPort);
    let answer = "";
    connection.on("data", (chunk: Buffer) => (answer += chunk.toString()));
    const done = new Promise((resolve) => connection.once("close", resolve));
    connection.end("q");
    await done;
    assert.equal(answer, "got q");
  });

  it("closes the tunnels and WebSockets of a sandbox whose access token changes, and no other sandbox's", GUARD, async () => {
    const rotating = await tunnel(ID, echoPort);
    const other = await tunnel(OTHER_ID, echoPort);
    const socket = new WebSocket(`ws://127.0.0.1:${proxy.port}/socket`, { headers: { host: `${webPort}-${ID}.localhost`, "x-access-token": TOKEN } });
    await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
    await echoes(rotating, "before");
    const cut = Promise.all([closed(rotating), closed(socket)]);

    // `fsb token web`: the record's hash is the new token's.
    const current = records.get(ID) as Sandbox;
    change({ ...current, status: { ...current.status, accessTokenHash: hashAccessToken("the-new-token") } });
    await cut;
    rotating.destroy();
    await echoes(other, "still open");
    // The new token opens a tunnel as before.
    const renewed = await tunnel(ID, echoPort, "the-new-token");
    await echoes(renewed, "with the new token");
    renewed.destroy();
    other.destroy();
  });

  /** A streaming POST /echo through the proxy over HTTP/1.1, once its answer began. */
  async function stream(sandboxId: string, headers: Record<string, string>, agent: http.Agent | false = false) {
    const outgoing = http.request({
      host: "127.0.0.1",
      port: proxy.port,
      method: "POST",
      path: "/echo",
      headers: { host: `${webPort}-${sandboxId}.localhost`, ...headers },
      agent,
    });
    outgoing.on("error", () => undefined);
    const response = await new Promise<http.IncomingMessage>((resolve) => {
      outgoing.once("response", resolve);
      outgoing.flushHeaders();
    });
    assert.equal(response.statusCode, 200);
    response.on("error", () => undefined);
    /** Sends `text` and waits for its echo. */
    const echo = async (text: string) => {
      const echoed = new Promise<string>((resolve) => response.once("data", (chunk: Buffer) => resolve(chunk.toString())));
      outgoing.write(text);
      assert.equal(await echoed, text);
    };
    const cut = new Promise<void>((resolve) => response.once("close", () => resolve()));
    return { outgoing, response, echo, cut };
  }

  it("cuts an HTTP/1.1 request streaming with the old token (access or traffic) once the token changes, and no other sandbox's", GUARD, async () => {
    const id = "r0tat3h1q0m2zt7c1w8r";
    change(sandbox("rotate-h1", id, "h1-token"));
    const current = records.get(id) as Sandbox;
    const byToken = await stream(id, { "x-access-token": "h1-token" });
    const byTraffic = await stream(id, { "e2b-traffic-access-token": `traffic-of-${hashAccessToken("h1-token")}` });
    const other = await stream(OTHER_ID, { "x-access-token": TOKEN });
    await byToken.echo("before;");
    await byTraffic.echo("before;");
    let after = "";
    byToken.response.on("data", (chunk: Buffer) => (after += chunk.toString()));

    // `fsb token rotate-h1`: the old token stops working, streams it opened included.
    change({ ...current, status: { ...current.status, accessTokenHash: hashAccessToken("h1-new-token") } });
    await Promise.all([byToken.cut, byTraffic.cut]);
    byToken.outgoing.write("after-rotation;");
    assert.equal(after, "");
    // The sandbox's side (a shell's process.Connect) is let go too.
    await echoing.get(`${webPort}-${id}.localhost`);
    await other.echo("still streaming;");
    // The new token streams as before.
    const renewed = await stream(id, { "x-access-token": "h1-new-token" });
    await renewed.echo("with the new token;");
    for (const open of [other, renewed]) open.outgoing.destroy();
  });

  it("leaves a kept-alive HTTP/1.1 connection whose request is done alone when the token changes", GUARD, async () => {
    const id = "k33pa1h1q0m2zt7c1w8r";
    change(sandbox("keep-alive", id, "ka-token"));
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const get = (token: string) =>
        new Promise<{ status: number; socket: net.Socket }>((resolve, reject) => {
          const outgoing = http.get(
            { host: "127.0.0.1", port: proxy.port, path: "/", headers: { host: `${webPort}-${id}.localhost`, "x-access-token": token }, agent },
            (response) => {
              response.resume();
              response.once("end", () => resolve({ status: response.statusCode ?? 0, socket: outgoing.socket as net.Socket }));
            },
          );
          outgoing.on("error", reject);
        });
      const first = await get("ka-token");
      assert.equal(first.status, 200);
      const current = records.get(id) as Sandbox;
      change({ ...current, status: { ...current.status, accessTokenHash: hashAccessToken("ka-new-token") } });
      await new Promise((resolve) => setTimeout(resolve, 50));
      const second = await get("ka-new-token");
      assert.equal(second.status, 200);
      assert.equal(second.socket, first.socket, "the idle kept-alive connection was not cut");
    } finally {
      agent.destroy();
    }
  });

  it("cuts an HTTP/2 stream with the old token once the token changes: that stream alone, not its session's others", GUARD, async () => {
    const id = "r0tat3h2q0m2zt7c1w8r";
    change(sandbox("rotate-h2", id, "h2-token"));
    const current = records.get(id) as Sandbox;
    const session = http2.connect(`http://127.0.0.1:${proxy.port}`);
    try {
      const open = async (sandboxId: string, token: string) => {
        const h2 = session.request({ ":path": "/echo", ":method": "POST", ":authority": `${webPort}-${sandboxId}.localhost`, "x-access-token": token });
        h2.on("error", () => undefined);
        const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => h2.once("response", resolve));
        assert.equal(headers[":status"], 200);
        const echo = async (text: string) => {
          const echoed = new Promise<string>((resolve) => h2.once("data", (chunk: Buffer) => resolve(chunk.toString())));
          h2.write(text);
          assert.equal(await echoed, text);
        };
        return { h2, echo, closed: new Promise<void>((resolve) => h2.once("close", () => resolve())) };
      };
      const rotating = await open(id, "h2-token");
      const other = await open(OTHER_ID, TOKEN);
      await rotating.echo("before;");
      await other.echo("before;");
      change({ ...current, status: { ...current.status, accessTokenHash: hashAccessToken("h2-new-token") } });
      await rotating.closed;
      assert.equal(rotating.h2.rstCode, http2.constants.NGHTTP2_CANCEL);
      await echoing.get(`${webPort}-${id}.localhost`);
      await other.echo("same session, still streaming;");
      assert.equal(session.destroyed, false);
      const renewed = await open(id, "h2-new-token");
      await renewed.echo("with the new token;");
      renewed.h2.close();
      other.h2.close();
    } finally {
      session.destroy();
    }
  });

  it("cuts a streaming request of a sandbox being deleted", GUARD, async () => {
    const id = "d3l3t3h1q0m2zt7c1w8r";
    change(sandbox("deleting", id, "del-token"));
    const current = records.get(id) as Sandbox;
    const open = await stream(id, { "x-access-token": "del-token" });
    await open.echo("before;");
    change(current, true);
    await open.cut;
    open.outgoing.destroy();
  });

  it(
    "sets TCP keep-alive probes on a client's connection (after a minute idle), so a tunnel whose client went without a FIN or RST is found",
    GUARD,
    async () => {
      const probed: { remotePort: number | undefined; enable: boolean | undefined; delay: number | undefined }[] = [];
      const original = net.Socket.prototype.setKeepAlive;
      net.Socket.prototype.setKeepAlive = function (this: net.Socket, enable?: boolean, delay?: number) {
        probed.push({ remotePort: this.remotePort, enable, delay });
        return original.call(this, enable, delay);
      };
      let connection: net.Socket;
      try {
        connection = await tunnel(OTHER_ID, echoPort);
      } finally {
        net.Socket.prototype.setKeepAlive = original;
      }
      await echoes(connection, "probed");
      assert.deepEqual(
        probed.filter((call) => call.remotePort === connection.localPort),
        [{ remotePort: connection.localPort, enable: true, delay: 60_000 }],
      );
      connection.destroy();
    },
  );

  it("keeps the tunnels of a sandbox whose record changes otherwise", GUARD, async () => {
    const connection = await tunnel(OTHER_ID, echoPort);
    const current = records.get(OTHER_ID) as Sandbox;
    change({ ...current, metadata: { ...current.metadata, labels: { touched: "yes" } } });
    await echoes(connection, "unchanged token");
    connection.destroy();
  });

  it("closes the tunnels of a sandbox being deleted, and of one deleted", GUARD, async () => {
    const deleting = await tunnel(OTHER_ID, echoPort);
    const current = records.get(OTHER_ID) as Sandbox;
    const cut = closed(deleting);
    change({ ...current, metadata: { ...current.metadata, deletionTimestamp: "2026-01-01T00:00:00Z" } });
    await cut;
    deleting.destroy();

    change(current);
    const deleted = await tunnel(OTHER_ID, echoPort);
    const gone = closed(deleted);
    change(current, true);
    await gone;
    deleted.destroy();
  });
});

describe("the sandbox proxy's GET, HEAD and OPTIONS requests with a body", () => {
  // A test that leaves a kept-alive connection out of step would otherwise hang: it fails instead.
  const GUARD = { timeout: 10_000 };
  /** What the sandbox's server saw of each request: its method, target, Content-Length and body. */
  const received: { method: string; url: string; contentLength: string | undefined; body: number }[] = [];
  // Answers at once, before the body (as a server that ignores a GET's body does), and keeps the connection.
  const server = http.createServer((request, response) => {
    const seenHere = { method: request.method ?? "", url: request.url ?? "", contentLength: request.headers["content-length"], body: 0 };
    received.push(seenHere);
    request.on("data", (chunk: Buffer) => (seenHere.body += chunk.length));
    response.end(request.url);
  });
  let proxy: SandboxProxy;
  let port: number;

  before(async () => {
    port = await listen(server);
    const record = runningSandbox([port]);
    proxy = await startSandboxProxy({
      sources: { lookup: (sandboxId) => Promise.resolve(sandboxId === ID ? record : undefined), agentAddress: () => "127.0.0.1", domain: "localhost" },
      logger: pino({ level: "silent" }),
    });
  });

  after(async () => {
    await proxy.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  /**
   * A request from a client of its own (one connection each), so only the proxy's pool is shared. A
   * body goes with its Content-Length unless the headers say otherwise (Node frames no GET body itself).
   */
  const send = (method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const framing = body !== undefined && headers["transfer-encoding"] === undefined ? { "content-length": String(Buffer.byteLength(body)) } : {};
      const outgoing = http.request(
        {
          host: "127.0.0.1",
          port: proxy.port,
          method,
          path,
          headers: { host: `${port}-${ID}.localhost`, "x-access-token": TOKEN, ...framing, ...headers },
          agent: false,
        },
        (response) => {
          let text = "";
          response.on("data", (chunk: Buffer) => (text += chunk.toString()));
          response.on("end", () => resolve({ status: response.statusCode ?? 0, body: text }));
        },
      );
      outgoing.on("error", reject);
      outgoing.end(body);
    });

  it(
    "does not leave the kept-alive connection to the sandbox waiting for a body it never sends, which the next client's request would fill",
    GUARD,
    async () => {
      for (const method of ["GET", "HEAD", "OPTIONS"]) {
        const first = await send(method, `/first-${method}`, "0123456789");
        assert.equal(first.status, 200, `${method}: ${first.body}`);
        const forwarded = received.at(-1);
        // Another client's request on the same pooled connection gets its own answer.
        assert.deepEqual(await send("GET", `/second-${method}`), { status: 200, body: `/second-${method}` }, method);
        assert.equal(received.at(-1)?.url, `/second-${method}`);
        assert.equal(forwarded?.url, `/first-${method}`);
        assert.equal(forwarded?.contentLength, undefined, "no Content-Length for a body that is not sent");
      }
      // The same over HTTP/2, whose request is forwarded as HTTP/1.1 on the same pool.
      const session = http2.connect(`http://127.0.0.1:${proxy.port}`);
      try {
        const stream = session.request(
          { ":method": "GET", ":path": "/first-h2", ":authority": `${port}-${ID}.localhost`, "x-access-token": TOKEN, "content-length": "10" },
          { endStream: false },
        );
        const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) =>
          stream.once("response", resolve).once("error", reject).end("0123456789"),
        );
        stream.resume();
        assert.equal(headers[":status"], 200);
      } finally {
        session.close();
      }
      assert.deepEqual(await send("GET", "/second-h2"), { status: 200, body: "/second-h2" }, "after HTTP/2");
    },
  );

  it("drops a chunked body of a GET alike, serves a GET with Content-Length: 0, and forwards a POST's body as it is", GUARD, async () => {
    assert.deepEqual(await send("GET", "/chunked", "a chunked body", { "transfer-encoding": "chunked" }), { status: 200, body: "/chunked" });
    assert.deepEqual(await send("GET", "/after-chunked"), { status: 200, body: "/after-chunked" });
    assert.deepEqual(await send("GET", "/empty", ""), { status: 200, body: "/empty" });
    assert.deepEqual(received.at(-1), { method: "GET", url: "/empty", contentLength: undefined, body: 0 });
    assert.deepEqual(await send("POST", "/post", "twelve bytes"), { status: 200, body: "/post" });
    // The sandbox's server reads the next request on the connection once it has read the whole body.
    assert.deepEqual(await send("GET", "/after-post"), { status: 200, body: "/after-post" });
    assert.deepEqual(received.at(-2), { method: "POST", url: "/post", contentLength: "12", body: 12 });
  });
});
