import assert from "node:assert/strict";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { UnavailableError, ValidationError } from "@fast-sandbox/api";
import { Connection } from "./connection.js";
import { sandboxProxyChannel } from "./daemon-channel.js";
import { Process } from "./gen/envd/process/process_pb.js";
import { FakeControlPlane, PROXY_URL } from "./sandbox.fixture.js";
import { FastSandbox } from "./sandbox.js";

const TARGET = { namespace: "default", name: "web", sandboxId: "k3x9q0m2zt7c1w8r5bn4", accessToken: "the-token" };

describe("Connection: where the sandboxes' daemons are", () => {
  const saved = process.env.FSB_SANDBOX_URL;
  beforeEach(() => delete process.env.FSB_SANDBOX_URL);
  afterEach(() => {
    if (saved === undefined) delete process.env.FSB_SANDBOX_URL;
    else process.env.FSB_SANDBOX_URL = saved;
  });

  it("asks the control plane for the sandbox proxy's URL once, and keeps it", async () => {
    const plane = new FakeControlPlane();
    const connection = new Connection({ transport: plane.transport });
    assert.equal(await connection.sandboxProxyUrl(), PROXY_URL);
    assert.equal(await connection.sandboxProxyUrl(), PROXY_URL);
    assert.equal(plane.proxyUrlQuestions, 1);
  });

  it("prefers the sandboxUrl option, then FSB_SANDBOX_URL, without asking", async () => {
    const plane = new FakeControlPlane();
    assert.equal(await new Connection({ transport: plane.transport, sandboxUrl: "http://127.0.0.1:9/" }).sandboxProxyUrl(), "http://127.0.0.1:9");
    process.env.FSB_SANDBOX_URL = "http://10.0.0.1:7072";
    assert.equal(await new Connection({ transport: plane.transport }).sandboxProxyUrl(), "http://10.0.0.1:7072");
    assert.equal(plane.proxyUrlQuestions, 0);
  });

  it("refuses a sandbox URL that is not an http(s) URL, naming the option", () => {
    for (const url of ["localhost:7072", "ftp://x"]) {
      assert.throws(
        () => new Connection({ transport: new FakeControlPlane().transport, sandboxUrl: url }),
        (error: unknown) => error instanceof ValidationError && error.field === "sandboxUrl",
      );
    }
  });

  it("asks again after a failed question", async () => {
    const plane = new FakeControlPlane();
    plane.proxyUrl = "";
    const connection = new Connection({ transport: plane.transport });
    await assert.rejects(connection.sandboxProxyUrl(), (error: unknown) => error instanceof ValidationError && /FSB_SANDBOX_URL/.test(error.message));
    plane.proxyUrl = PROXY_URL;
    assert.equal(await connection.sandboxProxyUrl(), PROXY_URL);
  });
});

describe("sandboxProxyChannel: the daemon through the sandbox proxy", () => {
  let server: Server;
  let url: string;
  const seen: { path: string; headers: IncomingHttpHeaders }[] = [];

  before(async () => {
    // Stands in for the sandbox proxy with the daemon behind it: records what arrives.
    const handler = connectNodeAdapter({
      routes: (router) => router.service(Process, { list: () => ({ processes: [{ pid: 7, config: { cmd: "sleep", args: ["9"], envs: {} } }] }) }),
      fallback: (request, response) => {
        response.writeHead(request.url === "/health" ? 204 : 404);
        response.end();
      },
    });
    server = createServer((request, response) => {
      seen.push({ path: request.url ?? "", headers: request.headers });
      handler(request, response);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("sends the routing headers and the access token with every Connect call and HTTP request, in Connect's JSON", async () => {
    const channel = sandboxProxyChannel(url, TARGET);
    const response = await createClient(Process, channel.transport).list({});
    assert.deepEqual(
      response.processes.map((p) => p.pid),
      [7],
    );
    assert.equal((await channel.fetch("/health")).status, 204);
    assert.equal(seen.length, 2);
    for (const request of seen) {
      assert.equal(request.headers["e2b-sandbox-id"], TARGET.sandboxId);
      assert.equal(request.headers["e2b-sandbox-port"], "49983");
      assert.equal(request.headers["x-access-token"], "the-token");
    }
    assert.equal(seen[0]?.path, "/process.Process/List");
    assert.equal(seen[0]?.headers["content-type"], "application/json");
  });

  it("a proxy nobody listens at is an UnavailableError saying so", async () => {
    const plane = new FakeControlPlane();
    // Port 1: nothing listens there.
    const connection = new Connection({ transport: plane.transport, sandboxUrl: "http://127.0.0.1:1" });
    const sandbox = await FastSandbox.create({ connection });
    await assert.rejects(sandbox.files.read("/etc/hosts"), (error: unknown) => error instanceof UnavailableError && /could not be reached/.test(error.message));
    await assert.rejects(
      sandbox.commands.list(),
      (error: unknown) => error instanceof UnavailableError && /not reachable through the sandbox proxy/.test(error.message),
    );
  });
});
