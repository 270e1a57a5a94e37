import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it } from "node:test";
import { ConflictError, FailedPreconditionError, NotFoundError, TimeoutError, UnavailableError, ValidationError } from "@fast-sandbox/api";
import { Connection } from "./connection.js";
import type { DaemonChannelFactory } from "./daemon-channel.js";
import { FIRST_SANDBOX_ID, FakeControlPlane, FakeDaemon } from "./sandbox.fixture.js";
import { FastSandbox } from "./sandbox.js";

describe("FastSandbox", () => {
  let plane: FakeControlPlane;
  let daemon: FakeDaemon;
  let connection: Connection;
  beforeEach(() => {
    plane = new FakeControlPlane();
    daemon = new FakeDaemon();
    connection = new Connection({ transport: plane.transport, daemon: daemon.factory });
  });
  afterEach(() => daemon.killAll());

  it("create() makes the sandbox with the pool's image and hands back its name, id and access token", async () => {
    const before = Date.now();
    const sandbox = await FastSandbox.create({ connection, envs: { A: "1" }, timeoutMs: 60_000, labels: { team: "x" } });
    const after = Date.now();
    assert.equal(sandbox.name, "sb-0000000001");
    assert.equal(sandbox.namespace, "default");
    assert.equal(sandbox.sandboxId, FIRST_SANDBOX_ID);
    assert.equal(sandbox.accessToken, "token-of-sb-0000000001");
    const spec = plane.sandbox("sb-0000000001").spec;
    assert.equal(spec.image, "fast-sandbox.io/base:latest");
    assert.equal(spec.poolRef, "default");
    assert.deepEqual(spec.envs, [{ name: "A", value: "1" }]);
    // 60 s from the moment of the call, which lies between before and after.
    const expiresAt = Date.parse(spec.expireTime ?? "");
    assert.ok(expiresAt >= before + 60_000 && expiresAt <= after + 60_000, `expires at ${expiresAt}, called in [${before}, ${after}]`);
  });

  it("create() waits until the sandbox's daemon answers through the proxy", async () => {
    daemon.startingHealthAnswers = 3;
    await FastSandbox.create({ connection });
    assert.equal(daemon.requests.filter((r) => r.what === "GET /health").length, 4);
    daemon.requests.length = 0;
    await FastSandbox.create({ connection, daemonReadyTimeoutMs: 0 });
    assert.equal(daemon.requests.length, 0, "0: no wait");
  });

  it("create() deletes a sandbox whose daemon does not answer in time, and says so: the wait it had (daemonReadyTimeoutMs), what to pass", async () => {
    daemon.startingHealthAnswers = Number.POSITIVE_INFINITY;
    await assert.rejects(FastSandbox.create({ connection, name: "no-daemon", daemonReadyTimeoutMs: 200 }), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.match(
        error.message,
        /^the daemon of sandbox no-daemon did not answer within 200 ms \(daemonReadyTimeoutMs; last: HTTP 502 .*nothing listens.*\): pass a larger daemonReadyTimeoutMs, or 0 not to wait \(.*network mode Shared run no daemon.*\); the sandbox was deleted$/,
      );
      return true;
    });
    assert.deepEqual(plane.deletes, ["no-daemon"]);
    // The shortest wait: no poll got an answer in time, which says nothing of the pool.
    daemon.startingHealthAnswers = 0;
    daemon.answerDelayMs = 50;
    await assert.rejects(FastSandbox.create({ connection, name: "short-wait", daemonReadyTimeoutMs: 1 }), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.match(error.message, /^the daemon of sandbox short-wait did not answer within 1 ms \(daemonReadyTimeoutMs; last: no answer within 1 ms\)/);
      assert.match(error.message, /; the sandbox was deleted$/);
      return true;
    });
    assert.deepEqual(plane.deletes, ["no-daemon", "short-wait"]);
    // waitUntilReady() names its own option.
    const sandbox = await FastSandbox.create({ connection, name: "later", daemonReadyTimeoutMs: 0 });
    await assert.rejects(sandbox.waitUntilReady({ timeoutMs: 1 }), /did not answer within 1 ms \(timeoutMs; .*\): pass a larger timeoutMs \(/);
  });

  it("create() waits past polls that got no answer at all (a connection reset, the proxy's URL unavailable for a moment)", async () => {
    const reset = () => new TypeError("fetch failed", { cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }) });
    let resets = 2;
    let proxyDown = 1;
    const flaky: DaemonChannelFactory = async (target) => {
      if (proxyDown-- > 0) throw new UnavailableError("GetSandboxProxy: connect ECONNREFUSED 127.0.0.1:7070");
      const channel = daemon.factory(target);
      return { transport: channel.transport, fetch: async (path, init) => (resets-- > 0 ? Promise.reject(reset()) : channel.fetch(path, init)) };
    };
    const sandbox = await FastSandbox.create({ connection: new Connection({ transport: plane.transport, daemon: flaky }) });
    assert.equal(sandbox.name, "sb-0000000001");
    assert.deepEqual(plane.deletes, []);
    assert.equal(daemon.requests.filter((r) => r.what === "GET /health").length, 1, "polled until the daemon answered");

    resets = Number.POSITIVE_INFINITY;
    await assert.rejects(
      FastSandbox.create({ connection: new Connection({ transport: plane.transport, daemon: flaky }), name: "reset", daemonReadyTimeoutMs: 200 }),
      (error: unknown) => {
        assert.ok(error instanceof UnavailableError, String(error));
        assert.match(
          error.message,
          /the daemon of sandbox reset did not answer within 200 ms \(daemonReadyTimeoutMs; last: read ECONNRESET \(the sandbox proxy could not be reached\)\)/,
        );
        return true;
      },
    );
    assert.deepEqual(plane.deletes, ["reset"]);
  });

  it("create() with requestTimeoutMs 0 (no limit) gives each daemon poll the time left of daemonReadyTimeoutMs", async () => {
    // A daemon a few ms away, as any network hop is: a 1 ms poll would never see its answer.
    daemon.answerDelayMs = 5;
    const unlimited = new Connection({ transport: plane.transport, daemon: daemon.factory, requestTimeoutMs: 0 });
    const sandbox = await FastSandbox.create({ connection: unlimited, daemonReadyTimeoutMs: 500 });
    assert.equal(sandbox.name, "sb-0000000001");
    assert.deepEqual(plane.deletes, []);
  });

  it("create() of a sandbox that is gone before its daemon answers is a NotFoundError (the proxy's fsb-error-code)", async () => {
    // The sandbox proxy's answer for an instance it does not know (proxy-target.ts), with its code in a header.
    const goneProxy: DaemonChannelFactory = (target) => ({
      transport: daemon.factory(target).transport,
      fetch: async () =>
        new Response(JSON.stringify({ sandboxId: target.sandboxId, message: "The sandbox was not found", code: 502 }), {
          status: 502,
          headers: { "content-type": "application/json", "fsb-error-code": "not_found" },
        }),
    });
    const gone = new Connection({ transport: plane.transport, daemon: goneProxy });
    await assert.rejects(FastSandbox.create({ connection: gone, name: "vanished", daemonReadyTimeoutMs: 5_000 }), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, String(error));
      assert.match(error.message, /sandbox vanished is gone/);
      return true;
    });
  });

  it("routes daemon traffic to its instance with its access token", async () => {
    const sandbox = await FastSandbox.create({ connection });
    daemon.define("true", async () => 0);
    await sandbox.commands.run("true");
    await sandbox.files.write("/tmp/x", "1");
    assert.deepEqual(daemon.targets, [{ namespace: "default", name: "sb-0000000001", sandboxId: FIRST_SANDBOX_ID, accessToken: "token-of-sb-0000000001" }]);
  });

  it("connect() finds a sandbox by name or by instance id; without a token its daemon calls say how to get one", async () => {
    plane.add("web", "a1b2c3d4e5f6g7h8i9j0");
    const byName = await FastSandbox.connect("web", { connection, accessToken: "t" });
    assert.equal(byName.sandboxId, "a1b2c3d4e5f6g7h8i9j0");
    const byId = await FastSandbox.connect("a1b2c3d4e5f6g7h8i9j0", { connection });
    assert.equal(byId.name, "web");
    await assert.rejects(byId.files.read("/etc/hosts"), (error: unknown) => {
      assert.ok(error instanceof FailedPreconditionError);
      assert.match(error.message, /no access token for sandbox web: pass accessToken to FastSandbox.connect .* or call rotateAccessToken\(\)/);
      return true;
    });
    assert.equal(daemon.targets.length, 0, "nothing was sent without a token");
    await assert.rejects(
      FastSandbox.connect("nothing0000000000000", { connection }),
      (error: unknown) => error instanceof NotFoundError && /named nothing0000000000000 or has that id/.test(error.message),
    );
    await assert.rejects(FastSandbox.connect("", { connection }), ValidationError);
  });

  it("rotateAccessToken() makes a new token and uses it for daemon traffic from then on", async () => {
    plane.add("web", "a1b2c3d4e5f6g7h8i9j0");
    const sandbox = await FastSandbox.connect("web", { connection });
    assert.equal(await sandbox.rotateAccessToken(), "rotated-token-of-web");
    daemon.define("true", async () => 0);
    await sandbox.commands.run("true");
    assert.equal(daemon.targets[0]?.accessToken, "rotated-token-of-web");
  });

  it("follows a new instance of its sandbox (a reset, an AutoRecreate): once getInfo() reads it, daemon calls go to it", async () => {
    plane.add("web", "a1b2c3d4e5f6g7h8i9j0");
    const sandbox = await FastSandbox.connect("web", { connection, accessToken: "t" });
    daemon.define("true", async () => 0);
    await sandbox.commands.run("true");
    const record = plane.sandbox("web");
    plane.sandboxes.set("default/web", { ...record, status: { ...record.status, sandboxID: "k0l1m2n3o4p5q6r7s8t9" } });
    assert.equal((await sandbox.getInfo()).status?.sandboxID, "k0l1m2n3o4p5q6r7s8t9");
    await sandbox.commands.run("true");
    assert.deepEqual(
      daemon.targets.map((target) => target.sandboxId),
      ["a1b2c3d4e5f6g7h8i9j0", "k0l1m2n3o4p5q6r7s8t9"],
    );
  });

  it("a handle whose sandbox was reset (same name, new instance) is told so when the proxy does not know its instance; nothing runs on the new one until getInfo()", async () => {
    plane.add("web", "a1b2c3d4e5f6g7h8i9j0");
    const sandbox = await FastSandbox.connect("web", { connection, accessToken: "t" });
    daemon.define("true", async () => 0);
    daemon.writeFile("/tmp/x", "x");
    await sandbox.commands.run("true");
    // `fsb reset web`: a new instance under the same name; the proxy no longer knows the old one.
    const record = plane.sandbox("web");
    plane.sandboxes.set("default/web", { ...record, status: { ...record.status, sandboxID: "k0l1m2n3o4p5q6r7s8t9" } });
    daemon.unknownInstances.add("a1b2c3d4e5f6g7h8i9j0");
    daemon.requests.length = 0;
    const replaced = (what: RegExp) => (error: unknown) => {
      assert.ok(error instanceof NotFoundError, String(error));
      assert.match(error.message, what);
      assert.match(
        error.message,
        / in sandbox web: sandbox web was reset or replaced: its instance a1b2c3d4e5f6g7h8i9j0, which this handle calls, is gone, and it runs as k0l1m2n3o4p5q6r7s8t9 now \(new files and processes; nothing was done there\)\. await sandbox\.getInfo\(\) moves this handle to the new instance, or FastSandbox\.connect\("web"\) gives a handle of it$/,
      );
      return true;
    };
    await assert.rejects(sandbox.commands.run("true"), replaced(/^starting command "true" in sandbox web: /));
    await assert.rejects(sandbox.commands.list(), replaced(/^listing processes in sandbox web: /));
    await assert.rejects(sandbox.files.read("/tmp/x"), replaced(/^reading \/tmp\/x in sandbox web: /));
    await assert.rejects(sandbox.files.exists("/tmp/x"), replaced(/^looking up \/tmp\/x in sandbox web: /));
    await assert.rejects(
      sandbox.files.watchDir("/tmp", () => undefined),
      replaced(/^watching \/tmp in sandbox web: /),
    );
    assert.deepEqual(
      daemon.targets.map((target) => target.sandboxId),
      ["a1b2c3d4e5f6g7h8i9j0"],
      "nothing was sent to the new instance",
    );
    assert.equal(sandbox.sandboxId, "a1b2c3d4e5f6g7h8i9j0", "the handle did not move by itself");
    await sandbox.getInfo();
    await sandbox.commands.run("true");
    assert.equal(daemon.targets.at(-1)?.sandboxId, "k0l1m2n3o4p5q6r7s8t9");
    // Deleted (no sandbox of that name any more): gone it is.
    plane.sandboxes.delete("default/web");
    daemon.unknownInstances.add("k0l1m2n3o4p5q6r7s8t9");
    await assert.rejects(
      sandbox.commands.run("true"),
      (error: unknown) => error instanceof NotFoundError && /\(sandbox web is gone: deleted or expired\)$/.test(error.message),
    );
  });

  it("list() returns the namespace's sandboxes as records", async () => {
    await FastSandbox.create({ connection, name: "one" });
    await FastSandbox.create({ connection, name: "two" });
    assert.deepEqual(
      (await FastSandbox.list({ connection })).map((s) => s.metadata.name),
      ["one", "two"],
    );
  });

  it("list({ labels }) returns only the sandboxes with all of those labels, and refuses labels that are not strings", async () => {
    await FastSandbox.create({ connection, name: "web-a", labels: { app: "web", team: "a" } });
    await FastSandbox.create({ connection, name: "web-b", labels: { app: "web", team: "b" } });
    await FastSandbox.create({ connection, name: "plain" });
    const names = async (labels: Record<string, string>) => (await FastSandbox.list({ connection, labels })).map((s) => s.metadata.name);
    assert.deepEqual(await names({ app: "web" }), ["web-a", "web-b"]);
    assert.deepEqual(await names({ app: "web", team: "b" }), ["web-b"]);
    assert.deepEqual(await names({ app: "db" }), []);
    assert.deepEqual(await names({}), ["web-a", "web-b", "plain"]);
    await assert.rejects(
      FastSandbox.list({ connection, labels: { app: 1 } as unknown as Record<string, string> }),
      (error: unknown) => error instanceof ValidationError && error.field === "labels.app",
    );
  });

  it("setTimeout() moves the expiry to now + ms, retrying when the sandbox changed in between", async () => {
    const sandbox = await FastSandbox.create({ connection });
    plane.conflictsToInject = 2;
    const before = Date.now();
    await sandbox.setTimeout(5_000);
    const after = Date.now();
    // 5 s from the moment of the (last) try, which lies between before and after.
    const expiresAt = Date.parse(plane.sandbox(sandbox.name).spec.expireTime ?? "");
    assert.ok(expiresAt >= before + 5_000 && expiresAt <= after + 5_000, `expires at ${expiresAt}, called in [${before}, ${after}]`);
    assert.equal(plane.updates.length, 1);
    assert.equal(Date.parse(sandbox.info.spec.expireTime ?? ""), Date.parse(plane.sandbox(sandbox.name).spec.expireTime ?? ""));
    plane.conflictsToInject = 10;
    await assert.rejects(sandbox.setTimeout(5_000), ConflictError);
    await assert.rejects(sandbox.setTimeout(0), (error: unknown) => error instanceof ValidationError && error.field === "timeoutMs");
  });

  it("setTimeout(null) removes the expiry (the sandbox lives until killed); 0, negative and absurd lifetimes are refused, pointing to null", async () => {
    const sandbox = await FastSandbox.create({ connection, timeoutMs: 60_000 });
    assert.ok(plane.sandbox(sandbox.name).spec.expireTime);
    await sandbox.setTimeout(null);
    assert.equal(plane.sandbox(sandbox.name).spec.expireTime, undefined);
    assert.equal(sandbox.info.spec.expireTime, undefined);
    assert.equal(plane.sandbox(sandbox.name).spec.image, "fast-sandbox.io/base:latest", "the rest of the spec is kept");
    for (const timeoutMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 1e300, "60000" as unknown as number]) {
      await assert.rejects(
        sandbox.setTimeout(timeoutMs),
        (error: unknown) => error instanceof ValidationError && error.field === "timeoutMs" && /or null for no end/.test(error.message),
      );
    }
    await assert.rejects(
      FastSandbox.create({ connection, timeoutMs: 1e300 }),
      (error: unknown) => error instanceof ValidationError && error.field === "timeoutMs",
    );
    assert.equal(plane.updates.length, 1);
  });

  it("kill() deletes it once; isRunning() asks the daemon, and is false once the proxy cannot find the sandbox", async () => {
    const sandbox = await FastSandbox.create({ connection });
    assert.equal(await sandbox.isRunning(), true);
    assert.equal(await sandbox.kill(), true);
    assert.deepEqual(plane.deletes, [sandbox.name]);
    assert.equal(await sandbox.kill(), false);
    daemon.gone = true;
    assert.equal(await sandbox.isRunning(), false);
  });

  it("logs() returns the output of its command, or hands it to onData", async () => {
    const sandbox = await FastSandbox.create({ connection });
    plane.logs = [new TextEncoder().encode("hello "), new TextEncoder().encode("world\n")];
    assert.equal(await sandbox.logs(), "hello world\n");
    const chunks: string[] = [];
    assert.equal(await sandbox.logs({ onData: (data) => chunks.push(new TextDecoder().decode(data)) }), "");
    assert.deepEqual(chunks, ["hello ", "world\n"]);
  });

  it("logs({ tail }) asks for the last lines (tail_lines; left out without it: all), and refuses a tail that is no whole number ≥ 0 before asking", async () => {
    const sandbox = await FastSandbox.create({ connection });
    plane.logs = [new TextEncoder().encode("last\n")];
    assert.equal(await sandbox.logs({ tail: 5 }), "last\n");
    assert.equal(await sandbox.logs({ tail: 0, follow: true }), "last\n");
    assert.equal(await sandbox.logs(), "last\n");
    for await (const chunk of connection.client.sandboxes.logs(sandbox.name, { tail: 1 })) void chunk;
    assert.deepEqual(
      plane.logsRequests.map(({ name, follow, tailLines }) => ({ name, follow, tailLines })),
      [
        { name: sandbox.name, follow: false, tailLines: 5 },
        { name: sandbox.name, follow: true, tailLines: 0 },
        { name: sandbox.name, follow: false, tailLines: undefined },
        { name: sandbox.name, follow: false, tailLines: 1 },
      ],
    );
    for (const tail of [-1, 2.5, Number.NaN]) {
      await assert.rejects(
        sandbox.logs({ tail }),
        (error: unknown) =>
          error instanceof ValidationError &&
          error.field === "tail" &&
          error.message === `tail: must be a whole number of lines ≥ 0 (at most 2147483647), got ${tail}`,
      );
    }
    assert.equal(plane.logsRequests.length, 4, "a refused tail asks nothing");
  });

  it("logs() keeps to requestTimeoutMs: the whole read, and a follow's wait for its first output when given one", async () => {
    const sandbox = await FastSandbox.create({ connection });
    const encoder = new TextEncoder();
    plane.logs = [encoder.encode("late\n")];
    plane.logDelaysMs = [10_000];
    for (const follow of [false, true]) {
      await assert.rejects(
        sandbox.logs({ follow, requestTimeoutMs: 50 }),
        (error: unknown) => error instanceof TimeoutError && /requestTimeoutMs/.test(error.message),
      );
    }
    const quick = new Connection({ transport: plane.transport, daemon: daemon.factory, requestTimeoutMs: 50 });
    await assert.rejects((await FastSandbox.connect(sandbox.name, { connection: quick })).logs(), TimeoutError, "the connection's deadline by default");
    // Once a follow has started, it lasts as long as the output comes.
    plane.logs = [encoder.encode("first "), encoder.encode("second\n")];
    plane.logDelaysMs = [0, 200];
    assert.equal(await sandbox.logs({ follow: true, requestTimeoutMs: 50 }), "first second\n");
    // A follow waits for the first output without a deadline unless given one (as `fsb logs -f`).
    plane.logDelaysMs = [200];
    assert.equal(await (await FastSandbox.connect(sandbox.name, { connection: quick })).logs({ follow: true }), "first second\n");
    let followed = "";
    for await (const chunk of quick.client.sandboxes.logs(sandbox.name, { follow: true })) followed += new TextDecoder().decode(chunk);
    assert.equal(followed, "first second\n");
  });

  it("create() refuses fields of the wrong type with a ValidationError naming the field, before asking anything", async () => {
    const refused = (field: string) => (error: unknown) => error instanceof ValidationError && error.field === field && /is not/.test(error.message);
    const wrong = <T>(value: unknown) => value as T;
    await assert.rejects(FastSandbox.create({ connection, envs: wrong({ A: 1 }) }), refused("envs.A"));
    await assert.rejects(FastSandbox.create({ connection, labels: wrong({ team: 7 }) }), refused("labels.team"));
    await assert.rejects(FastSandbox.create({ connection, command: wrong(["sleep", 1]) }), refused("command[1]"));
    await assert.rejects(FastSandbox.create({ connection, args: wrong("sleep 1") }), refused("args"));
    await assert.rejects(FastSandbox.create({ connection, name: wrong(5) }), refused("name"));
    await assert.rejects(connection.client.sandboxes.create({ pool: "default", image: "x", envs: wrong([{ name: "A", value: 1 }]) }), refused("envs[0].value"));
    assert.equal(plane.creates.length, 0);
  });

  it("create() with an aborted signal rejects with its reason", async () => {
    const controller = new AbortController();
    controller.abort(new Error("not now"));
    await assert.rejects(FastSandbox.create({ connection, image: "busybox", signal: controller.signal }), /not now/);
  });
});
