import assert from "node:assert/strict";
import net, { type AddressInfo } from "node:net";
import { after, describe, it } from "node:test";
import { PortStartGrace, isRefused } from "./port-start-grace.js";
import { RelayRefusedError, type DialTarget } from "./relay-dial.js";

/** A loopback port nothing listens on (bound, then closed). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Dials loopback for real, counting the tries. */
function countingDial(): { dial: (target: DialTarget) => Promise<net.Socket>; tries: () => number } {
  let tries = 0;
  const dial = (target: DialTarget) =>
    new Promise<net.Socket>((resolve, reject) => {
      tries += 1;
      const socket = net.connect({ host: target.host, port: target.port });
      socket.once("connect", () => resolve(socket));
      socket.once("error", reject);
    });
  return { dial, tries: () => tries };
}

describe("the grace a sandbox's port gets to start listening", () => {
  const servers: net.Server[] = [];
  after(() => servers.forEach((server) => server.close()));
  const serve = (port: number) => {
    const server = net.createServer((socket) => socket.destroy());
    servers.push(server);
    return new Promise<net.Server>((resolve, reject) => server.once("error", reject).listen(port, "127.0.0.1", () => resolve(server)));
  };

  it("waits for a port that starts listening after the first try, then never tries it again", async () => {
    const port = await freePort();
    const { dial, tries } = countingDial();
    const grace = new PortStartGrace(dial, { graceMs: 10_000, intervalMs: 20 });
    const target = { host: "127.0.0.1", port, sandboxId: "late" };
    const connecting = grace.connect(target);
    const serving = new Promise<void>((resolve, reject) => setTimeout(() => void serve(port).then(() => resolve(), reject), 150));
    await serving;
    (await connecting).destroy();
    assert.ok(tries() > 1, `refused at first, tried again (${tries()} tries)`);
    const before = tries();
    (await grace.connect(target)).destroy();
    assert.equal(tries(), before + 1, "a port reached before is dialled once, as any connection");
  });

  it("gives up on a port that never opens after the grace, and a port reached before gets no grace once it refuses", async () => {
    const never = await freePort();
    const { dial, tries } = countingDial();
    // A second of grace: a few tries even on a machine too busy to run this process for a while.
    const grace = new PortStartGrace(dial, { graceMs: 1_000, intervalMs: 20 });
    await assert.rejects(grace.connect({ host: "127.0.0.1", port: never, sandboxId: "never" }), (error: unknown) => isRefused(error));
    assert.ok(tries() > 2, `tried again within the grace (${tries()} tries)`);
    // Refused through a whole grace: the next callers get their answer at once for a while.
    const afterGrace = tries();
    await assert.rejects(grace.connect({ host: "127.0.0.1", port: never, sandboxId: "never" }), (error: unknown) => isRefused(error));
    assert.equal(tries(), afterGrace + 1, "no grace again right after one ran out");

    const port = await freePort();
    const server = await serve(port);
    const target = { host: "127.0.0.1", port, sandboxId: "went-away" };
    (await grace.connect(target)).destroy();
    await new Promise((resolve) => server.close(resolve));
    const before = tries();
    await assert.rejects(grace.connect(target), (error: unknown) => isRefused(error));
    assert.equal(tries(), before + 1, "one try: the server went away, which is the answer");
  });

  it("remembers ports per instance: another sandbox id at the same address and port gets its own grace", async () => {
    const port = await freePort();
    const server = await serve(port);
    const { dial, tries } = countingDial();
    const grace = new PortStartGrace(dial, { graceMs: 1_000, intervalMs: 20 });
    (await grace.connect({ host: "127.0.0.1", port, sandboxId: "first" })).destroy();
    await new Promise((resolve) => server.close(resolve));
    const before = tries();
    await assert.rejects(grace.connect({ host: "127.0.0.1", port, sandboxId: "second" }), (error: unknown) => isRefused(error));
    assert.ok(tries() - before > 1, "the new instance's port was tried again while it refused");
  });

  it("stops at once when the caller hangs up: no more tries, its reason thrown, and the port keeps its grace", async () => {
    const port = await freePort();
    const { dial, tries } = countingDial();
    const grace = new PortStartGrace(dial, { graceMs: 10_000, intervalMs: 20 });
    const target = { host: "127.0.0.1", port, sandboxId: "hung-up" };
    const hungUp = new AbortController();
    const connecting = grace.connect(target, hungUp.signal);
    // Hung up once it has been refused and tried again (however long that took).
    for (let waited = 0; tries() < 2 && waited < 5_000; waited += 10) await new Promise((resolve) => setTimeout(resolve, 10));
    const reason = new Error("the client hung up");
    hungUp.abort(reason);
    await assert.rejects(connecting, (error: unknown) => error === reason);
    const atAbort = tries();
    assert.ok(atAbort > 1, `tried again before the hang-up (${atAbort} tries)`);
    // Past the longest pause (10 × 20 ms): nothing more was dialled.
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(tries(), atAbort, "no try after the hang-up");
    // Not refused through a grace: the next caller still gets one, and finds the server that started meanwhile.
    const server = await serve(port);
    await assert.rejects(grace.connect(target, AbortSignal.abort(reason)), (error: unknown) => error === reason, "an aborted caller makes no try");
    assert.equal(tries(), atAbort);
    (await grace.connect(target)).destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it("throws the hang-up's reason, not the refusal, when the caller hangs up during a try that is then refused", async () => {
    const hungUp = new AbortController();
    const reason = new Error("the client hung up");
    let tries = 0;
    const grace = new PortStartGrace(
      () => {
        tries += 1;
        hungUp.abort(reason);
        return Promise.reject(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }));
      },
      { graceMs: 10_000, intervalMs: 10 },
    );
    await assert.rejects(grace.connect({ host: "127.0.0.1", port: 1, sandboxId: "x" }, hungUp.signal), (error: unknown) => error === reason);
    assert.equal(tries, 1);
  });

  it("tries again only refusals: a relay's 502 for a refused port is one, its other answers are not", async () => {
    assert.equal(isRefused(Object.assign(new Error("connect ECONNREFUSED 10.0.0.2:8080"), { code: "ECONNREFUSED" })), true);
    assert.equal(
      isRefused(new RelayRefusedError(502, "the agent relay answered 502: port 8080 of sandbox a/b is not open (connect ECONNREFUSED 10.0.0.2:8080)")),
      true,
    );
    assert.equal(isRefused(new RelayRefusedError(404, "the agent relay answered 404: sandbox x is not at 10.0.0.2 on this agent")), false);
    assert.equal(isRefused(Object.assign(new Error("connect EHOSTUNREACH"), { code: "EHOSTUNREACH" })), false);
    let tries = 0;
    const grace = new PortStartGrace(() => (tries++, Promise.reject(new RelayRefusedError(403, "not a sandbox of this agent"))), {
      graceMs: 5000,
      intervalMs: 10,
    });
    await assert.rejects(grace.connect({ host: "10.0.0.2", port: 1, relay: "agent:7071", sandboxId: "x" }), RelayRefusedError);
    assert.equal(tries, 1);
  });
});
