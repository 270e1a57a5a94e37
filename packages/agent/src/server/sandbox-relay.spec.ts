import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import type { RuntimeSandbox } from "../runtime/runtime.js";
import type { RelayResult } from "./agent-metrics.js";
import { createSandboxRelay, parseRelayTarget, type SandboxRelay } from "./sandbox-relay.js";

const TOKEN = "relay-token-0123456789";

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

/** A CONNECT to the relay: the status, and either the open socket or the refusal's body. */
function connect(
  relayPort: number,
  target: string,
  token?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; socket: net.Socket; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request({
      host: "127.0.0.1",
      port: relayPort,
      method: "CONNECT",
      path: target,
      headers: { ...headers, ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
      agent: false,
    });
    request.once("connect", (response: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const status = response.statusCode ?? 0;
      if (status === 200) return resolve({ status, socket, body: "" });
      const chunks = [head];
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      socket.once("close", () => resolve({ status, socket, body: Buffer.concat(chunks).toString() }));
    });
    request.once("error", reject);
    request.end();
  });
}

function roundTrip(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    socket.once("data", (chunk: Buffer) => resolve(chunk.toString()));
    socket.write(text);
  });
}

describe("the agent's sandbox relay", () => {
  const echo = net.createServer((socket) => socket.pipe(socket));
  /** The same on the address of the sandbox that exposes no port. */
  const echo2 = net.createServer((socket) => socket.pipe(socket));
  let echoPort: number;
  let echo2Port: number;
  let closedPort: number;
  let relayPort: number;
  let relay: SandboxRelay;
  const results: RelayResult[] = [];
  let sandboxes: RuntimeSandbox[] = [];
  const server = http.createServer((_request, response) => response.end());

  before(async () => {
    echoPort = await listen(echo);
    echo2Port = await new Promise<number>((resolve) => echo2.listen(0, "127.0.0.2", () => resolve((echo2.address() as AddressInfo).port)));
    const spare = net.createServer();
    closedPort = await listen(spare);
    await new Promise((resolve) => spare.close(resolve));
    const sandbox = (address: string, exposedPorts: number[]): RuntimeSandbox => ({
      sandboxId: `sb${address.replace(/\D/g, "")}`,
      namespace: "default",
      name: `web-${address}`,
      pool: "default",
      image: "busybox",
      state: "running",
      exposedPorts,
      address,
      labels: {},
    });
    sandboxes = [sandbox("127.0.0.1", [echoPort, closedPort]), sandbox("127.0.0.2", [])];
    relay = createSandboxRelay({ token: TOKEN, sandboxes: () => Promise.resolve(sandboxes), observe: (result) => results.push(result) });
    server.on("connect", relay.onConnect);
    relayPort = await listen(server);
  });

  after(async () => {
    relay.close();
    await new Promise((resolve) => server.close(resolve));
    await new Promise((resolve) => echo.close(resolve));
    await new Promise((resolve) => echo2.close(resolve));
  });

  it("opens a tunnel to an exposed port of one of its sandboxes, bytes both ways", async () => {
    const { status, socket } = await connect(relayPort, `127.0.0.1:${echoPort}`, TOKEN);
    assert.equal(status, 200);
    assert.equal(await roundTrip(socket, "ping through the relay"), "ping through the relay");
    socket.destroy();
    assert.equal(results.at(-1), "opened");
  });

  it("refuses a caller without the agent token, or with another one (401)", async () => {
    const missing = await connect(relayPort, `127.0.0.1:${echoPort}`);
    assert.equal(missing.status, 401);
    assert.match(missing.body, /missing bearer token/);
    const wrong = await connect(relayPort, `127.0.0.1:${echoPort}`, "not-the-agent-token-at-all");
    assert.equal(wrong.status, 401);
    assert.match(wrong.body, /invalid bearer token/);
    assert.deepEqual(results.slice(-2), ["unauthorized", "unauthorized"]);
  });

  it("closes a refused caller's connection itself soon after the refusal, though the caller never closes its side", async () => {
    let agentSide: net.Socket | undefined;
    server.once("connect", (_request, socket: net.Socket) => (agentSide = socket));
    const caller = net.connect({ host: "127.0.0.1", port: relayPort, allowHalfOpen: true });
    await new Promise((resolve) => caller.once("connect", resolve));
    caller.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nhost: x\r\n\r\n`);
    let text = "";
    caller.on("data", (chunk: Buffer) => (text += chunk.toString()));
    await new Promise((resolve) => caller.once("end", resolve));
    assert.match(text, /^HTTP\/1\.1 401/);
    assert.ok(agentSide);
    // Half-open on the agent's side until it closes it: no server timeout applies to it any more.
    const closed = await Promise.race([
      new Promise((resolve) => agentSide?.once("close", () => resolve("closed"))),
      new Promise((resolve) => setTimeout(() => resolve("still open after 10 s"), 10_000).unref()),
    ]);
    assert.equal(closed, "closed");
    caller.destroy();
  });

  it("refuses an address that is none of its sandboxes' (403): it is not an open proxy", async () => {
    const refused = await connect(relayPort, `127.0.0.3:${echoPort}`, TOKEN);
    assert.equal(refused.status, 403);
    assert.match(JSON.parse(refused.body).message, /not the address of a sandbox of this agent/);
    assert.equal(results.at(-1), "forbidden");
  });

  it("refuses (404) a caller that means another sandbox than the one at the address now", async () => {
    const stale = await connect(relayPort, `127.0.0.1:${echoPort}`, TOKEN, { "fsb-sandbox-id": "sb-before-the-restart" });
    assert.equal(stale.status, 404);
    assert.match(JSON.parse(stale.body).message, /sandbox sb-before-the-restart is not at 127\.0\.0\.1 on this agent/);
    assert.equal(results.at(-1), "forbidden");
    const meant = await connect(relayPort, `127.0.0.1:${echoPort}`, TOKEN, { "fsb-sandbox-id": "sb127001" });
    assert.equal(meant.status, 200);
    meant.socket.destroy();
  });

  it("reaches a port its sandbox does not expose: which ports are public is the proxy's decision", async () => {
    const { status, socket } = await connect(relayPort, `127.0.0.2:${echo2Port}`, TOKEN);
    assert.equal(status, 200);
    assert.equal(await roundTrip(socket, "any port of its own sandbox"), "any port of its own sandbox");
    socket.destroy();
    assert.equal(results.at(-1), "opened");
  });

  it("answers 502 when nothing listens on the port, and 400 for a target that is not address:port", async () => {
    const closed = await connect(relayPort, `127.0.0.1:${closedPort}`, TOKEN);
    assert.equal(closed.status, 502);
    assert.match(JSON.parse(closed.body).message, /is not open/);
    const bad = await connect(relayPort, "example.com:80", TOKEN);
    assert.equal(bad.status, 400);
    assert.deepEqual(results.slice(-2), ["unreachable", "bad_request"]);
  });

  for (const [how, hangUp] of [
    ["a reset", (caller: net.Socket) => caller.resetAndDestroy()],
    // The agent's server keeps a caller's connection half-open (an open tunnel relays the FIN): a FIN alone does not close it.
    ["a FIN", (caller: net.Socket) => caller.destroy()],
  ] as const) {
    it(`dials nothing for a caller that went away (${how}) while it looked the sandbox up`, { timeout: 10_000 }, async () => {
      let upstreamConnections = 0;
      const upstream = net.createServer((socket) => {
        upstreamConnections++;
        socket.resume();
      });
      const port = await listen(upstream);
      let release: (value: RuntimeSandbox[]) => void = () => undefined;
      let lookupStarted: () => void = () => undefined;
      const started = new Promise<void>((resolve) => (lookupStarted = resolve));
      const slow = createSandboxRelay({
        token: TOKEN,
        sandboxes: () => {
          lookupStarted();
          return new Promise((resolve) => (release = resolve));
        },
      });
      const slowServer = http.createServer((_request, response) => response.end());
      slowServer.on("connect", slow.onConnect);
      let callerOnServer: net.Socket | undefined;
      slowServer.on("connection", (socket: net.Socket) => (callerOnServer = socket));
      const slowPort = await listen(slowServer);
      try {
        const caller = net.connect(slowPort, "127.0.0.1");
        caller.on("error", () => undefined);
        caller.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`);
        await started;
        const gone = new Promise((resolve) => callerOnServer?.once("close", resolve));
        hangUp(caller);
        await gone;
        release(sandboxes);
        // Long enough for a dial the relay would make to be accepted on loopback.
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.equal(upstreamConnections, 0);
      } finally {
        slow.close();
        await new Promise((resolve) => slowServer.close(resolve));
        await new Promise((resolve) => upstream.close(resolve));
      }
    });
  }

  it("parses only literal addresses with a port", () => {
    assert.deepEqual(parseRelayTarget("10.213.0.5:8080"), { host: "10.213.0.5", port: 8080 });
    assert.deepEqual(parseRelayTarget("[fd00::5]:443"), { host: "fd00::5", port: 443 });
    assert.equal(parseRelayTarget("10.213.0.5"), undefined);
    assert.equal(parseRelayTarget("10.213.0.5:70000"), undefined);
    assert.equal(parseRelayTarget("host.internal:80"), undefined);
    assert.equal(parseRelayTarget(undefined), undefined);
  });
});
