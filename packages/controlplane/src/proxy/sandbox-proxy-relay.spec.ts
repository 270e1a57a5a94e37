/**
 * The sandbox proxy dialing Isolated sandboxes through their agent's relay (the Kubernetes mode),
 * against the agent's real relay: requests, WebSockets and tunnels all go through it, and only with
 * the agent token.
 */
import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import WebSocket, { WebSocketServer } from "ws";
import { createSandboxRelay, type RelayResult, type RuntimeSandbox, type SandboxRelay } from "@fast-sandbox/agent";
import { API_VERSION, SANDBOX_DAEMON_PORT, listenCleartext, type CleartextServer, type Sandbox } from "@fast-sandbox/api";
import { hashAccessToken } from "./access-token.js";
import { startSandboxProxy, type SandboxProxy, type SandboxProxyOptions } from "./sandbox-proxy.js";

const ID = "r3l4yq0m2zt7c1w8r5bn";
/** A later sandbox given the same address on the same agent. */
const NEXT_ID = "n3xtq0m2zt7c1w8r5bn4";
const TOKEN = "the-sandbox-token";
const AGENT_TOKEN = "agent-token-0123456789abcdef";

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

describe("the sandbox proxy through an agent's relay", () => {
  const upstream = http.createServer((request, response) => response.end(JSON.stringify({ url: request.url, relayed: true })));
  const websockets = new WebSocketServer({ server: upstream });
  websockets.on("connection", (socket) => socket.on("message", (data, binary) => socket.send(data, { binary })));
  // The agent's API port, as the agent serves it (agent-server.ts), with the relay on CONNECT.
  let relayServer: CleartextServer;
  const relayed: RelayResult[] = [];
  let relay: SandboxRelay;
  let port: number;
  let relayEndpoint: string | undefined;
  const proxies: SandboxProxy[] = [];

  /** A port that takes connections and closes them without a word. */
  const mute = net.createServer((socket) => socket.destroy());
  let mutePort: number;
  // Answers only once the client is done sending (`printf q | nc -N host port`), and not at once.
  const afterEof = net.createServer({ allowHalfOpen: true }, (socket) => {
    let got = "";
    socket.on("data", (chunk: Buffer) => (got += chunk.toString()));
    socket.once("end", () => setTimeout(() => socket.end(`got ${got}`), 20));
  });
  let afterEofPort: number;
  /** What `speaksFirst` received until the client's FIN. */
  let heardAfterItsFin: Promise<string> = Promise.resolve("");
  // Greets, ends its side (`shutdown(SHUT_WR)`), and reads what the client says after.
  const speaksFirst = net.createServer({ allowHalfOpen: true }, (socket) => {
    heardAfterItsFin = new Promise((resolve) => {
      let got = "";
      socket.on("data", (chunk: Buffer) => (got += chunk.toString()));
      socket.once("end", () => {
        resolve(got);
        socket.destroy();
      });
    });
    socket.end("hello");
  });
  let speaksFirstPort: number;
  /** A relay that takes connections and never answers their CONNECT; each connection it holds, until the dialer closes it. */
  const silentRelay = net.createServer((socket) => silentRelayConnections.push(socket));
  const silentRelayConnections: net.Socket[] = [];
  let silentRelayEndpoint: string;

  const record = (sandboxID = ID): Sandbox => ({
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "web", namespace: "default" },
    spec: { image: "busybox", poolRef: "default", exposedPorts: [port, mutePort, afterEofPort, speaksFirstPort] },
    // Isolated: its own address (loopback here, as the agent would see its bridge address).
    status: { phase: "Running", assignedPod: "agent-0", sandboxID, sandboxIP: "127.0.0.1", accessTokenHash: hashAccessToken(TOKEN) },
  });

  async function proxyWith(agentToken: string, options: Pick<SandboxProxyOptions, "connectTimeoutMs"> = {}): Promise<SandboxProxy> {
    const proxy = await startSandboxProxy({
      sources: {
        lookup: (sandboxId) => Promise.resolve(sandboxId === ID || sandboxId === NEXT_ID ? record(sandboxId) : undefined),
        agentAddress: () => "192.0.2.1",
        agentRelay: (name) => (name === "agent-0" ? relayEndpoint : undefined),
        domain: "localhost",
      },
      agentToken,
      logger: pino({ level: "silent" }),
      ...options,
    });
    proxies.push(proxy);
    return proxy;
  }

  /** What the agent runs. */
  let sandboxes: RuntimeSandbox[] = [];

  before(async () => {
    port = await listen(upstream);
    mutePort = await listen(mute);
    afterEofPort = await listen(afterEof);
    speaksFirstPort = await listen(speaksFirst);
    silentRelayEndpoint = `127.0.0.1:${await listen(silentRelay)}`;
    sandboxes = [
      {
        sandboxId: ID,
        namespace: "default",
        name: "web",
        pool: "default",
        image: "busybox",
        state: "running",
        exposedPorts: [port],
        address: "127.0.0.1",
        labels: {},
      },
    ];
    relay = createSandboxRelay({ token: AGENT_TOKEN, sandboxes: () => Promise.resolve(sandboxes), observe: (result) => relayed.push(result) });
    relayServer = await listenCleartext((_request, response) => response.end(), "127.0.0.1", 0, { onConnect: relay.onConnect });
    relayEndpoint = `127.0.0.1:${relayServer.port}`;
  });

  after(async () => {
    for (const proxy of proxies) await proxy.close();
    relay.close();
    websockets.close();
    await relayServer.close();
    await new Promise((resolve) => upstream.close(resolve));
    await new Promise((resolve) => mute.close(resolve));
    await new Promise((resolve) => afterEof.close(resolve));
    await new Promise((resolve) => speaksFirst.close(resolve));
    for (const connection of silentRelayConnections) connection.destroy();
    await new Promise((resolve) => silentRelay.close(resolve));
  });

  function get(
    proxyPort: number,
    targetPort: number,
    headers: Record<string, string> = { "x-access-token": TOKEN },
    sandboxId = ID,
  ): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const outgoing = http.request(
        { host: "127.0.0.1", port: proxyPort, path: "/through", headers: { host: `${targetPort}-${sandboxId}.localhost`, ...headers }, agent: false },
        (response) => {
          let body = "";
          response.on("data", (chunk: Buffer) => (body += chunk.toString()));
          response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
        },
      );
      outgoing.on("error", reject);
      outgoing.end();
    });
  }

  it("forwards requests through the relay, reusing one tunnel for keep-alive requests", async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const before = relayed.filter((result) => result === "opened").length;
    for (let i = 0; i < 3; i++) {
      const answer = await get(proxy.port, port);
      assert.equal(answer.status, 200, answer.body);
      assert.deepEqual(JSON.parse(answer.body), { url: "/through", relayed: true });
    }
    assert.equal(relayed.filter((result) => result === "opened").length - before, 1);
  });

  it("answers 502 when the sandbox's address is another sandbox's on the agent now (the record is older)", async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const runs = sandboxes;
    sandboxes = runs.map((sandbox) => ({ ...sandbox, sandboxId: "the-address-holder-now" }));
    try {
      const answer = await get(proxy.port, port);
      assert.equal(answer.status, 502);
      assert.match(JSON.parse(answer.body).message, new RegExp(`sandbox ${ID} is not at 127\\.0\\.0\\.1`));
    } finally {
      sandboxes = runs;
    }
  });

  it("keeps a tunnel to the sandbox it was opened for: a later sandbox at the same address gets its own", async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const opened = () => relayed.filter((result) => result === "opened").length;
    const before = opened();
    assert.equal((await get(proxy.port, port)).status, 200);
    const runs = sandboxes;
    // The first sandbox is gone, and the agent gave its address to the next one.
    sandboxes = runs.map((sandbox) => ({ ...sandbox, sandboxId: NEXT_ID }));
    try {
      const answer = await get(proxy.port, port, undefined, NEXT_ID);
      assert.equal(answer.status, 200, answer.body);
      assert.equal(opened() - before, 2, "the next sandbox's request did not reuse the first one's tunnel");
    } finally {
      sandboxes = runs;
    }
  });

  it("answers a WebSocket upgrade 502 when the sandbox's port closes without a word, as a request", async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const connection = net.connect(proxy.port, "127.0.0.1");
    connection.write(
      `GET /ws HTTP/1.1\r\nhost: ${mutePort}-${ID}.localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\n` +
        `sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\nx-access-token: ${TOKEN}\r\n\r\n`,
    );
    const answer = await new Promise<string>((resolve) => {
      let text = "";
      connection.on("data", (chunk: Buffer) => (text += chunk.toString()));
      connection.once("close", () => resolve(text));
      connection.once("error", () => resolve(text));
    });
    assert.match(answer, /^HTTP\/1\.1 502/);
  });

  it("relays a WebSocket and a CONNECT tunnel", async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const openedBefore = relayed.filter((result) => result === "opened").length;
    const socket = new WebSocket(`ws://127.0.0.1:${proxy.port}/ws`, { headers: { host: `${port}-${ID}.localhost`, "x-access-token": TOKEN } });
    await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
    const echoed = new Promise<string>((resolve) => socket.once("message", (data: Buffer) => resolve(data.toString())));
    socket.send("hello through the relay");
    assert.equal(await echoed, "hello through the relay");
    socket.close();
    // Through a tunnel of its own, not dialed directly (the sandbox's address is reachable here, not in a cluster).
    assert.equal(relayed.filter((result) => result === "opened").length, openedBefore + 1, "the WebSocket went through the relay");

    const tunnel = await new Promise<net.Socket>((resolve, reject) => {
      const request = http.request({
        host: "127.0.0.1",
        port: proxy.port,
        method: "CONNECT",
        path: `${port}-${ID}.localhost:${proxy.port}`,
        headers: { host: `${port}-${ID}.localhost:${proxy.port}`, "x-access-token": TOKEN },
        agent: false,
      });
      request.once("connect", (response: http.IncomingMessage, connection: net.Socket) =>
        response.statusCode === 200 ? resolve(connection) : reject(new Error(`CONNECT answered ${response.statusCode}`)),
      );
      request.once("error", reject);
      request.end();
    });
    const answer = await new Promise<string>((resolve) => {
      let text = "";
      tunnel.on("data", (chunk: Buffer) => (text += chunk.toString()));
      tunnel.once("end", () => resolve(text));
      tunnel.write("GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    });
    assert.match(answer, /"url":"\/raw"/);
  });

  it("answers 502 with the relay's reason when the agent refuses the proxy's token", async () => {
    const proxy = await proxyWith("some-other-token-0123456789");
    const answer = await get(proxy.port, port);
    assert.equal(answer.status, 502);
    assert.match(JSON.parse(answer.body).message, /the agent relay answered 401: invalid bearer token/);
  });

  it("lets the daemon's port of an Isolated sandbox through without it being exposed", async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const answer = await get(proxy.port, SANDBOX_DAEMON_PORT);
    // Past the proxy's port check (not 403): the relay dials it, and nothing listens there in this test.
    assert.equal(answer.status, 502, answer.body);
    assert.match(JSON.parse(answer.body).message, new RegExp(`port ${SANDBOX_DAEMON_PORT} .* is not open`));
  });

  it("answers 503 while the agent of an Isolated sandbox has no known relay", async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const saved = relayEndpoint;
    relayEndpoint = undefined;
    try {
      const answer = await get(proxy.port, port);
      assert.equal(answer.status, 503);
      assert.match(JSON.parse(answer.body).message, /agent agent-0 of sandbox default\/web is not connected/);
    } finally {
      relayEndpoint = saved;
    }
  });
  /** A CONNECT to the proxy: the tunnel once answered 200 (half-open, as `nc -N`'s), or the answer. */
  async function connect(proxyPort: number, targetPort: number): Promise<{ head: string; tunnel: net.Socket }> {
    const authority = `${targetPort}-${ID}.localhost:${proxyPort}`;
    const tunnel = net.connect({ port: proxyPort, host: "127.0.0.1", allowHalfOpen: true });
    tunnel.on("error", () => undefined);
    tunnel.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\nx-access-token: ${TOKEN}\r\n\r\n`);
    const head = await new Promise<string>((resolve) => {
      let text = "";
      const onData = (chunk: Buffer) => {
        text += chunk.toString();
        if (!text.includes("\r\n\r\n") || (!text.startsWith("HTTP/1.1 200") && !text.includes("}"))) return;
        tunnel.off("data", onData);
        resolve(text);
      };
      tunnel.on("data", onData);
      tunnel.once("close", () => resolve(text));
    });
    return { head, tunnel };
  }

  // A test whose proxy never closes a connection would otherwise wait forever: it fails instead.
  const GUARD = { timeout: 10_000 };

  it("relays the client's FIN through the relay, and the answer the sandbox sends after it", GUARD, async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const { head, tunnel } = await connect(proxy.port, afterEofPort);
    assert.match(head, /^HTTP\/1\.1 200/);
    let answer = "";
    tunnel.on("data", (chunk: Buffer) => (answer += chunk.toString()));
    const closed = new Promise((resolve) => tunnel.once("close", resolve));
    tunnel.end("q");
    await closed;
    assert.equal(answer, "got q");
  });

  it("relays a sandbox's FIN, and what the client sends after it", GUARD, async () => {
    const proxy = await proxyWith(AGENT_TOKEN);
    const { head, tunnel } = await connect(proxy.port, speaksFirstPort);
    assert.match(head, /^HTTP\/1\.1 200/);
    let greeting = head.slice(head.indexOf("\r\n\r\n") + 4);
    tunnel.on("data", (chunk: Buffer) => (greeting += chunk.toString()));
    await new Promise((resolve) => tunnel.once("end", resolve));
    assert.equal(greeting, "hello");
    tunnel.end("said after the sandbox's FIN");
    assert.equal(await heardAfterItsFin, "said after the sandbox's FIN");
    tunnel.destroy();
  });

  it("answers 504 when the agent's relay takes the connection but does not answer within the connect timeout", GUARD, async () => {
    const proxy = await proxyWith(AGENT_TOKEN, { connectTimeoutMs: 100 });
    const saved = relayEndpoint;
    relayEndpoint = silentRelayEndpoint;
    try {
      const answer = await get(proxy.port, port);
      assert.equal(answer.status, 504, answer.body);
      assert.match(JSON.parse(answer.body).message, /did not answer in time .*within 100 ms/);
      const { head, tunnel } = await connect(proxy.port, port);
      assert.match(head, /^HTTP\/1\.1 504[\s\S]*"code":504/);
      tunnel.destroy();
    } finally {
      relayEndpoint = saved;
    }
  });

  it("stops dialling through a relay that does not answer once the client hangs up", GUARD, async () => {
    const proxy = await proxyWith(AGENT_TOKEN, { connectTimeoutMs: 60_000 });
    const saved = relayEndpoint;
    relayEndpoint = silentRelayEndpoint;
    try {
      const held = silentRelayConnections.length;
      const tunnel = net.connect(proxy.port, "127.0.0.1");
      tunnel.on("error", () => undefined);
      const authority = `${port}-${ID}.localhost:${proxy.port}`;
      tunnel.write(`CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\nx-access-token: ${TOKEN}\r\n\r\n`);
      while (silentRelayConnections.length === held) await new Promise((resolve) => setTimeout(resolve, 10));
      const dialed = silentRelayConnections[held] as net.Socket;
      const dialStopped = new Promise((resolve) => dialed.once("close", resolve));
      dialed.resume();
      tunnel.destroy();
      // The proxy closed its connection to the relay: long before its connect timeout.
      await dialStopped;
    } finally {
      relayEndpoint = saved;
    }
  });
});
