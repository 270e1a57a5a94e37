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
import { API_VERSION, SANDBOX_DAEMON_PORT, type Sandbox } from "@fast-sandbox/api";
import { hashAccessToken } from "./access-token.js";
import { startSandboxProxy, type SandboxProxy } from "./sandbox-proxy.js";

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
  const relayServer = http.createServer((_request, response) => response.end());
  const relayed: RelayResult[] = [];
  let relay: SandboxRelay;
  let port: number;
  let relayEndpoint: string | undefined;
  const proxies: SandboxProxy[] = [];

  /** A port that takes connections and closes them without a word. */
  const mute = net.createServer((socket) => socket.destroy());
  let mutePort: number;

  const record = (sandboxID = ID): Sandbox => ({
    apiVersion: API_VERSION,
    kind: "Sandbox",
    metadata: { name: "web", namespace: "default" },
    spec: { image: "busybox", poolRef: "default", exposedPorts: [port, mutePort] },
    // Isolated: its own address (loopback here, as the agent would see its bridge address).
    status: { phase: "Running", assignedPod: "agent-0", sandboxID, sandboxIP: "127.0.0.1", accessTokenHash: hashAccessToken(TOKEN) },
  });

  async function proxyWith(agentToken: string): Promise<SandboxProxy> {
    const proxy = await startSandboxProxy({
      sources: {
        lookup: (sandboxId) => Promise.resolve(sandboxId === ID || sandboxId === NEXT_ID ? record(sandboxId) : undefined),
        agentAddress: () => "192.0.2.1",
        agentRelay: (name) => (name === "agent-0" ? relayEndpoint : undefined),
        domain: "localhost",
      },
      agentToken,
      logger: pino({ level: "silent" }),
    });
    proxies.push(proxy);
    return proxy;
  }

  /** What the agent runs. */
  let sandboxes: RuntimeSandbox[] = [];

  before(async () => {
    port = await listen(upstream);
    mutePort = await listen(mute);
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
    relayServer.on("connect", relay.onConnect);
    relayEndpoint = `127.0.0.1:${await listen(relayServer)}`;
  });

  after(async () => {
    for (const proxy of proxies) await proxy.close();
    relay.close();
    websockets.close();
    await new Promise((resolve) => relayServer.close(resolve));
    await new Promise((resolve) => upstream.close(resolve));
    await new Promise((resolve) => mute.close(resolve));
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
});
