/**
 * Ingress through the sandbox proxy, embedded mode, real containerd: a sandbox (the busybox base
 * image) runs an HTTP server (`httpd`, with a CGI that echoes its request body as it reads it), a
 * WebSocket echo server (websocket-echo.sh under `nc -ll`) and a raw TCP echo (`nc -ll -e cat`).
 * Through the proxy, with the sandbox's access token: curl reaches the HTTP server by its endpoint
 * URL (Host `<port>-<sandboxID>.localhost`) and by the E2B headers, over HTTP/1.1 and HTTP/2 with
 * prior knowledge; request and response bodies stream both ways (each chunk's echo arrives before
 * the next chunk is sent) and 16 MiB arrive intact; a WebSocket client (ws) gets its messages back.
 * Without the token, or with a wrong one: 401; an unknown sandbox: 502 with E2B's body. `fsb token`
 * rotates the token (the old one is refused, the new one works) and `fsb port-forward` carries bytes
 * both ways. A request sent the moment a create answers reaches the new sandbox (not 503 "starting").
 * Traffic stays on loopback.
 */
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import WebSocket from "ws";
import type { CreatedSandbox } from "@fast-sandbox/sdk";
import { REPO_ROOT } from "../../support/containerd.js";
import { BASE_IMAGE, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const FSB = join(REPO_ROOT, "packages/cli/bin/fsb.js");
const HTTP_PORT = 18480;
const WS_PORT = 18481;
const TCP_PORT = 18482;
const BIG_BYTES = 16 * 1024 * 1024;

/** Sets up and starts the sandbox's three servers. */
const SANDBOX_SCRIPT = `
set -e
mkdir -p /www/cgi-bin
printf '%s' "$WS_SCRIPT" > /websocket-echo.sh
printf '#!/bin/sh\\nprintf "Content-Type: application/octet-stream\\\\r\\\\n\\\\r\\\\n"\\nexec cat\\n' > /www/cgi-bin/echo
chmod +x /www/cgi-bin/echo
echo hello-from-the-sandbox > /www/index.html
dd if=/dev/zero bs=65536 count=${BIG_BYTES / 65536} 2>/dev/null | tr '\\0' a > /www/big
httpd -f -p ${HTTP_PORT} -h /www &
nc -ll -p ${WS_PORT} -e /bin/sh /websocket-echo.sh &
nc -ll -p ${TCP_PORT} -e /bin/cat &
echo ready
wait
`;

describe("sandbox ingress through the proxy", () => {
  let embedded: EmbeddedCase;
  let sandbox: CreatedSandbox;
  let token: string;
  let proxyPort: number;
  const children: ChildProcess[] = [];

  const endpoint = (port: number) => sandbox.status?.endpoints?.[(sandbox.spec.exposedPorts ?? []).indexOf(port)] ?? "";
  // Child processes run asynchronously: the proxy and the API they talk to run in this process.
  const fsb = (...args: string[]) =>
    run(process.execPath, [FSB, "--url", embedded.controlPlane.url, ...args], { FSB_TOKEN: embedded.token, FSB_DATA_DIR: embedded.dataDir });
  /** curl through the proxy; `-w` appends the status code (and HTTP version) on a last line. */
  const curl = async (...args: string[]) => {
    const result = await run("curl", ["-sS", "--max-time", "30", "-w", "\n%{http_code} %{http_version}", ...args]);
    const lines = result.stdout.split("\n");
    const [status, version] = (lines.pop() ?? "").split(" ");
    return { status: Number(status), version, body: lines.join("\n"), stderr: result.stderr };
  };

  before(async () => {
    embedded = await startEmbedded({ name: "ingress", pools: [pool("default", { maxSandboxesPerPod: 4 })] });
    proxyPort = Number(new URL(embedded.controlPlane.proxyUrl).port);
    sandbox = await embedded.client.sandboxes.create({
      pool: "default",
      image: BASE_IMAGE,
      command: ["sh", "-c", SANDBOX_SCRIPT],
      envs: { WS_SCRIPT: readFileSync(join(import.meta.dirname, "websocket-echo.sh"), "utf8") },
      exposedPorts: [HTTP_PORT, WS_PORT, TCP_PORT],
    });
    token = sandbox.accessToken;
    let last = "";
    await waitFor(
      async () => {
        const answer = await curl("-H", `X-Access-Token: ${token}`, endpoint(HTTP_PORT));
        last = `${answer.status} ${answer.body} ${answer.stderr}`;
        return answer.body === "hello-from-the-sandbox\n";
      },
      20_000,
      "the sandbox's HTTP server behind the proxy",
    ).catch(async (error: unknown) => {
      let logs = "";
      for await (const chunk of embedded.client.sandboxes.logs(sandbox.metadata.name)) logs += new TextDecoder().decode(chunk);
      throw new Error(`${String(error)}; last answer: ${last}; the sandbox's output: ${logs}`);
    });
  });

  after(async () => {
    for (const child of children) child.kill("SIGTERM");
    await embedded.stop();
  });

  it("gives every exposed port an endpoint URL on the proxy, and an access token kept only as a hash", async () => {
    const id = sandbox.status?.sandboxID ?? "";
    assert.match(id, /^[a-z0-9]{20}$/);
    assert.deepEqual(
      sandbox.status?.endpoints,
      [HTTP_PORT, WS_PORT, TCP_PORT].map((port) => `http://${port}-${id}.localhost:${proxyPort}/`),
    );
    assert.match(token, /^[A-Za-z0-9_-]{43}$/);
    const stored = await embedded.client.sandboxes.get(sandbox.metadata.name);
    assert.equal(stored.status?.accessTokenHash, `sha256:${createHash("sha256").update(token).digest("hex")}`);
    assert.ok(!JSON.stringify(stored).includes(token));
  });

  it("answers curl at the endpoint URL (Host routing) over HTTP/1.1 and HTTP/2 with prior knowledge", async () => {
    const h1 = await curl("-H", `X-Access-Token: ${token}`, endpoint(HTTP_PORT));
    assert.deepEqual([h1.status, h1.version, h1.body], [200, "1.1", "hello-from-the-sandbox\n"], h1.stderr);
    const h2 = await curl("--http2-prior-knowledge", "-H", `X-Access-Token: ${token}`, endpoint(HTTP_PORT));
    assert.deepEqual([h2.status, h2.version, h2.body], [200, "2", "hello-from-the-sandbox\n"], h2.stderr);
  });

  it("answers requests routed by the E2B headers on the proxy's own address", async () => {
    const answer = await curl(
      "-H",
      `X-Access-Token: ${token}`,
      "-H",
      `E2b-Sandbox-Id: ${sandbox.status?.sandboxID ?? ""}`,
      "-H",
      `E2b-Sandbox-Port: ${HTTP_PORT}`,
      `${embedded.controlPlane.proxyUrl}/index.html`,
    );
    assert.deepEqual([answer.status, answer.body], [200, "hello-from-the-sandbox\n"], answer.stderr);
  });

  it("serves a sandbox at once: a request sent the moment its create answers is not refused as still starting", async () => {
    // A few times over: the window such a request could meet is a few ms wide at most.
    for (let attempt = 1; attempt <= 4; attempt++) {
      const fresh = await embedded.client.sandboxes.create({
        pool: "default",
        image: BASE_IMAGE,
        command: ["sh", "-c", `mkdir /srv && echo at-once > /srv/index.html && exec httpd -f -p ${HTTP_PORT} -h /srv`],
        exposedPorts: [HTTP_PORT],
      });
      try {
        // Nothing awaited between the answer and the request: the proxy must know the sandbox's
        // address already (its Running status), else it answers 503 "starting (Bound)".
        const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const request = http.get(
            {
              host: "127.0.0.1",
              port: proxyPort,
              path: "/index.html",
              headers: { host: `${HTTP_PORT}-${fresh.status?.sandboxID ?? ""}.localhost:${proxyPort}`, "x-access-token": fresh.accessToken },
            },
            (response) => {
              let body = "";
              response.setEncoding("utf8");
              response.on("data", (chunk: string) => (body += chunk));
              response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
            },
          );
          request.on("error", reject);
        });
        assert.deepEqual([answer.status, answer.body], [200, "at-once\n"], `attempt ${attempt}`);
      } finally {
        await embedded.client.sandboxes.delete(fresh.metadata.name, { gracePeriodMs: 0 });
      }
    }
  });

  it("refuses a missing or wrong token with 401, and answers 502 with E2B's body for an unknown sandbox", async () => {
    const missing = await curl(endpoint(HTTP_PORT));
    assert.equal(missing.status, 401);
    assert.equal(JSON.parse(missing.body).code, 401);
    assert.equal((await curl("-H", "X-Access-Token: not-the-token", endpoint(HTTP_PORT))).status, 401);
    const unknown = await curl("-H", `X-Access-Token: ${token}`, `http://${HTTP_PORT}-0000000000nosuchsandbox.localhost:${proxyPort}/`);
    assert.equal(unknown.status, 502);
    assert.deepEqual(JSON.parse(unknown.body), { sandboxId: "0000000000nosuchsandbox", message: "The sandbox was not found", code: 502 });
  });

  it("downloads 16 MiB intact", async () => {
    const big = await curl("-H", `X-Access-Token: ${token}`, `${endpoint(HTTP_PORT)}big`);
    assert.equal(big.status, 200, big.stderr);
    assert.equal(big.body.length, BIG_BYTES);
    assert.match(big.body, /^a+$/);
  });

  for (const version of ["HTTP/1.1", "HTTP/2"] as const) {
    it(`streams a body both ways over ${version} without buffering: each chunk's echo arrives before the next is sent, then 16 MiB more`, async () => {
      const rounds = 5;
      const chunk = (round: number) => Buffer.from(`chunk ${round} of the streaming test;`);
      const pingPongBytes = Array.from({ length: rounds }, (_, round) => chunk(round).length).reduce((a, b) => a + b, 0);
      const total = pingPongBytes + BIG_BYTES;
      const { write, end, received } = await streamingEcho(version, total);
      let echoedSoFar = 0;
      for (let round = 0; round < rounds; round++) {
        const piece = chunk(round);
        await write(piece);
        echoedSoFar += piece.length;
        // The sandbox echoes what it has read; a proxy that held the request body back would hang here.
        await waitFor(() => received.bytes >= echoedSoFar, 20_000, `the echo of chunk ${round}`);
        assert.deepEqual(received.all().subarray(echoedSoFar - piece.length, echoedSoFar), piece);
      }
      const block = Buffer.alloc(64 * 1024, 0x62);
      for (let sent = 0; sent < BIG_BYTES; sent += block.length) await write(block);
      end();
      await waitFor(() => received.bytes >= total, 60_000, "the whole echo");
      const all = received.all();
      assert.equal(all.length, total);
      assert.ok(all.subarray(pingPongBytes).every((byte) => byte === 0x62));
    });
  }

  /** A POST of `length` bytes to the sandbox's echo CGI through the proxy, written piece by piece while its answer streams back. */
  async function streamingEcho(
    version: "HTTP/1.1" | "HTTP/2",
    length: number,
  ): Promise<{ write: (chunk: Buffer) => Promise<void>; end: () => void; received: { bytes: number; all: () => Buffer } }> {
    const chunks: Buffer[] = [];
    const received = { bytes: 0, all: () => Buffer.concat(chunks) };
    const collect = (data: Buffer) => {
      chunks.push(data);
      received.bytes += data.length;
    };
    const host = new URL(endpoint(HTTP_PORT)).host;
    const headers = { "x-access-token": token, "content-length": String(length), "content-type": "application/octet-stream" };
    if (version === "HTTP/2") {
      const session = http2.connect(`http://127.0.0.1:${proxyPort}`);
      const stream = session.request({ ":method": "POST", ":path": "/cgi-bin/echo", ":authority": host, ...headers });
      stream.on("data", collect);
      stream.on("end", () => session.close());
      return {
        write: (chunk) => new Promise((resolve) => (stream.write(chunk) ? resolve() : stream.once("drain", resolve))),
        end: () => stream.end(),
        received,
      };
    }
    const request = http.request({ host: "127.0.0.1", port: proxyPort, method: "POST", path: "/cgi-bin/echo", headers: { host, ...headers }, agent: false });
    request.on("response", (response) => response.on("data", collect));
    request.flushHeaders();
    return {
      write: (chunk) => new Promise((resolve) => (request.write(chunk) ? resolve() : request.once("drain", resolve))),
      end: () => request.end(),
      received,
    };
  }

  it("relays a WebSocket to the sandbox's echo server, and refuses the upgrade without the token", async () => {
    const url = new URL(endpoint(WS_PORT));
    const socket = new WebSocket(`ws://127.0.0.1:${proxyPort}/`, { headers: { host: url.host, "x-access-token": token } });
    await new Promise((resolve, reject) => socket.once("open", resolve).once("error", reject));
    for (const message of ["hello through the proxy", "a second message"]) {
      const echoed = new Promise<string>((resolve) => socket.once("message", (data: Buffer) => resolve(data.toString())));
      socket.send(message);
      assert.equal(await echoed, message);
    }
    const binary = Buffer.from(Array.from({ length: 300 }, (_, i) => i % 256));
    const echoedBinary = new Promise<Buffer>((resolve) => socket.once("message", (data: Buffer) => resolve(data)));
    socket.send(binary);
    assert.deepEqual(await echoedBinary, binary);
    socket.close();
    await new Promise((resolve) => socket.once("close", resolve));

    const refused = new WebSocket(`ws://127.0.0.1:${proxyPort}/`, { headers: { host: url.host } });
    const status = await new Promise<number>((resolve) => refused.once("unexpected-response", (_request, response) => resolve(response.statusCode ?? 0)));
    assert.equal(status, 401);
  });

  it("fsb token rotates the token: the old one is refused, the new one works", async () => {
    const rotated = await fsb("token", sandbox.metadata.name);
    assert.equal(rotated.code, 0, rotated.stderr);
    const fresh = rotated.stdout.trim();
    assert.match(fresh, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(fresh, token);
    assert.match(rotated.stderr, /previous one no longer works/);
    assert.equal((await curl("-H", `X-Access-Token: ${token}`, endpoint(HTTP_PORT))).status, 401);
    assert.equal((await curl("-H", `X-Access-Token: ${fresh}`, endpoint(HTTP_PORT))).status, 200);
    // Kept for later commands (fsb port-forward) in the data directory, readable by its owner only.
    const saved = join(embedded.dataDir, "access-tokens", "default", sandbox.metadata.name);
    assert.equal(readFileSync(saved, "utf8").trim(), fresh);
    assert.equal(statSync(saved).mode & 0o777, 0o600);
    token = fresh;
  });

  it("counts the proxy's answers, bytes and WebSockets in the control plane's /metrics", async () => {
    const text = await (await fetch(`${embedded.controlPlane.url}/metrics`)).text();
    const value = (series: string) => Number(new RegExp(`^${series.replace(/[{}]/g, "\\$&")} (\\d+)$`, "m").exec(text)?.[1] ?? Number.NaN);
    assert.ok(value('fsb_proxy_requests_total{kind="http",code="200"}') >= 4, text);
    assert.ok(value('fsb_proxy_requests_total{kind="http",code="401"}') >= 2);
    assert.ok(value('fsb_proxy_requests_total{kind="http",code="502"}') >= 1);
    assert.ok(value('fsb_proxy_requests_total{kind="websocket",code="101"}') >= 1);
    assert.ok(value('fsb_proxy_bytes_total{direction="to_sandbox"}') >= 2 * BIG_BYTES);
    assert.ok(value('fsb_proxy_bytes_total{direction="from_sandbox"}') >= 3 * BIG_BYTES);
    // The WebSocket above was closed: the gauge comes back to 0 once the proxy has seen both ends go.
    await waitFor(
      async () => /^fsb_proxy_open_connections\{kind="websocket"\} 0$/m.test(await (await fetch(`${embedded.controlPlane.url}/metrics`)).text()),
      10_000,
      "no open WebSocket in fsb_proxy_open_connections",
    );
  });

  it("fsb port-forward carries bytes both ways between a local port and the sandbox's port", async () => {
    const child = spawn(process.execPath, [FSB, "--url", embedded.controlPlane.url, "port-forward", sandbox.metadata.name, `:${TCP_PORT}`], {
      // No --token: the one 'fsb token' saved in the data directory.
      env: { ...process.env, FSB_TOKEN: embedded.token, FSB_DATA_DIR: embedded.dataDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let output = "";
    child.stdout?.on("data", (data: Buffer) => (output += data.toString()));
    child.stderr?.on("data", (data: Buffer) => (output += data.toString()));
    await waitFor(() => /Forwarding from 127\.0\.0\.1:\d+/.test(output) || child.exitCode !== null, 30_000, "port-forward to listen");
    const localPort = Number(/Forwarding from 127\.0\.0\.1:(\d+)/.exec(output)?.[1]);
    assert.ok(localPort > 0, output);

    const connection = net.connect(localPort, "127.0.0.1");
    await new Promise((resolve, reject) => connection.once("connect", resolve).once("error", reject));
    let echoed = Buffer.alloc(0);
    connection.on("data", (data: Buffer) => (echoed = Buffer.concat([echoed, data])));
    const payload = Buffer.from(Array.from({ length: 256 * 1024 }, (_, i) => (i * 7) % 256));
    connection.write(payload.subarray(0, 10));
    await waitFor(() => echoed.length >= 10, 20_000, "the first bytes back");
    connection.write(payload.subarray(10));
    await waitFor(() => echoed.length >= payload.length, 30_000, "every byte back");
    assert.deepEqual(echoed, payload);
    connection.destroy();
  });
});

/** Runs a program to its end without blocking this process; resolves with its exit code and output. */
function run(file: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: "utf8", timeout: 90_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
