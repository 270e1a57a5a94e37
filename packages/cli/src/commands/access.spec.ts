/**
 * `fsb token` keeps a sandbox's new access token in the data directory only for that data
 * directory's own instance: another's (FSB_URL) has sandboxes of the same names that are not its.
 * `fsb port-forward` lets go of everything on Ctrl-C, tunnels still opening and signal listeners.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { closeConnections } from "../connection.js";
import { fakeSandbox, startFakeControlPlane, type FakeControlPlane } from "../fake-control-plane.fixture.js";
import { portForward, token } from "./access.js";

const OWN_TOKEN = "own-token-0123456789";
const OTHER_TOKEN = "other-token-0123456789";

/** Captures stdout and stderr until `restore` (the test runner's own output is not strings: it goes through). */
function capture(): { printed: string[]; restore(): void } {
  const printed: string[] = [];
  const writes = { stdout: process.stdout.write.bind(process.stdout), stderr: process.stderr.write.bind(process.stderr) };
  for (const stream of ["stdout", "stderr"] as const) {
    const write = writes[stream];
    process[stream].write = (chunk: string | Uint8Array, ...rest: never[]) => (typeof chunk === "string" ? (printed.push(chunk), true) : write(chunk, ...rest));
  }
  return {
    printed,
    restore: () => {
      process.stdout.write = writes.stdout;
      process.stderr.write = writes.stderr;
    },
  };
}

async function quietly(fn: () => Promise<void>): Promise<string> {
  const { printed, restore } = capture();
  try {
    await fn();
  } finally {
    restore();
  }
  return printed.join("");
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (const started = Date.now(); !condition(); await new Promise((resolve) => setTimeout(resolve, 10))) {
    if (Date.now() - started > 5_000) assert.fail(`not within 5 s: ${what}`);
  }
}

describe("fsb token", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "fsb-access-spec-"));
  const tokenFile = join(dataDir, "access-tokens", "default", "web");
  const env = { FSB_URL: process.env.FSB_URL, FSB_TOKEN: process.env.FSB_TOKEN };
  let own: FakeControlPlane;
  let other: FakeControlPlane;

  before(async () => {
    own = await startFakeControlPlane({ token: OWN_TOKEN, sandboxes: [fakeSandbox("web")] });
    other = await startFakeControlPlane({ token: OTHER_TOKEN, sandboxes: [fakeSandbox("web")] });
    writeFileSync(join(dataDir, "url"), `${own.url}\n`);
    writeFileSync(join(dataDir, "token"), `${OWN_TOKEN}\n`);
  });
  afterEach(() => {
    closeConnections();
    rmSync(join(dataDir, "access-tokens"), { recursive: true, force: true });
    for (const [name, value] of Object.entries(env)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });
  after(async () => {
    await Promise.all([own.close(), other.close()]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("saves the new token in the data directory of the instance it asked", async () => {
    delete process.env.FSB_URL;
    const printed = await quietly(() => token("web", { dataDir }));
    assert.equal(readFileSync(tokenFile, "utf8"), "token-of-web-0123456789\n");
    assert.match(printed, new RegExp(`saved in ${tokenFile}`));
  });

  it("saves nothing locally for a sandbox of the instance FSB_URL names, and prints the token", async () => {
    process.env.FSB_URL = other.url;
    process.env.FSB_TOKEN = OTHER_TOKEN;
    const printed = await quietly(() => token("web", { dataDir }));
    assert.deepEqual(other.calls, ["RotateAccessToken default/web"]);
    assert.equal(existsSync(tokenFile), false, "no token of another instance's sandbox in this data directory");
    assert.match(printed, /^token-of-web-0123456789\n/);
    assert.doesNotMatch(printed, /saved in/);
  });
});

describe("fsb port-forward", () => {
  it("on Ctrl-C closes a tunnel still opening and listens for SIGINT and SIGTERM no more (a later SIGTERM ends the process)", async () => {
    // A sandbox proxy that has not answered yet (the sandbox's port is still starting).
    const proxySockets = new Set<net.Socket>();
    const proxy = net.createServer((socket) => {
      proxySockets.add(socket);
      socket.once("close", () => proxySockets.delete(socket));
      socket.on("error", () => undefined);
      socket.resume();
    });
    const proxyPort = await new Promise<number>((resolve) => proxy.listen(0, "127.0.0.1", () => resolve((proxy.address() as AddressInfo).port)));
    const controlPlane = await startFakeControlPlane({
      token: OWN_TOKEN,
      sandboxes: [fakeSandbox("web", { exposedPorts: [8080], endpoints: [`http://8080-web.localhost:${proxyPort}/`] })],
    });
    const dataDir = mkdtempSync(join(tmpdir(), "fsb-port-forward-spec-"));
    writeFileSync(join(dataDir, "token"), `${OWN_TOKEN}\n`);
    const listeners = () => [process.listenerCount("SIGINT"), process.listenerCount("SIGTERM")];
    const before = listeners();
    const { printed, restore } = capture();
    try {
      const forwarding = portForward("web", ":8080", { dataDir, url: controlPlane.url, address: "127.0.0.1", token: "access-token" });
      await until(() => /Forwarding from/.test(printed.join("")), "it forwards");
      const port = Number(/127\.0\.0\.1:(\d+) ->/.exec(printed.join(""))?.[1]);
      const client = net.connect(port, "127.0.0.1");
      client.on("error", () => undefined);
      await until(() => proxySockets.size === 1, "it asked the proxy for a tunnel");
      process.emit("SIGINT", "SIGINT");
      await forwarding;
      assert.deepEqual(listeners(), before, "no SIGINT or SIGTERM listener is left");
      await until(() => proxySockets.size === 0, "the tunnel's connection to the proxy is closed");
      client.destroy();
    } finally {
      restore();
      closeConnections();
      await controlPlane.close();
      for (const socket of proxySockets) socket.destroy();
      await new Promise((resolve) => proxy.close(resolve));
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
