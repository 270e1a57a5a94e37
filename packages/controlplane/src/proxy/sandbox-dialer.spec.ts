import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { DialTimeoutError, SandboxDialer } from "./sandbox-dialer.js";

/**
 * A loopback port whose connections never complete: a process listens with a backlog of one and
 * never accepts (its thread waits forever), and filler connections fill the queue, so the kernel
 * drops the SYNs of any further one, as a host gone or a packet filter does.
 */
async function unansweringPort(): Promise<{ port: number; process: ChildProcess; fillers: net.Socket[] }> {
  const script = `
    const server = require("node:net").createServer();
    server.listen({ port: 0, host: "127.0.0.1", backlog: 1 }, () => {
      process.stdout.write(String(server.address().port) + "\\n", () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0));
    });`;
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.once("data", (chunk: Buffer) => resolve(Number(chunk.toString().trim())));
    child.once("error", reject);
  });
  const fillers = Array.from({ length: 4 }, () => net.connect(port, "127.0.0.1").on("error", () => undefined));
  return { port, process: child, fillers };
}

describe("SandboxDialer's connections", () => {
  let blackhole: Awaited<ReturnType<typeof unansweringPort>>;
  // A test whose dial never ends would otherwise wait forever: it fails instead.
  const GUARD = { timeout: 10_000 };

  before(async () => {
    blackhole = await unansweringPort();
  });

  after(() => {
    for (const filler of blackhole.fillers) filler.destroy();
    blackhole.process.kill();
  });

  it("fails a direct connection that does not complete within the connect timeout with a DialTimeoutError", GUARD, async () => {
    const dialer = new SandboxDialer(undefined, { connectTimeoutMs: 100 });
    try {
      await assert.rejects(dialer.connect({ host: "127.0.0.1", port: blackhole.port, sandboxId: "unanswering" }), (error: unknown) => {
        assert.ok(error instanceof DialTimeoutError, String(error));
        assert.match(error.message, /within 100 ms/);
        return true;
      });
    } finally {
      dialer.close();
    }
  });

  it("stops a direct connection in progress once the caller hangs up (its signal aborts), with the signal's reason", GUARD, async () => {
    const dialer = new SandboxDialer(undefined, { connectTimeoutMs: 60_000 });
    const hangUp = new AbortController();
    try {
      const connecting = dialer.connect({ host: "127.0.0.1", port: blackhole.port, sandboxId: "unanswering" }, hangUp.signal);
      setTimeout(() => hangUp.abort(new Error("the client hung up")), 50);
      await assert.rejects(connecting, /the client hung up/);
    } finally {
      dialer.close();
    }
  });
});

describe("SandboxDialer's kept-alive connections", () => {
  it("does not reuse a kept connection the sandbox ended while it was idle (half-open): the next request gets a new one", async () => {
    let connections = 0;
    // Answers one request per connection, then ends its side while the connection is idle, as a
    // sandbox restored in place (or a relay forwarding its end) does.
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      connections += 1;
      socket.once("data", () => {
        socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok");
        setTimeout(() => socket.end(), 20);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    const dialer = new SandboxDialer(undefined, { idleTimeoutMs: 60_000 });
    const get = () =>
      new Promise<string>((resolve, reject) => {
        const request = http.get({ host: "127.0.0.1", port, path: "/", ...dialer.pooledConnection({ host: "127.0.0.1", port }) }, (response) => {
          let body = "";
          response.on("data", (chunk: Buffer) => (body += chunk.toString()));
          response.on("end", () => resolve(body));
        });
        request.on("error", reject);
        request.setTimeout(5_000, () => request.destroy(new Error("no answer: the request went into a connection nobody reads")));
      });
    try {
      assert.equal(await get(), "ok");
      // The server's end arrives while the connection sits in the pool.
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(await get(), "ok");
      assert.equal(connections, 2);
    } finally {
      dialer.close();
      server.close();
    }
  });
});
