import assert from "node:assert/strict";
import diagnostics from "node:diagnostics_channel";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { UnavailableError, ValidationError } from "@fast-sandbox/api";
import { Connection } from "./connection.js";
import { sandboxProxyChannel, throughSandboxProxy } from "./daemon-channel.js";
import { defaultDataDir } from "./embedded-instance.js";
import { FastSandboxClient } from "./fast-sandbox-client.js";
import { Process } from "./gen/envd/process/process_pb.js";
import { FakeControlPlane, FakeDaemon, PROXY_URL } from "./sandbox.fixture.js";
import { FastSandbox } from "./sandbox.js";

const TARGET = { namespace: "default", name: "web", sandboxId: "k3x9q0m2zt7c1w8r5bn4", accessToken: "the-token" };

describe("Connection: where the sandboxes' daemons are", () => {
  const names = ["FSB_PROXY_URL", "FSB_SANDBOX_URL", "FSB_URL", "FSB_TOKEN", "FSB_DATA_DIR"] as const;
  const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
  beforeEach(() => {
    for (const name of names) delete process.env[name];
  });
  afterEach(() => {
    for (const name of names) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  });

  it("asks the control plane for the sandbox proxy's URL once, and keeps it", async () => {
    const plane = new FakeControlPlane();
    const connection = new Connection({ transport: plane.transport });
    assert.equal(await connection.proxyUrl(), PROXY_URL);
    assert.equal(await connection.proxyUrl(), PROXY_URL);
    assert.equal(plane.proxyUrlQuestions, 1);
  });

  it("asks once for callers meanwhile: one caller's abort ends its own wait, not the others'", async () => {
    const plane = new FakeControlPlane();
    let answer!: () => void;
    plane.proxyUrlAnswered = new Promise((resolve) => (answer = resolve));
    const connection = new Connection({ transport: plane.transport });
    const gaveUp = new AbortController();
    const first = connection.proxyUrl({ signal: gaveUp.signal });
    const second = connection.proxyUrl();
    gaveUp.abort();
    await assert.rejects(first, { name: "AbortError" });
    answer();
    assert.equal(await second, PROXY_URL);
    assert.equal(plane.proxyUrlQuestions, 1);
  });

  it("shares a handle's daemon channel the same way: one call's abort while it is made fails that call alone", async () => {
    const plane = new FakeControlPlane();
    let answer!: () => void;
    plane.proxyUrlAnswered = new Promise((resolve) => (answer = resolve));
    const connection = new Connection({ transport: plane.transport, daemon: throughSandboxProxy });
    plane.add("web", TARGET.sandboxId);
    const handle = await FastSandbox.connect("web", { connection, accessToken: TARGET.accessToken });
    const channel = (handle as unknown as { channel(options: { signal?: AbortSignal }): Promise<unknown> }).channel.bind(handle);
    const gaveUp = new AbortController();
    const first = channel({ signal: gaveUp.signal });
    const second = channel({});
    gaveUp.abort();
    await assert.rejects(first, { name: "AbortError" });
    answer();
    assert.ok(await second);
    assert.equal(plane.proxyUrlQuestions, 1);
  });

  it("prefers the proxyUrl option, then FSB_PROXY_URL, then FSB_SANDBOX_URL, without asking", async () => {
    const plane = new FakeControlPlane();
    assert.equal(await new Connection({ transport: plane.transport, proxyUrl: "http://127.0.0.1:9/" }).proxyUrl(), "http://127.0.0.1:9");
    process.env.FSB_SANDBOX_URL = "http://10.0.0.1:7072";
    assert.equal(await new Connection({ transport: plane.transport }).proxyUrl(), "http://10.0.0.1:7072");
    process.env.FSB_PROXY_URL = "http://10.0.0.2:7072";
    assert.equal(await new Connection({ transport: plane.transport }).proxyUrl(), "http://10.0.0.2:7072");
    assert.equal(plane.proxyUrlQuestions, 0);
  });

  it("refuses a sandbox URL that is not an http(s) URL, naming the option", () => {
    for (const url of ["localhost:7072", "ftp://x"]) {
      assert.throws(
        () => new Connection({ transport: new FakeControlPlane().transport, proxyUrl: url }),
        (error: unknown) => error instanceof ValidationError && error.field === "proxyUrl",
      );
    }
  });

  it("asks again after a failed question", async () => {
    const plane = new FakeControlPlane();
    plane.proxyUrl = "";
    const connection = new Connection({ transport: plane.transport });
    await assert.rejects(connection.proxyUrl(), (error: unknown) => error instanceof ValidationError && /FSB_PROXY_URL/.test(error.message));
    plane.proxyUrl = PROXY_URL;
    assert.equal(await connection.proxyUrl(), PROXY_URL);
  });
});

describe("Connection: the embedded instance's data directory (fsb up)", () => {
  const names = ["FSB_URL", "FSB_TOKEN", "FSB_TOKEN_FILE", "FSB_DATA_DIR"] as const;
  const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
  let dataDir: string;
  beforeEach(() => {
    for (const name of names) delete process.env[name];
    dataDir = mkdtempSync(join(tmpdir(), "fsb-sdk-data-dir-"));
  });
  afterEach(() => {
    rmSync(dataDir, { recursive: true, force: true });
    for (const name of names) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  });

  it("finds the URL and the token that fsb up wrote, and says how to start it when there are none", () => {
    assert.throws(
      () => new Connection({ dataDir }),
      (error: unknown) => error instanceof ValidationError && error.field === "url" && /start it with 'npx fsb up'/.test(error.message),
    );
    writeFileSync(join(dataDir, "url"), "http://127.0.0.1:7070\n");
    assert.throws(
      () => new Connection({ dataDir }),
      (error: unknown) => error instanceof ValidationError && error.field === "token",
    );
    writeFileSync(join(dataDir, "token"), "the-api-token\n");
    const connection = new Connection({ dataDir });
    assert.equal(connection.client.url, "http://127.0.0.1:7070");
    assert.equal(connection.accessTokens?.dataDir, dataDir);
    connection.close();
    assert.equal(
      new Connection({ dataDir, url: "http://10.1.1.1:7070", token: "its-token" }).accessTokens,
      undefined,
      "another instance's tokens are not kept here",
    );
  });

  it("sends the data directory's token only to its own URL or this host's loopback; another host needs FSB_TOKEN, and nothing is sent", async () => {
    writeFileSync(join(dataDir, "url"), "http://10.1.1.1:7070\n");
    writeFileSync(join(dataDir, "token"), "the-api-token\n");
    const sockets: unknown[] = [];
    const onSocket = (socket: unknown): void => void sockets.push(socket);
    diagnostics.subscribe("net.client.socket", onSocket);
    try {
      process.env.FSB_URL = "http://203.0.113.9:7070";
      const refused = (field: string) => (error: unknown) =>
        error instanceof ValidationError && error.field === field && /203\.0\.113\.9:7070 is neither/.test(error.message) && /FSB_TOKEN/.test(error.message);
      assert.throws(() => new Connection({ dataDir }), refused("FSB_URL"));
      await assert.rejects(FastSandbox.create({ dataDir, daemonReadyTimeoutMs: 0 }), refused("FSB_URL"));
      delete process.env.FSB_URL;
      assert.throws(() => new Connection({ dataDir, url: "http://203.0.113.9:7070" }), refused("url"));
      assert.deepEqual(sockets, [], "no connection was made");
    } finally {
      diagnostics.unsubscribe("net.client.socket", onSocket);
    }
    // A token given, the data directory's own URL, or this host's loopback: no refusal.
    process.env.FSB_URL = "http://203.0.113.9:7070";
    new Connection({ dataDir, token: "its-token" }).close();
    process.env.FSB_TOKEN = "its-token";
    new Connection({ dataDir }).close();
    delete process.env.FSB_TOKEN;
    for (const url of ["http://10.1.1.1:7070/", "http://localhost:7070", "http://127.0.0.2:7070", "http://[::1]:7070"])
      new Connection({ dataDir, url }).close();
  });

  it("sends the data directory's token to a URL on this host's loopback", async () => {
    writeFileSync(join(dataDir, "token"), "the-api-token\n");
    const authorizations: (string | undefined)[] = [];
    const server = createServer((request, response) => {
      authorizations.push(request.headers.authorization);
      request.resume();
      response.writeHead(404);
      response.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      process.env.FSB_URL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const connection = new Connection({ dataDir, httpVersion: "1.1" });
      await assert.rejects(connection.client.sandboxes.get("web"));
      connection.close();
      assert.deepEqual(authorizations, ["Bearer the-api-token"]);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("refuses a control plane URL that is not an http(s) URL, naming the option or FSB_URL", async () => {
    for (const url of ["not a url", "ftp://127.0.0.1:7070"]) {
      const refused = (field: string) => (error: unknown) =>
        error instanceof ValidationError &&
        error.field === field &&
        error.message.includes(JSON.stringify(url)) &&
        /http:\/\/ or https:\/\//.test(error.message);
      await assert.rejects(FastSandbox.list({ url, token: "t" }), refused("url"));
      assert.throws(() => new FastSandboxClient({ url, token: "t" }), refused("url"));
      process.env.FSB_URL = url;
      process.env.FSB_TOKEN = "t";
      assert.throws(() => new Connection({ dataDir }), refused("FSB_URL"));
      assert.throws(() => new FastSandboxClient(), refused("FSB_URL"));
      delete process.env.FSB_URL;
      delete process.env.FSB_TOKEN;
    }
  });

  /** Runs `call` against a control plane on this host's loopback; resolves with the Authorization headers it got. */
  async function authorizationsOf(call: (url: string) => Promise<unknown>): Promise<(string | undefined)[]> {
    const authorizations: (string | undefined)[] = [];
    const server = createServer((request, response) => {
      authorizations.push(request.headers.authorization);
      request.resume();
      response.writeHead(404);
      response.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      await call(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    return authorizations;
  }

  it("sends the token of tokenFile or FSB_TOKEN_FILE (a Pod's ServiceAccount token), read again as it is renewed; token and FSB_TOKEN win", async () => {
    const tokenFile = join(dataDir, "sa-token");
    writeFileSync(tokenFile, "sa-token-1\n");
    writeFileSync(join(dataDir, "token"), "the-api-token\n");
    const originalNow = Date.now;
    let shift = 0;
    Date.now = () => originalNow() + shift;
    try {
      const authorizations = await authorizationsOf(async (url) => {
        const viaOption = new Connection({ url, tokenFile, dataDir, httpVersion: "1.1" });
        await assert.rejects(viaOption.client.sandboxes.get("web"));
        // The kubelet renews the file; a minute on, the next call reads it again.
        writeFileSync(tokenFile, "sa-token-2\n");
        await assert.rejects(viaOption.client.sandboxes.get("web"));
        shift += 61_000;
        await assert.rejects(viaOption.client.sandboxes.get("web"));
        viaOption.close();
        process.env.FSB_TOKEN_FILE = tokenFile;
        const viaEnvironment = new FastSandboxClient({ url, dataDir, httpVersion: "1.1" });
        await assert.rejects(viaEnvironment.sandboxes.get("web"));
        viaEnvironment.close();
        process.env.FSB_TOKEN = "env-token";
        const tokenWins = new FastSandboxClient({ url, dataDir, httpVersion: "1.1" });
        await assert.rejects(tokenWins.sandboxes.get("web"));
        tokenWins.close();
      });
      assert.deepEqual(authorizations, ["Bearer sa-token-1", "Bearer sa-token-1", "Bearer sa-token-2", "Bearer sa-token-2", "Bearer env-token"]);
    } finally {
      Date.now = originalNow;
    }
    delete process.env.FSB_TOKEN;
    process.env.FSB_TOKEN_FILE = join(dataDir, "no-such-file");
    // An injected transport needs no token: the file is not read.
    assert.ok(new Connection({ transport: new FakeControlPlane().transport, dataDir }));
    assert.throws(
      () => new FastSandboxClient({ url: "http://127.0.0.1:1", dataDir }),
      (error: unknown) => error instanceof ValidationError && error.field === "FSB_TOKEN_FILE" && /no-such-file cannot be read/.test(error.message),
    );
  });

  it("takes an empty FSB_URL, FSB_TOKEN or FSB_DATA_DIR as unset (a shell's FSB_TOKEN=), as the Python SDK does", async () => {
    writeFileSync(join(dataDir, "token"), "the-api-token\n");
    process.env.FSB_URL = "";
    process.env.FSB_TOKEN = "";
    const authorizations = await authorizationsOf(async (url) => {
      writeFileSync(join(dataDir, "url"), `${url}\n`);
      const connection = new Connection({ dataDir, httpVersion: "1.1" });
      assert.equal(connection.client.url, url);
      await assert.rejects(connection.client.sandboxes.get("web"));
      connection.close();
    });
    assert.deepEqual(authorizations, ["Bearer the-api-token"]);
    process.env.FSB_DATA_DIR = "";
    const expected = process.getuid?.() === 0 ? "/var/lib/fast-sandbox" : join(process.env.XDG_DATA_HOME || join(homedir(), ".local", "share"), "fast-sandbox");
    assert.equal(defaultDataDir(), expected);
  });

  it("FastSandboxClient finds the data directory's URL and token too (dataDir, FSB_DATA_DIR), and says how to point it at one", async () => {
    assert.throws(
      () => new FastSandboxClient({ dataDir }),
      (error: unknown) =>
        error instanceof ValidationError &&
        error.field === "url" &&
        /FSB_URL/.test(error.message) &&
        /FSB_DATA_DIR/.test(error.message) &&
        error.message.includes(dataDir),
    );
    writeFileSync(join(dataDir, "token"), "the-api-token\n");
    const authorizations = await authorizationsOf(async (url) => {
      writeFileSync(join(dataDir, "url"), `${url}\n`);
      const named = new FastSandboxClient({ dataDir, httpVersion: "1.1" });
      assert.equal(named.url, url);
      await assert.rejects(named.sandboxes.get("web"));
      process.env.FSB_DATA_DIR = dataDir;
      const client = new FastSandboxClient({ httpVersion: "1.1" });
      assert.equal(client.url, url);
      await assert.rejects(client.sandboxes.get("web"));
    });
    assert.deepEqual(authorizations, ["Bearer the-api-token", "Bearer the-api-token"]);
    // Another host's URL does not get this host's token, as with FastSandbox.
    assert.throws(
      () => new FastSandboxClient({ url: "http://203.0.113.9:7070" }),
      (error: unknown) => error instanceof ValidationError && error.field === "url" && /FSB_TOKEN/.test(error.message),
    );
  });

  it("keeps the tokens of the sandboxes it creates where fsb run keeps them; connect finds them; kill forgets them", async () => {
    writeFileSync(join(dataDir, "url"), "http://127.0.0.1:7070\n");
    const plane = new FakeControlPlane();
    const connection = new Connection({ transport: plane.transport, daemon: new FakeDaemon().factory, dataDir });
    const created = await FastSandbox.create({ connection, name: "kept" });
    const path = join(dataDir, "access-tokens", "default", "kept");
    assert.equal(readFileSync(path, "utf8"), "token-of-kept\n");
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.equal((await FastSandbox.connect("kept", { connection })).accessToken, "token-of-kept");
    await created.rotateAccessToken();
    assert.equal((await FastSandbox.connect("kept", { connection })).accessToken, "rotated-token-of-kept");
    await created.kill();
    assert.equal(existsSync(path), false);
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
        if (request.url?.startsWith("/files?")) {
          // As the daemon does: gzip for a client that accepts it.
          const gzipped = /\bgzip\b/.test(request.headers["accept-encoding"] ?? "");
          response.writeHead(200, { "content-type": "application/octet-stream", ...(gzipped ? { "content-encoding": "gzip" } : {}) });
          response.end(gzipped ? gzipSync("the contents") : "the contents");
          return;
        }
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

  it("keeps the path of a proxy URL (a proxy served under a gateway's path) for Connect calls and HTTP requests", async () => {
    assert.equal(
      await new Connection({ transport: new FakeControlPlane().transport, proxyUrl: "https://gw.example.com/fsb-proxy/" }).proxyUrl(),
      "https://gw.example.com/fsb-proxy",
    );
    seen.length = 0;
    const channel = sandboxProxyChannel(`${url}/fsb-proxy`, TARGET);
    await createClient(Process, channel.transport)
      .list({})
      .catch(() => undefined);
    await channel.fetch("/files?path=%2Fetc%2Fhosts");
    assert.deepEqual(
      seen.map((request) => request.path),
      ["/fsb-proxy/process.Process/List", "/fsb-proxy/files?path=%2Fetc%2Fhosts"],
    );
  });

  it("asks for a download unencoded (Accept-Encoding: identity), not gzipped, which undici decompresses slowly", async () => {
    const connection = new Connection({ transport: new FakeControlPlane().transport, proxyUrl: url });
    const sandbox = await FastSandbox.create({ connection, daemonReadyTimeoutMs: 0 });
    seen.length = 0;
    assert.equal(await sandbox.files.read("/tmp/big"), "the contents");
    assert.equal(new TextDecoder().decode(await sandbox.files.read("/tmp/big", { format: "bytes" })), "the contents");
    assert.deepEqual(
      seen.map((request) => [request.path, request.headers["accept-encoding"]]),
      [
        ["/files?path=%2Ftmp%2Fbig", "identity"],
        ["/files?path=%2Ftmp%2Fbig", "identity"],
      ],
    );
  });

  it("a proxy nobody listens at is an UnavailableError saying so, also for create's wait for the daemon", async () => {
    const plane = new FakeControlPlane();
    // Port 1: nothing listens there.
    const connection = new Connection({ transport: plane.transport, proxyUrl: "http://127.0.0.1:1" });
    const sandbox = await FastSandbox.create({ connection, daemonReadyTimeoutMs: 0 });
    await assert.rejects(sandbox.files.read("/etc/hosts"), (error: unknown) => error instanceof UnavailableError && /could not be reached/.test(error.message));
    await assert.rejects(
      sandbox.commands.list(),
      (error: unknown) => error instanceof UnavailableError && /not reachable through the sandbox proxy/.test(error.message),
    );
    await assert.rejects(
      FastSandbox.create({ connection, name: "unreachable" }),
      (error: unknown) => error instanceof UnavailableError && /could not be reached/.test(error.message),
    );
    assert.deepEqual(plane.deletes, ["unreachable"], "a sandbox whose daemon cannot be reached is not left behind");
  });
});
