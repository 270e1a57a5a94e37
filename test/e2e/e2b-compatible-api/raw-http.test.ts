/**
 * The E2B-compatible control API of a real embedded Fast Sandbox (real containerd, agents, SQLite,
 * in-sandbox daemon), spoken in raw HTTP as E2B's SDKs speak it: a key from `fsb e2b env`; create
 * (v2 and v1) answers 201 once the sandbox's daemon answers, and the sandbox runs the pool's image
 * with the request's envVars; its envdAccessToken opens the daemon's port through the sandbox proxy
 * (E2b-Sandbox-Id / E2b-Sandbox-Port headers); list filters metadata encoded in E2B's layers, state
 * and pages with X-Next-Token; get (also by the legacy `<id>-<clientID>`); timeout shortens and
 * the expiry reaper kills the sandbox at its end; connect only extends; kill leaves nothing in
 * containerd, and a second kill is 404 with E2B's body. Wrong keys, bad fields, unknown templates
 * and a Shared pool get E2B's JSON errors saying what is wrong.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { BASE_IMAGE, REPO_ROOT } from "../../support/containerd.js";
import { recordedContainerOfSandbox } from "../../support/containerd-contents.js";
import { containerdLeftovers, pool, startEmbedded, waitFor, type EmbeddedCase } from "../../support/embedded.js";

const FSB = join(REPO_ROOT, "packages/cli/bin/fsb.js");
const DAEMON_PORT = "49983";
/** The daemon's version, from its one source: what create must report. */
const ENVD_VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, "packages/envd/version.json"), "utf8")) as { envdVersion: string }).envdVersion;

interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
}

interface E2bSandbox {
  templateID: string;
  sandboxID: string;
  clientID: string;
  envdVersion: string;
  envdAccessToken: string;
  domain: string | null;
}

interface ListedSandbox {
  templateID: string;
  sandboxID: string;
  clientID: string;
  startedAt: string;
  endAt: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  state: string;
  metadata: Record<string, string>;
  envdVersion: string;
}

/** Runs a program without blocking this process (the API and the proxy it talks to run here). */
function run(file: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, ...env }, encoding: "utf8", timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

/** The metadata query parameter as E2B's JS SDK encodes it (SandboxPaginator.nextItems, then the query's encoding). */
function metadataParameter(metadata: Record<string, string>): string {
  const pairs = Object.fromEntries(Object.entries(metadata).map(([k, v]) => [encodeURIComponent(k), encodeURIComponent(v)]));
  return `metadata=${encodeURIComponent(new URLSearchParams(pairs).toString())}`;
}

describe("the E2B-compatible API in raw HTTP", () => {
  let embedded: EmbeddedCase;
  let apiUrl: string;
  let sandboxUrl: string;
  let apiKey: string;

  /** `key` null: no X-API-KEY header. */
  async function call(method: string, path: string, body?: unknown, key: string | null = apiKey): Promise<Reply> {
    const response = await fetch(`${apiUrl}${path}`, {
      method,
      headers: { ...(key !== null ? { "X-API-KEY": key } : {}), ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: text ? (JSON.parse(text) as unknown) : undefined };
  }

  function assertError(reply: Reply, status: number, message: RegExp): void {
    assert.equal(reply.status, status, JSON.stringify(reply.body));
    const body = reply.body as { code: number; message: string };
    assert.deepEqual(Object.keys(body).sort(), ["code", "message"], "E2B's error body");
    assert.equal(body.code, status);
    assert.match(body.message, message);
  }

  async function create(body: Record<string, unknown>, path = "/v2/sandboxes"): Promise<E2bSandbox> {
    const reply = await call("POST", path, { templateID: "base", timeout: 300, ...body });
    assert.equal(reply.status, 201, JSON.stringify(reply.body));
    return reply.body as E2bSandbox;
  }

  /** The record of an E2B sandbox, through the fast-path API. */
  async function record(sandboxID: string) {
    return (await embedded.client.sandboxes.list()).find((sandbox) => sandbox.status?.sandboxID === sandboxID);
  }

  /** GET /health of the sandbox's daemon through the sandbox proxy, as E2B's SDKs reach it. */
  async function daemonHealth(sandboxID: string, accessToken?: string): Promise<number> {
    const response = await fetch(`${sandboxUrl}/health`, {
      headers: { "E2b-Sandbox-Id": sandboxID, "E2b-Sandbox-Port": DAEMON_PORT, ...(accessToken ? { "X-Access-Token": accessToken } : {}) },
    });
    await response.body?.cancel();
    return response.status;
  }

  before(async () => {
    embedded = await startEmbedded({
      name: "e2b-api",
      pools: [
        pool("default", { maxSandboxesPerPod: 8, sandboxResources: { cpu: "1500m", memory: "256Mi" } }),
        pool("shared", { maxSandboxesPerPod: 2, capacity: { poolMin: 0, poolMax: 1 }, network: { mode: "Shared" } }),
      ],
    });
    // `fsb e2b env`, evaluated by a shell, as a user types it.
    const env = await run(
      "bash",
      [
        "-c",
        `eval "$("${process.execPath}" "${FSB}" --url "${embedded.controlPlane.url}" e2b env)" && printf '%s\\n' "$E2B_API_URL" "$E2B_SANDBOX_URL" "$E2B_API_KEY"`,
      ],
      { FSB_TOKEN: embedded.token, FSB_DATA_DIR: embedded.dataDir },
    );
    assert.equal(env.code, 0, env.stderr);
    [apiUrl = "", sandboxUrl = "", apiKey = ""] = env.stdout.split("\n");
  });

  after(async () => {
    await embedded.stop();
  });

  it("fsb e2b env gives this instance's API and sandbox proxy, and a key of E2B's shape", () => {
    assert.equal(apiUrl, embedded.controlPlane.e2bUrl);
    assert.equal(sandboxUrl, embedded.controlPlane.proxyUrl);
    assert.match(apiKey, /^e2b_[0-9a-f]{40}$/);
  });

  it("answers /health without a key, and 401 with E2B's body to a missing, malformed or unknown key", async () => {
    const health = await fetch(`${apiUrl}/health`);
    assert.equal(health.status, 204);
    assertError(await call("GET", "/v2/sandboxes", undefined, null), 401, /X-API-KEY header is missing/);
    assertError(await call("GET", "/v2/sandboxes", undefined, "not-a-key"), 401, /e2b_ and 40 lower-case hex digits/);
    assertError(await call("POST", "/v2/sandboxes", { templateID: "base" }, `e2b_${"0".repeat(40)}`), 401, /was not issued by this server/);
    assert.deepEqual(await embedded.client.sandboxes.list(), [], "nothing was created");
  });

  it("fsb e2b revoke revokes a key at once (401 after), only that key, and exits 1 for a key it does not know", async () => {
    const issue = await run(process.execPath, [FSB, "--url", embedded.controlPlane.url, "e2b", "env"], {
      FSB_TOKEN: embedded.token,
      FSB_DATA_DIR: embedded.dataDir,
    });
    assert.equal(issue.code, 0, issue.stderr);
    const doomed = /E2B_API_KEY=(e2b_[0-9a-f]{40})/.exec(issue.stdout)?.[1] ?? "";
    assert.equal((await call("GET", "/v2/sandboxes", undefined, doomed)).status, 200);
    const revoke = (key: string) =>
      run("bash", ["-c", `printf '%s' "$KEY" | "${process.execPath}" "${FSB}" --url "${embedded.controlPlane.url}" e2b revoke -`], {
        FSB_TOKEN: embedded.token,
        FSB_DATA_DIR: embedded.dataDir,
        KEY: key,
      });
    const revoked = await revoke(doomed);
    assert.equal(revoked.code, 0, revoked.stderr);
    assertError(await call("GET", "/v2/sandboxes", undefined, doomed), 401, /was not issued by this server/);
    assert.equal((await call("GET", "/v2/sandboxes", undefined, apiKey)).status, 200, "the other key still works");
    const again = await revoke(doomed);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no such E2B API key/);
  });

  it("creates a sandbox that runs the pool's image with the envVars, answering once its daemon answers", async () => {
    const created = await create({ envVars: { GREETING: "hello from e2b" }, metadata: { suite: "raw-http" } });
    assert.deepEqual(Object.keys(created).sort(), [
      "alias",
      "clientID",
      "domain",
      "envdAccessToken",
      "envdVersion",
      "sandboxID",
      "templateID",
      "trafficAccessToken",
    ]);
    assert.equal(created.templateID, "base");
    assert.match(created.sandboxID, /^[a-z0-9]{20}$/);
    assert.equal(created.clientID, "6532622b");
    assert.equal(created.envdVersion, ENVD_VERSION);
    // E2B's getHost(port) is `<port>-<sandboxID>.<domain>`: the proxy's domain and port, which it routes.
    assert.equal(created.domain, `localhost:${new URL(sandboxUrl).port}`);
    const byHost = await new Promise<number>((resolve, reject) => {
      const request = http.request(
        {
          host: "127.0.0.1",
          port: new URL(sandboxUrl).port,
          path: "/health",
          headers: { host: `${DAEMON_PORT}-${created.sandboxID}.${created.domain}`, "x-access-token": created.envdAccessToken },
        },
        (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        },
      );
      request.on("error", reject);
      request.end();
    });
    assert.equal(byHost, 204);

    const stored = await record(created.sandboxID);
    assert.ok(stored, "a Sandbox of the default pool");
    assert.equal(stored.spec.poolRef, "default");
    assert.equal(stored.spec.image, BASE_IMAGE);
    assert.equal(stored.status?.phase, "Running");
    assert.ok(stored.status?.sandboxIP, "an address of its own");
    assert.equal(stored.status?.accessTokenHash, `sha256:${createHash("sha256").update(created.envdAccessToken).digest("hex")}`);
    assert.ok(!JSON.stringify(stored).includes(created.envdAccessToken), "the token itself is not stored");
    const echo = await embedded.client.sandboxes.exec(stored.metadata.name, ["sh", "-c", 'echo "$GREETING"']);
    assert.equal(echo.stdout, "hello from e2b\n");

    // The daemon answered before the create did, and its token opens it through the proxy.
    assert.equal(await daemonHealth(created.sandboxID, created.envdAccessToken), 204);
    assert.equal(await daemonHealth(created.sandboxID), 401);
    assert.equal(await daemonHealth(created.sandboxID, "wrong"), 401);

    // The legacy v1 route creates the same way.
    const v1 = await create({ metadata: { suite: "raw-http-v1" } }, "/sandboxes");
    assert.equal(await daemonHealth(v1.sandboxID, v1.envdAccessToken), 204);
    assert.equal((await call("DELETE", `/sandboxes/${v1.sandboxID}`)).status, 204);
    assert.equal((await call("DELETE", `/sandboxes/${created.sandboxID}`)).status, 204);
  });

  it("lists running sandboxes by metadata (E2B's layered encoding), state and template, in pages with X-Next-Token", async () => {
    const tricky = { "team & app": "a=b/c d%", run: "list" };
    const createdFrom = Date.now();
    const first = await create({ metadata: tricky });
    const createdBy = Date.now();
    const second = await create({ metadata: { run: "list" } });
    const ids = (reply: Reply) => (reply.body as ListedSandbox[]).map((item) => item.sandboxID).sort();

    const byTricky = await call("GET", `/v2/sandboxes?${metadataParameter({ "team & app": "a=b/c d%" })}`);
    assert.equal(byTricky.status, 200);
    assert.deepEqual(ids(byTricky), [first.sandboxID]);
    assert.deepEqual(ids(await call("GET", `/v2/sandboxes?${metadataParameter({ run: "list" })}&state=running`)), [first.sandboxID, second.sandboxID].sort());
    assert.deepEqual(ids(await call("GET", `/v2/sandboxes?${metadataParameter({ run: "list" })}&state=paused`)), []);
    assert.deepEqual(ids(await call("GET", `/v2/sandboxes?${metadataParameter({ run: "list" })}&template=other`)), []);

    const page1 = await call("GET", `/v2/sandboxes?${metadataParameter({ run: "list" })}&limit=1`);
    const next = page1.headers.get("x-next-token");
    assert.ok(next, "a cursor while more follow");
    const page2 = await call("GET", `/v2/sandboxes?${metadataParameter({ run: "list" })}&limit=1&nextToken=${encodeURIComponent(next)}`);
    assert.equal(page2.headers.get("x-next-token"), null, "none on the last page");
    assert.deepEqual([...ids(page1), ...ids(page2)].sort(), [first.sandboxID, second.sandboxID].sort());

    const [listed] = (await call("GET", `/v2/sandboxes?${metadataParameter({ "team & app": "a=b/c d%" })}`)).body as ListedSandbox[];
    assert.ok(listed);
    assert.deepEqual(listed.metadata, tricky);
    assert.equal(listed.state, "running");
    assert.deepEqual([listed.cpuCount, listed.memoryMB], [2, 256], "the pool's sandboxResources (1500m, 256Mi) in E2B's units");
    // create's timeout (300 s) from the server's clock while the create ran, in milliseconds on this machine's clock.
    const endAt = Date.parse(listed.endAt);
    assert.ok(createdFrom + 300_000 <= endAt && endAt <= createdBy + 300_000, `${listed.endAt}: 300 s after the create`);

    for (const sandbox of [first, second]) assert.equal((await call("DELETE", `/sandboxes/${sandbox.sandboxID}`)).status, 204);
  });

  it("gets a sandbox by id and by the legacy <id>-<clientID>; timeout sets the end, connect only extends it", async () => {
    const createdFrom = Date.now();
    const created = await create({ timeout: 600, metadata: { run: "lifecycle" } });
    const createdBy = Date.now();
    const detail = await call("GET", `/sandboxes/${created.sandboxID}-6532622b`);
    assert.equal(detail.status, 200);
    const info = detail.body as ListedSandbox & { envdAccessToken: string };
    assert.equal(info.sandboxID, created.sandboxID);
    assert.equal(info.envdAccessToken, created.envdAccessToken);
    assert.deepEqual(info.metadata, { run: "lifecycle" });
    const endOf = async () => Date.parse(((await call("GET", `/sandboxes/${created.sandboxID}`)).body as ListedSandbox).endAt);
    // `actual` is `timeoutMs` after the server's clock read while the call that set it ran, between
    // `fromMs` (just before it) and `byMs` (just after): milliseconds on this machine's clock, no slack.
    const endsAfter = (actual: number, timeoutMs: number, fromMs: number, byMs: number) =>
      assert.ok(
        fromMs + timeoutMs <= actual && actual <= byMs + timeoutMs,
        `${new Date(actual).toISOString()} in ${new Date(fromMs + timeoutMs).toISOString()}..${new Date(byMs + timeoutMs).toISOString()}`,
      );
    endsAfter(await endOf(), 600_000, createdFrom, createdBy);

    const timeoutFrom = Date.now();
    assert.equal((await call("POST", `/sandboxes/${created.sandboxID}/timeout`, { timeout: 120 })).status, 204);
    const timeoutBy = Date.now();
    const shorterEnd = await endOf();
    endsAfter(shorterEnd, 120_000, timeoutFrom, timeoutBy);

    const connectFrom = Date.now();
    const connected = await call("POST", `/sandboxes/${created.sandboxID}/connect`, { timeout: 30 });
    const connectBy = Date.now();
    assert.equal(connected.status, 200);
    assert.deepEqual(connected.body, created, "the same Sandbox, token included");
    // Only extends: the end the timeout set stays, unless connect's own (30 s on) is later, as it is
    // when the connect came more than 90 s after the timeout.
    const endAfterConnect = await endOf();
    if (endAfterConnect !== shorterEnd) {
      assert.ok(endAfterConnect > shorterEnd, `connect shortened the end to ${new Date(endAfterConnect).toISOString()}`);
      endsAfter(endAfterConnect, 30_000, connectFrom, connectBy);
    }
    const extendFrom = Date.now();
    assert.equal((await call("POST", `/v2/sandboxes/${created.sandboxID}/connect`, { timeout: 900 })).status, 200);
    const extendBy = Date.now();
    endsAfter(await endOf(), 900_000, extendFrom, extendBy);

    assertError(
      await call("POST", `/sandboxes/${created.sandboxID}/timeout`, { timeout: 86_401 }),
      400,
      /^timeout: must be a whole number of seconds from 0 to 86400/,
    );
    assert.equal((await call("DELETE", `/sandboxes/${created.sandboxID}`)).status, 204);
  });

  it("kills a sandbox whose end has passed (the expiry reaper), leaving nothing in containerd", async () => {
    const created = await create({ timeout: 300, metadata: { run: "reaper" } });
    assert.equal((await call("POST", `/sandboxes/${created.sandboxID}/timeout`, { timeout: 2 })).status, 204);
    await waitFor(async () => (await call("GET", `/sandboxes/${created.sandboxID}`)).status === 404, 20_000, "the sandbox reaped at its end");
    await waitFor(async () => (await record(created.sandboxID)) === undefined, 20_000, "its record gone");
    assert.ok(!containerdLeftovers(embedded.containerdNamespace).containers.includes(created.sandboxID));
    assertError(await call("POST", `/sandboxes/${created.sandboxID}/connect`, { timeout: 60 }), 404, /not found/);
  });

  it("kills with DELETE: 204, the container gone, the daemon gone behind the proxy (502), and 404 with E2B's body the second time", async () => {
    const created = await create({ metadata: { run: "kill" } });
    // A claimed prepared instance is relabelled with the sandbox id just after the agent answered.
    await recordedContainerOfSandbox(embedded.containerdNamespace, created.sandboxID);
    assert.ok(containerdLeftovers(embedded.containerdNamespace).containers.includes(created.sandboxID));
    assert.equal((await call("DELETE", `/sandboxes/${created.sandboxID}`)).status, 204);
    assert.ok(!containerdLeftovers(embedded.containerdNamespace).containers.includes(created.sandboxID));
    await waitFor(async () => (await daemonHealth(created.sandboxID, created.envdAccessToken)) === 502, 5000, "the proxy's 'sandbox not found'");
    assertError(await call("DELETE", `/sandboxes/${created.sandboxID}`), 404, new RegExp(`^sandbox ${created.sandboxID} not found`));
    assertError(await call("GET", `/sandboxes/${created.sandboxID}`), 404, /not found/);
  });

  it("refuses to pause or fork a sandbox of a runc template with 400, saying a gVisor template is needed; it runs on", async () => {
    const created = await create({ metadata: { run: "pause-runc" } });
    assertError(
      await call("POST", `/sandboxes/${created.sandboxID}/pause`, {}),
      400,
      /cannot be paused: its template "base" is pool default\/default, whose runtimeType is container.*a template whose pool has runtimeType gvisor/,
    );
    assertError(await call("POST", `/sandboxes/${created.sandboxID}/fork`, { count: 1 }), 400, /cannot be forked: .*runtimeType gvisor/);
    assert.equal(((await call("GET", `/sandboxes/${created.sandboxID}`)).body as { state: string }).state, "running");
    assert.equal(await daemonHealth(created.sandboxID, created.envdAccessToken), 204);
    assert.equal((await call("DELETE", `/sandboxes/${created.sandboxID}`)).status, 204);
  });

  it("refuses bad requests with E2B's JSON errors saying what is wrong and what is allowed, creating nothing", async () => {
    assertError(await call("POST", "/v2/sandboxes", "{"), 400, /not valid JSON/);
    assertError(await call("POST", "/v2/sandboxes", { timeout: 10 }), 400, /^templateID: is required/);
    assertError(await call("POST", "/v2/sandboxes", { templateID: "base", timeout: "10" }), 400, /^timeout: must be a whole number of seconds/);
    assertError(await call("POST", "/v2/sandboxes", { templateID: "base", envVars: { A: 1 } }), 400, /^envVars\.A: must be a string/);
    assertError(
      await call("POST", "/v2/sandboxes", { templateID: "base", autoPause: true }),
      400,
      /^autoPause: pausing when the timeout passes is not supported/,
    );
    assertError(await call("POST", "/v2/sandboxes", { templateID: "nosuch" }), 404, /template "nosuch" not found.*templates here: default, shared/);
    assertError(
      await call("POST", "/v2/sandboxes", { templateID: "shared" }),
      400,
      /pool default\/shared, whose network mode is Shared.*network\.mode Isolated/,
    );
    assertError(await call("GET", "/v2/sandboxes?limit=500"), 400, /^limit: must be a whole number from 1 to 100/);
    assertError(await call("GET", "/sandboxes/UPPER"), 400, /lower-case letters and digits/);
    assertError(await call("GET", "/v1/nothing"), 404, /no route GET \/v1\/nothing/);
    assertError(await call("POST", "/sandboxes/unknownunknownunknow/pause"), 404, /not found/);
    assertError(await call("POST", "/sandboxes/unknownunknownunknow/fork", { count: 0 }), 400, /^count: must be a whole number of copies from 1 to 20/);
    assert.deepEqual(await embedded.client.sandboxes.list(), []);
    assert.deepEqual(containerdLeftovers(embedded.containerdNamespace), { containers: [], tasks: [], snapshots: [] });
  });
});
