import assert from "node:assert/strict";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createSandboxRelay, type RelayResult, type SandboxRelay } from "@fast-sandbox/agent";
import { TimeoutError, UnavailableError } from "@fast-sandbox/api";
import { envdHealthUrl, pollEnvdHealth } from "./envd-readiness.js";

describe("the wait for a new sandbox's daemon (GET /health on its address)", () => {
  let server: http.Server;
  let port: number;
  /** What /health answers next, in order; the last one repeats. */
  let answers: number[] = [];
  let requests: string[] = [];

  before(async () => {
    server = http.createServer((request, response) => {
      requests.push(`${request.method ?? ""} ${request.url ?? ""}`);
      const status = answers.length > 1 ? (answers.shift() ?? 204) : (answers[0] ?? 204);
      if (status === 0) return; // never answers
      response.writeHead(status).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const sandbox = { sandboxID: "k3x9q0m2zt7c1w8r5bn4", address: "127.0.0.1" };

  it("resolves once the daemon answers 204, polling past answers that are not 204", async () => {
    answers = [503, 503, 204];
    requests = [];
    await pollEnvdHealth({ port, intervalMs: 5, timeoutMs: 5000 })(sandbox);
    assert.deepEqual(requests, ["GET /health", "GET /health", "GET /health"]);
  });

  it("fails with a TimeoutError (deadline_exceeded) at its deadline, saying what the daemon last answered", async () => {
    answers = [500];
    await assert.rejects(pollEnvdHealth({ port, intervalMs: 10, timeoutMs: 1000 })(sandbox), (error: unknown) => {
      assert.ok(error instanceof TimeoutError);
      assert.equal(error.code, "deadline_exceeded");
      assert.match(error.message, new RegExp(`did not answer GET http://127.0.0.1:${port}/health with 204 within 1s \\(last: it answered 500\\)`));
      return true;
    });
  });

  it("bounds each try, so a daemon that accepts and never answers does not hold the create", async () => {
    answers = [0];
    requests = [];
    await assert.rejects(pollEnvdHealth({ port, intervalMs: 10, timeoutMs: 2_000, requestTimeoutMs: 100 })(sandbox), /deadline|did not answer/);
    // An unbounded try would have waited for the overall deadline: one request, never a second.
    assert.ok(requests.length >= 2, `${requests.length} tries: a try was cut off and another made`);
  });

  it("reports a refused connection (no daemon listening yet)", async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const free = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(pollEnvdHealth({ port: free, intervalMs: 10, timeoutMs: 200 })(sandbox), /ECONNREFUSED/);
  });

  it("stops when the caller aborts", async () => {
    answers = [503];
    const controller = new AbortController();
    const waiting = pollEnvdHealth({ port, intervalMs: 10, timeoutMs: 10_000 })(sandbox, controller.signal);
    setTimeout(() => controller.abort(new Error("client gone")), 50);
    await assert.rejects(waiting, (error: unknown) => error instanceof UnavailableError && /client gone/.test(error.message));
  });

  it("addresses IPv6 sandboxes in brackets, on the daemon's port 49983 by default", () => {
    assert.equal(envdHealthUrl("10.213.0.5"), "http://10.213.0.5:49983/health");
    assert.equal(envdHealthUrl("fd00::5"), "http://[fd00::5]:49983/health");
  });
});

describe("the wait for a new sandbox's daemon through its agent's relay (Kubernetes)", () => {
  const AGENT_TOKEN = "agent-token-0123456789abcdef";
  let daemon: net.Server;
  let port: number;
  let relayServer: http.Server;
  let relay: SandboxRelay;
  let relayEndpoint: string;
  const relayed: RelayResult[] = [];
  let healthRequests = 0;
  let connectionHeaders: (string | undefined)[] = [];
  /** Each connection to the daemon: whether the asking side closed it first (the daemon saw its end before closing its own side). */
  const connections: { closedByAsker: boolean }[] = [];
  const sandbox = { sandboxID: "r3l4yq0m2zt7c1w8r5bn", address: "127.0.0.1", agent: "agent-0" };

  before(async () => {
    // A daemon on raw sockets, to see who closes a connection first: it answers each request and
    // keeps the connection open unless asked to close it (as Go's server does).
    daemon = net.createServer((socket) => {
      let text = "";
      let closedHere = false;
      const connection = { closedByAsker: false };
      connections.push(connection);
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString();
        if (!text.includes("\r\n\r\n")) return;
        const head = text.slice(0, text.indexOf("\r\n\r\n"));
        text = "";
        if (head.startsWith("GET /health ")) healthRequests++;
        const asked = /^connection: *(.*)$/im.exec(head)?.[1]?.trim();
        connectionHeaders.push(asked);
        const status = healthRequests < 2 ? "503 Service Unavailable" : "204 No Content";
        socket.write(`HTTP/1.1 ${status}\r\nContent-Length: 0\r\n\r\n`);
        if (asked?.toLowerCase() === "close") {
          closedHere = true;
          socket.end();
        }
      });
      socket.once("end", () => {
        connection.closedByAsker = !closedHere;
        socket.end();
      });
      socket.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => daemon.listen(0, "127.0.0.1", resolve));
    port = (daemon.address() as AddressInfo).port;
    relay = createSandboxRelay({
      token: AGENT_TOKEN,
      sandboxes: () =>
        Promise.resolve([
          {
            sandboxId: sandbox.sandboxID,
            namespace: "default",
            name: "e2b",
            pool: "default",
            image: "busybox",
            state: "running",
            address: "127.0.0.1",
            labels: {},
          },
        ]),
      observe: (result) => relayed.push(result),
    });
    relayServer = http.createServer((_request, response) => response.end());
    relayServer.on("connect", relay.onConnect);
    await new Promise<void>((resolve) => relayServer.listen(0, "127.0.0.1", resolve));
    relayEndpoint = `127.0.0.1:${(relayServer.address() as AddressInfo).port}`;
  });

  after(async () => {
    relay.close();
    await new Promise((resolve) => relayServer.close(resolve));
    await new Promise((resolve) => daemon.close(resolve));
  });

  const endpointOf = (agent: string) => (agent === "agent-0" ? relayEndpoint : undefined);

  it("asks through the relay of the sandbox's agent, a tunnel per try, until it answers 204", async () => {
    healthRequests = 0;
    relayed.length = 0;
    await pollEnvdHealth({ port, intervalMs: 5, timeoutMs: 5000, relay: { endpointOf, token: () => AGENT_TOKEN } })(sandbox);
    assert.equal(healthRequests, 2);
    assert.deepEqual(relayed, ["opened", "opened"], "each try went through the relay");
  });

  it("closes each tunnel itself, never asking the daemon to (no TIME-WAIT inside the sandbox, which a gVisor checkpoint refuses)", async () => {
    healthRequests = 0;
    connectionHeaders = [];
    const before = connections.length;
    await pollEnvdHealth({ port, intervalMs: 5, timeoutMs: 5000, relay: { endpointOf, token: () => AGENT_TOKEN } })(sandbox);
    assert.deepEqual(connectionHeaders, ["keep-alive", "keep-alive"]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(connections.slice(before), [{ closedByAsker: true }, { closedByAsker: true }], "the daemon saw both connections end from the asking side");
  });

  it("says why when the relay refuses (a wrong agent token: 401)", async () => {
    await assert.rejects(
      pollEnvdHealth({ port, intervalMs: 10, timeoutMs: 300, relay: { endpointOf, token: () => "not-the-agent-token" } })(sandbox),
      (error: unknown) => error instanceof TimeoutError && /the agent relay answered 401/.test(error.message),
    );
  });

  it("waits for the agent's relay to be known, and says so at its deadline", async () => {
    await assert.rejects(
      pollEnvdHealth({ port, intervalMs: 10, timeoutMs: 200, relay: { endpointOf, token: () => AGENT_TOKEN } })({ ...sandbox, agent: "agent-9" }),
      (error: unknown) => error instanceof TimeoutError && /the relay of agent agent-9 is not known yet/.test(error.message),
    );
  });
});
