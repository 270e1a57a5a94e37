import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { FsbError, TimeoutError, UnauthenticatedError, UnavailableError, ValidationError } from "@fast-sandbox/sdk";
import { type ClusterCallContext, closeConnections, connect, connectOwnInstance, endpoint, explainClusterFailure, explainFailure } from "./connection.js";
import { files, processStartTime } from "./data-dir.js";

const dataDir = mkdtempSync(join(tmpdir(), "fsb-connection-spec-"));
after(() => rmSync(dataDir, { recursive: true, force: true }));
const OWN_URL = "http://127.0.0.1:7070";
writeFileSync(join(dataDir, "url"), `${OWN_URL}\n`);
writeFileSync(join(dataDir, "token"), "own-token-0123456789\n");

const saved = { FSB_URL: process.env.FSB_URL, FSB_TOKEN: process.env.FSB_TOKEN, FSB_TOKEN_FILE: process.env.FSB_TOKEN_FILE };
afterEach(() => {
  closeConnections();
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

describe("connect to the embedded Fast Sandbox", () => {
  it("keeps access tokens in the data directory when the URL in use is its own", async () => {
    delete process.env.FSB_URL;
    assert.equal((await connect({ dataDir })).dataDir, dataDir);
    process.env.FSB_URL = `${OWN_URL}/`;
    assert.equal((await connect({ dataDir })).dataDir, dataDir, "FSB_URL naming the same instance");
  });

  it("keeps none there for another instance's URL (FSB_URL or --url): its sandboxes are not the data directory's", async () => {
    process.env.FSB_URL = "http://127.0.0.1:7999";
    process.env.FSB_TOKEN = "other-token-0123456789";
    const fromEnv = await connect({ dataDir });
    assert.equal(fromEnv.client.url, "http://127.0.0.1:7999");
    assert.equal(fromEnv.dataDir, undefined);
    delete process.env.FSB_URL;
    assert.equal((await connect({ dataDir, url: "http://127.0.0.1:7999" })).dataDir, undefined);
  });

  it("keeps them in a data directory that serves no instance for a URL on this host (an instance started without fsb up), never for another host's", async () => {
    const bare = mkdtempSync(join(tmpdir(), "fsb-connection-spec-bare-"));
    try {
      process.env.FSB_TOKEN = "other-token-0123456789";
      assert.equal((await connect({ dataDir: bare, url: "http://127.0.0.1:7999" })).dataDir, bare);
      assert.equal((await connect({ dataDir: bare, url: "http://192.0.2.7:7070" })).dataDir, undefined);
    } finally {
      rmSync(bare, { recursive: true, force: true });
    }
  });

  it("takes the token from the file FSB_TOKEN_FILE names (a Pod's ServiceAccount token) when FSB_TOKEN is not set", () => {
    const tokenFile = join(dataDir, "sa-token");
    writeFileSync(tokenFile, "file-token-0123456789\n");
    delete process.env.FSB_TOKEN;
    process.env.FSB_TOKEN_FILE = tokenFile;
    assert.deepEqual(endpoint({ dataDir, url: "http://192.0.2.7:7070" }), { url: "http://192.0.2.7:7070", token: "file-token-0123456789" });
    process.env.FSB_TOKEN = "other-token-0123456789";
    assert.equal(endpoint({ dataDir, url: "http://192.0.2.7:7070" }).token, "other-token-0123456789", "FSB_TOKEN comes first");
    delete process.env.FSB_TOKEN;
    process.env.FSB_TOKEN_FILE = join(dataDir, "no-such-token");
    assert.throws(
      () => endpoint({ dataDir }),
      (error: unknown) => error instanceof ValidationError && error.field === "FSB_TOKEN_FILE" && /no-such-token cannot be read/.test(error.message),
    );
  });

  it("connectOwnInstance uses the data directory's URL and token whatever FSB_URL names", () => {
    process.env.FSB_URL = "http://127.0.0.1:7999";
    process.env.FSB_TOKEN = "other-token-0123456789";
    const own = connectOwnInstance(dataDir);
    assert.equal(own.url, OWN_URL);
    assert.equal(own.client.url, OWN_URL);
    assert.equal(own.dataDir, dataDir);
  });
});

describe("explainClusterFailure", () => {
  const context: ClusterCallContext = {
    url: "http://127.0.0.2:7070",
    endpointDescription:
      "the controller at 127.0.0.2:7070 (Pod controller-a), found through Service fast-sandbox-system/fast-sandbox-controller of context dev",
    controllerAddress: "127.0.0.2:7070 (Pod controller-a)",
    tokenSource: "Secret fast-sandbox-system/fast-sandbox-api-token",
    ownCredential: false,
    portForwardHint: "run 'kubectl -n fast-sandbox-system port-forward svc/fast-sandbox-controller 7070:7070' and pass --url http://127.0.0.1:7070",
    discovered: true,
  };

  it("takes the controller's refusal for the API token's, and leaves the sandbox proxy's refusal of an access token as the SDK said it", () => {
    const api = explainClusterFailure(new UnauthenticatedError("ListSandboxes: invalid token"), context);
    assert.match(api.message, /did not accept the API token from Secret fast-sandbox-system\/fast-sandbox-api-token: set FSB_TOKEN/);
    // What the SDK says of a daemon call the proxy answered 401 (`daemonCallError`).
    const access = new UnauthenticatedError(
      "looking up /etc/passwd in sandbox explore/r1: unauthenticated (the sandbox proxy refused the access token of sandbox explore/r1, or the daemon the user; after a rotation only the new token works)",
    );
    const explained = explainClusterFailure(access, context);
    assert.equal(explained, access);
    assert.doesNotMatch(explained.message, /Secret|restart the controller/);
  });

  it("says that nothing answers at the sandbox proxy's address, and which port-forward serves it", () => {
    const refused = new UnavailableError(
      "looking up /tmp/f.txt in sandbox explore/r1: connect ECONNREFUSED 127.0.0.1:7072 (sandbox explore/r1 is not reachable through the sandbox proxy: it may have been deleted, have expired, or not run yet)",
    );
    const explained = explainClusterFailure(refused, context);
    assert.ok(explained instanceof UnavailableError);
    assert.match(explained.message, /^looking up \/tmp\/f\.txt .*ECONNREFUSED 127\.0\.0\.1:7072.*; nothing answers at the sandbox proxy's address/);
    assert.match(explained.message, /kubectl -n fast-sandbox-system port-forward svc\/fast-sandbox-proxy 7072/);
    // The proxy answered (the sandbox is gone): the SDK's message stands.
    const gone = new UnavailableError(
      "reading /x in sandbox explore/r1: HTTP 503 (sandbox explore/r1 is not reachable through the sandbox proxy: it may have been deleted)",
    );
    assert.equal(explainClusterFailure(gone, context), gone);
  });
});

describe("explainFailure", () => {
  it("says that an address which answered in HTTP/1 does not speak the Fast Sandbox API, and on which port it listens", async () => {
    process.env.FSB_TOKEN = "other-token-0123456789";
    await connect({ dataDir, url: "http://127.0.0.1:7072" });
    // What the SDK rejects with when the peer answers the HTTP/2 preface in HTTP/1: Node's NghttpError, in Connect's error.
    const http2 = Object.assign(new Error("Protocol error"), { code: "ERR_HTTP2_ERROR" });
    const failure = new FsbError("internal", "Protocol error", { cause: new ConnectError("Protocol error", Code.Internal, undefined, undefined, http2) });
    const explained = explainFailure(failure);
    assert.ok(explained instanceof UnavailableError);
    assert.equal(
      explained.message,
      "http://127.0.0.1:7072 does not speak the Fast Sandbox API (HTTP/2; Protocol error): give the control plane's address, by default port 7070 " +
        "('fsb up --port'; in a cluster the controller's Service), not the sandbox proxy's or the E2B-compatible API's (7072 and 7073 by default)",
    );
    const other = new FsbError("internal", "boom");
    assert.equal(explainFailure(other), other);
  });

  it("names the CLI's --request-timeout where the SDK's deadline message names its requestTimeoutMs option", () => {
    const timedOut = new TimeoutError("ListSandboxes did not finish within 60000 ms (requestTimeoutMs); pass a larger requestTimeoutMs, or 0 for no limit");
    const explained = explainFailure(timedOut);
    assert.ok(explained instanceof TimeoutError);
    assert.equal(
      explained.message,
      "ListSandboxes did not finish within 60000 ms (--request-timeout); pass a larger --request-timeout (or FSB_REQUEST_TIMEOUT), or 0 for no limit",
    );
    const own = new TimeoutError("the command did not finish within 100 ms (timeoutMs) and was killed");
    assert.equal(explainFailure(own), own, "another option's deadline is left as it is");
  });

  it("says that the data directory's 'fsb up' is not running when its own URL refuses (killed or crashed), and how to start it again; another URL's failure as it is", async () => {
    const killed = mkdtempSync(join(tmpdir(), "fsb-connection-spec-killed-"));
    try {
      // What a `fsb up` killed with SIGKILL leaves: its lock, settings and url; nothing listens on port 1.
      const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 100)"], { stdio: "ignore" });
      await once(child, "spawn");
      const pid = child.pid ?? assert.fail("the child runs");
      const startTime = processStartTime(pid) ?? assert.fail("the child runs");
      await once(child, "exit");
      writeFileSync(files.lock(killed), `${JSON.stringify({ pid, startTime })}\n`);
      writeFileSync(files.url(killed), "http://127.0.0.1:1\n");
      writeFileSync(files.token(killed), "own-token-0123456789\n");
      writeFileSync(
        files.settings(killed),
        JSON.stringify({ containerdNamespace: "ns-x", containerdSocket: "/run/containerd/containerd.sock", cgroupRoot: "ns-x" }),
      );
      delete process.env.FSB_URL;
      delete process.env.FSB_TOKEN;
      const own = await connect({ dataDir: killed });
      const refused = await own.client.sandboxes.list().then(
        () => assert.fail("nothing listens on port 1"),
        (error: unknown) => FsbError.from(error),
      );
      assert.match(refused.message, /ECONNREFUSED 127\.0\.0\.1:1/);
      const explained = explainFailure(refused);
      assert.ok(explained instanceof UnavailableError);
      assert.equal(
        explained.message,
        `Fast Sandbox is not running for data directory ${killed}: its 'fsb up' (pid ${pid}) was killed or crashed and left its URL http://127.0.0.1:1 behind ` +
          `(${refused.message}); start it again with 'fsb up --detach --data-dir ${killed} --containerd-namespace ns-x' (it takes over the stale lock and ` +
          `adopts the sandboxes that still run), or run 'fsb down --data-dir ${killed}' to clear what it left`,
      );
      const answered = new UnavailableError("agent default-0 is unreachable");
      assert.equal(explainFailure(answered), answered, "an unavailable answer that names not the URL is the control plane's own");
      // A call cut off as the control plane stopped (fsb down): said so, not as the transport's words.
      const cut = new UnavailableError("Exec in web: the call was cancelled before it finished: http/2 stream closed with error code CANCEL (0x8)");
      assert.equal(
        explainFailure(cut).message,
        `Exec in web: Fast Sandbox at http://127.0.0.1:1 went away (http/2 stream closed with error code CANCEL (0x8)); it was stopped or restarted ` +
          `('fsb up --detach --data-dir ${killed} --containerd-namespace ns-x' starts it): run the command again`,
      );

      closeConnections();
      process.env.FSB_TOKEN = "other-token-0123456789";
      await connect({ dataDir: killed, url: "http://127.0.0.2:1" });
      const other = new UnavailableError("connect ECONNREFUSED 127.0.0.2:1");
      assert.equal(explainFailure(other), other, "another URL's failure says nothing of the data directory's 'fsb up'");
    } finally {
      rmSync(killed, { recursive: true, force: true });
    }
  });
});
