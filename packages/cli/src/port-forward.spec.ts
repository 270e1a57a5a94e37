import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import net, { type AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { API_VERSION, FsbError, ValidationError, type Sandbox } from "@fast-sandbox/api";
import { startSandboxProxy, type SandboxProxy } from "@fast-sandbox/controlplane";
import { forwardPort, parsePortMapping, tunnelTarget } from "./port-forward.js";

describe("parsePortMapping", () => {
  it("takes LOCAL:REMOTE, :REMOTE (any free local port) and PORT", () => {
    assert.deepEqual(parsePortMapping("9000:8080"), { localPort: 9000, remotePort: 8080 });
    assert.deepEqual(parsePortMapping(":8080"), { localPort: 0, remotePort: 8080 });
    assert.deepEqual(parsePortMapping("8080"), { localPort: 8080, remotePort: 8080 });
  });

  it("refuses anything else, naming the form", () => {
    for (const value of ["", "a:b", "8080:", "9000:0", "70000:80", "1:2:3", "-1:80"]) {
      assert.throws(
        () => parsePortMapping(value),
        (error: unknown) => error instanceof ValidationError && /LOCAL:REMOTE/.test(error.message),
        value,
      );
    }
  });
});

describe("tunnelTarget", () => {
  it("connects to loopback for *.localhost and asks for the endpoint's host and port", () => {
    assert.deepEqual(tunnelTarget("http://8080-abc.localhost:7072/"), { host: "127.0.0.1", port: 7072, tls: false, authority: "8080-abc.localhost:7072" });
    assert.deepEqual(tunnelTarget("https://8080-abc.sandboxes.example.com/"), {
      host: "8080-abc.sandboxes.example.com",
      port: 443,
      tls: true,
      authority: "8080-abc.sandboxes.example.com:443",
    });
  });
});

describe("forwardPort through the sandbox proxy", () => {
  const echo = net.createServer((socket) => socket.pipe(socket));
  let proxy: SandboxProxy;
  let echoPort: number;

  before(async () => {
    echoPort = await new Promise<number>((resolve) => echo.listen(0, "127.0.0.1", () => resolve((echo.address() as AddressInfo).port)));
    const sandbox: Sandbox = {
      apiVersion: API_VERSION,
      kind: "Sandbox",
      metadata: { name: "web", namespace: "default" },
      spec: { image: "busybox", poolRef: "default", exposedPorts: [echoPort] },
      status: { phase: "Running", assignedPod: "agent-0", sandboxID: "abc", accessTokenHash: `sha256:${createHash("sha256").update("right").digest("hex")}` },
    };
    proxy = await startSandboxProxy({
      sources: { lookup: (id) => Promise.resolve(id === "abc" ? sandbox : undefined), agentAddress: () => "127.0.0.1", domain: "localhost" },
      logger: pino({ level: "silent" }),
    });
  });

  after(async () => {
    await proxy.close();
    await new Promise((resolve) => echo.close(resolve));
  });

  it("carries bytes both ways over each local connection", async () => {
    const errors: unknown[] = [];
    const target = tunnelTarget(`http://${echoPort}-abc.localhost:${proxy.port}/`);
    const forwarder = await forwardPort({ address: "127.0.0.1", localPort: 0, target, accessToken: "right", onError: (error) => errors.push(error) });
    try {
      for (let connection = 0; connection < 2; connection++) {
        const socket = net.connect(forwarder.port, "127.0.0.1");
        const payload = Buffer.alloc(1024 * 1024, connection + 1);
        let received = Buffer.alloc(0);
        const done = new Promise<void>((resolve) => {
          socket.on("data", (data: Buffer) => {
            received = Buffer.concat([received, data]);
            if (received.length >= payload.length) resolve();
          });
        });
        socket.write(payload);
        await done;
        assert.deepEqual(received, payload);
        socket.destroy();
      }
      assert.deepEqual(errors, []);
    } finally {
      await forwarder.close();
    }
  });

  it("reports the proxy's refusal of a wrong token and closes the local connection", async () => {
    const errors: unknown[] = [];
    const target = tunnelTarget(`http://${echoPort}-abc.localhost:${proxy.port}/`);
    const forwarder = await forwardPort({ address: "127.0.0.1", localPort: 0, target, accessToken: "wrong", onError: (error) => errors.push(error) });
    try {
      const socket = net.connect(forwarder.port, "127.0.0.1");
      await new Promise((resolve) => socket.once("close", resolve).resume());
      assert.equal(errors.length, 1);
      assert.ok(errors[0] instanceof FsbError);
      assert.equal(errors[0].code, "unauthenticated");
      assert.match(errors[0].message, /refused the tunnel \(401\): the X-Access-Token header does not hold/);
    } finally {
      await forwarder.close();
    }
  });
});

describe("forwardPort with a proxy that answers late (as while the sandbox's port is still starting)", () => {
  /** A sandbox proxy that answers each CONNECT only when told (reading meanwhile); `sockets` are the connections open to it. */
  async function lateProxy(): Promise<{ port: number; sockets: Set<net.Socket>; answer(): void; close(): Promise<void> }> {
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      socket.on("error", () => undefined);
      socket.resume();
    });
    const port = await new Promise<number>((resolve) => proxy.listen(0, "127.0.0.1", () => resolve((proxy.address() as AddressInfo).port)));
    return {
      port,
      sockets,
      answer: () => {
        for (const socket of sockets) socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      },
      close: async () => {
        for (const socket of sockets) socket.destroy();
        await new Promise((resolve) => proxy.close(resolve));
      },
    };
  }

  async function until(condition: () => boolean, what: string): Promise<void> {
    for (const started = Date.now(); !condition(); await new Promise((resolve) => setTimeout(resolve, 10))) {
      if (Date.now() - started > 2_000) assert.fail(`not within 2 s: ${what}`);
    }
  }

  /** A local client of the forwarder, once the proxy holds its tunnel's connection. */
  async function clientWithTunnelOpening(forwarderPort: number, proxy: { sockets: Set<net.Socket> }): Promise<net.Socket> {
    const client = net.connect(forwarderPort, "127.0.0.1");
    client.on("error", () => undefined);
    await until(() => proxy.sockets.size === 1, "the forwarder asked the proxy for a tunnel");
    return client;
  }

  const forwarderTo = (port: number, errors: unknown[]) =>
    forwardPort({
      address: "127.0.0.1",
      localPort: 0,
      target: tunnelTarget(`http://8080-abc.localhost:${port}/`),
      accessToken: "t",
      onError: (error) => errors.push(error),
    });

  it("closes a tunnel still opening when its local client is gone (reset, as health probes do)", async () => {
    const proxy = await lateProxy();
    const errors: unknown[] = [];
    const forwarder = await forwarderTo(proxy.port, errors);
    try {
      const client = await clientWithTunnelOpening(forwarder.port, proxy);
      client.resetAndDestroy();
      await until(() => proxy.sockets.size === 0, "the tunnel's connection to the proxy is closed");
      proxy.answer();
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(proxy.sockets.size, 0);
      assert.deepEqual(errors, [], "a client that left is no error");
    } finally {
      await forwarder.close();
      await proxy.close();
    }
  });

  it("closes tunnels still opening on close()", async () => {
    const proxy = await lateProxy();
    const errors: unknown[] = [];
    const forwarder = await forwarderTo(proxy.port, errors);
    try {
      await clientWithTunnelOpening(forwarder.port, proxy);
      await forwarder.close(); // Ctrl-C: the process ends now, not once the proxy answers
      await until(() => proxy.sockets.size === 0, "the tunnel's connection to the proxy is closed");
      proxy.answer();
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(proxy.sockets.size, 0);
      assert.deepEqual(errors, []);
    } finally {
      await proxy.close();
    }
  });
});
