import assert from "node:assert/strict";
import { connect } from "node:net";
import { afterEach, beforeEach, describe, it } from "node:test";
import { pino } from "pino";
import { FsbError, TimeoutError, UnavailableError } from "@fast-sandbox/api";
import { hashApiKey, newApiKey } from "./api-key.js";
import { startE2bApiServer, type E2bApiServer } from "./e2b-api-server.js";
import { RateLimitedError } from "./e2b-errors.js";
import { E2B_DOMAIN, E2bFixture } from "./e2b.fixture.js";
import { MemoryApiKeyStore } from "./memory-api-key-store.js";

interface Reply {
  status: number;
  headers: Headers;
  /** The parsed JSON body, or undefined for none. */
  body: unknown;
}

describe("the E2B-compatible API over HTTP", () => {
  let e2b: E2bFixture;
  let server: E2bApiServer;
  let key: string;

  beforeEach(async () => {
    e2b = await new E2bFixture().start();
    const apiKeys = new MemoryApiKeyStore();
    key = newApiKey();
    await apiKeys.add(hashApiKey(key), new Date());
    server = await startE2bApiServer({ sandboxes: e2b.sandboxes, apiKeys, logger: pino({ level: "silent" }) });
  });

  afterEach(async () => {
    await server.close();
    await e2b.close();
  });

  async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = { "x-api-key": key }): Promise<Reply> {
    const response = await fetch(`${server.url}${path}`, {
      method,
      headers: { ...headers, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
      ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined };
  }

  /** Asserts E2B's error shape: `{code: status, message}` with the status in both. */
  function assertError(reply: Reply, status: number, message: RegExp): void {
    assert.equal(reply.status, status, JSON.stringify(reply.body));
    assert.equal(reply.headers.get("content-type"), "application/json; charset=utf-8");
    const body = reply.body as { code: number; message: string };
    assert.deepEqual(Object.keys(body).sort(), ["code", "message"]);
    assert.equal(body.code, status);
    assert.match(body.message, message);
  }

  const createBody = { templateID: "base", timeout: 300, metadata: { user: "abc" } };

  it("answers a request target that is no URL (Node's parser takes `http://[`) with 400, and keeps serving", async () => {
    const { port } = new URL(server.url);
    for (const target of ["http://[", "http://a:b/", "http://:99999/"]) {
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), "127.0.0.1", () => socket.end(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
        let text = "";
        socket.on("data", (chunk: Buffer) => (text += chunk.toString()));
        socket.on("end", () => resolve(text));
        socket.on("error", reject);
      });
      assert.match(answer, /^HTTP\/1\.1 400 /, target);
      assert.match(answer, /is not a URL/);
    }
    assert.equal((await call("GET", "/health", undefined, {})).status, 204);
  });

  it("answers /health with 204 and no key", async () => {
    const reply = await call("GET", "/health", undefined, {});
    assert.equal(reply.status, 204);
    assert.equal(reply.body, undefined);
  });

  it("refuses a missing, malformed or unknown X-API-KEY with 401 and E2B's error body, creating nothing", async () => {
    assertError(await call("POST", "/v2/sandboxes", createBody, {}), 401, /X-API-KEY header is missing.*fsb e2b env/);
    assertError(await call("POST", "/v2/sandboxes", createBody, { "x-api-key": "secret" }), 401, /e2b_ and 40 lower-case hex digits/);
    assertError(await call("GET", "/v2/sandboxes", undefined, { "x-api-key": newApiKey() }), 401, /was not issued by this server/);
    assertError(await call("DELETE", "/sandboxes/k3x9q0m2zt7c1w8r5bn4", undefined, { "X-Api-Key": `e2b_${"0".repeat(40)}` }), 401, /not issued/);
    assert.deepEqual(await e2b.stored(), []);
  });

  it("creates on POST /v2/sandboxes and POST /sandboxes: 201 with exactly E2B's Sandbox", async () => {
    for (const path of ["/v2/sandboxes", "/sandboxes"]) {
      const reply = await call("POST", path, createBody);
      assert.equal(reply.status, 201);
      const body = reply.body as Record<string, unknown>;
      assert.deepEqual(Object.keys(body).sort(), [
        "alias",
        "clientID",
        "domain",
        "envdAccessToken",
        "envdVersion",
        "sandboxID",
        "templateID",
        "trafficAccessToken",
      ]);
      assert.equal(body.clientID, "6532622b");
      assert.equal(body.domain, E2B_DOMAIN);
      assert.match(String(body.sandboxID), /^[a-z0-9]{20}$/);
    }
  });

  it("gives a create without a timeout E2B's default of each route: 300 s on POST /v2/sandboxes (what the SDKs call), 15 s on POST /sandboxes", async () => {
    for (const [path, seconds] of [
      ["/v2/sandboxes", 300],
      ["/sandboxes", 15],
    ] as const) {
      const { sandboxID } = (await call("POST", path, { templateID: "base" })).body as { sandboxID: string };
      const { startedAt, endAt } = (await call("GET", `/sandboxes/${sandboxID}`)).body as { startedAt: string; endAt: string };
      assert.equal(Math.round((Date.parse(endAt) - Date.parse(startedAt)) / 1000), seconds, path);
    }
  });

  it("lists on GET /v2/sandboxes, one page at a time, with X-Next-Token while more follow", async () => {
    for (let i = 0; i < 3; i++) assert.equal((await call("POST", "/v2/sandboxes", createBody)).status, 201);
    const first = await call("GET", "/v2/sandboxes?limit=2");
    assert.equal(first.status, 200);
    assert.equal((first.body as unknown[]).length, 2);
    assert.equal(first.headers.get("x-total-running"), "3");
    assert.equal((await call("GET", "/v2/sandboxes?state=paused")).headers.get("x-total-running"), null, "no running sandbox asked for, no count (as E2B)");
    const token = first.headers.get("x-next-token");
    assert.ok(token);
    const second = await call("GET", `/v2/sandboxes?limit=2&nextToken=${encodeURIComponent(token)}`);
    assert.equal((second.body as unknown[]).length, 1);
    assert.equal(second.headers.get("x-next-token"), null, "the last page has no cursor");
    const listed = [...(first.body as { sandboxID: string }[]), ...(second.body as { sandboxID: string }[])];
    assert.equal(new Set(listed.map((item) => item.sandboxID)).size, 3);
    const item = listed[0] as unknown as Record<string, unknown>;
    for (const field of [
      "templateID",
      "sandboxID",
      "clientID",
      "startedAt",
      "endAt",
      "cpuCount",
      "memoryMB",
      "diskSizeMB",
      "state",
      "envdVersion",
      "metadata",
    ]) {
      assert.ok(field in item, `ListedSandbox.${field}`);
    }
    assertError(await call("GET", "/v2/sandboxes?limit=101"), 400, /^limit: must be a whole number from 1 to 100/);
    assertError(await call("GET", "/v2/sandboxes?state=gone"), 400, /allowed: running, paused/);
  });

  it("lists every running sandbox on E2B's v1 GET /sandboxes (?metadata), and refreshes one's end (later, never sooner; 404 while paused, as a timeout)", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++)
      ids.push(((await call("POST", "/v2/sandboxes", { ...createBody, metadata: { user: i === 0 ? "zed" : "abc" } })).body as { sandboxID: string }).sandboxID);
    const all = await call("GET", "/sandboxes");
    assert.equal(all.status, 200);
    assert.equal(all.headers.get("x-next-token"), null, "v1 has no pages");
    assert.deepEqual(new Set((all.body as { sandboxID: string }[]).map((item) => item.sandboxID)), new Set(ids));
    const abc = await call("GET", `/sandboxes?metadata=${encodeURIComponent("user=abc")}`);
    assert.deepEqual(new Set((abc.body as { sandboxID: string }[]).map((item) => item.sandboxID)), new Set(ids.slice(1)));

    const id = ids[0]!;
    const endOf = async () => Date.parse(((await call("GET", `/sandboxes/${id}`)).body as { endAt: string }).endAt);
    const before = await endOf();
    assert.equal((await call("POST", `/sandboxes/${id}/refreshes`, { duration: 10 })).status, 204);
    assert.equal(await endOf(), before, "a refresh shorter than what is left changes nothing");
    assert.equal((await call("POST", `/sandboxes/${id}/timeout`, { timeout: 5 })).status, 204);
    const shortened = await endOf();
    assert.equal((await call("POST", `/sandboxes/${id}/refreshes`, { duration: 3600 })).status, 204);
    assert.ok((await endOf()) >= shortened + 3_000_000, "a refresh longer than what is left extends the end to now + duration");
    assert.equal((await call("POST", `/sandboxes/${id}/refreshes`)).status, 204, "the body is optional");
    assertError(await call("POST", `/sandboxes/${id}/refreshes`, { duration: 3601 }), 400, /^duration: must be whole seconds from 0 to 3600; got 3601/);
    assertError(await call("POST", `/sandboxes/${id}/refreshes`, { duration: "60" }), 400, /^duration: must be whole seconds/);
    assertError(await call("POST", "/sandboxes/nosuchsandbox/refreshes", { duration: 60 }), 404, /not found/);

    await e2b.addPool("gvisor", { runtimeType: "gvisor" });
    const pausable = ((await call("POST", "/v2/sandboxes", { ...createBody, templateID: "gvisor" })).body as { sandboxID: string }).sandboxID;
    assert.equal((await call("POST", `/sandboxes/${pausable}/pause`)).status, 204);
    assertError(await call("POST", `/sandboxes/${pausable}/refreshes`, { duration: 60 }), 404, /is paused, not running/);
    assert.ok(
      !((await call("GET", "/sandboxes")).body as { sandboxID: string }[]).some((item) => item.sandboxID === pausable),
      "v1 lists running sandboxes only",
    );
  });

  it("gets, sets the timeout, connects and kills by id, also in the legacy form <id>-<clientID>", async () => {
    const created = (await call("POST", "/v2/sandboxes", createBody)).body as { sandboxID: string; envdAccessToken: string };
    const id = created.sandboxID;
    const detail = await call("GET", `/sandboxes/${id}-6532622b`);
    assert.equal(detail.status, 200);
    assert.equal((detail.body as { sandboxID: string }).sandboxID, id);
    assert.deepEqual((detail.body as { metadata: unknown }).metadata, { user: "abc" });

    const timeout = await call("POST", `/sandboxes/${id}/timeout`, { timeout: 30 });
    assert.equal(timeout.status, 204);
    assert.equal(timeout.body, undefined);
    assertError(await call("POST", `/sandboxes/${id}/timeout`, {}), 400, /^timeout: is required/);
    assertError(await call("POST", `/sandboxes/${id}/timeout`, { timeout: -5 }), 400, /^timeout: must be a whole number of seconds from 0 to 86400/);

    const connected = await call("POST", `/sandboxes/${id}/connect`, { timeout: 600 });
    assert.equal(connected.status, 200);
    assert.deepEqual(connected.body, created);
    const v2 = await call("POST", `/v2/sandboxes/${id}/connect`);
    assert.equal(v2.status, 200, "the v2 connect's body is optional");

    assert.equal((await call("DELETE", `/sandboxes/${id}`)).status, 204);
    assertError(await call("DELETE", `/sandboxes/${id}`), 404, new RegExp(`^sandbox ${id} not found`));
    assertError(await call("GET", `/sandboxes/${id}`), 404, /not found/);
    assertError(await call("POST", `/sandboxes/${id}/connect`, { timeout: 60 }), 404, /not found/);
  });

  it("pauses (204, then 409; no metrics and no timeout to set while paused), connects to the paused sandbox (201, resumed; then 200), resumes (409 while it runs) and forks (201, one result per copy)", async () => {
    await e2b.addPool("gvisor", { runtimeType: "gvisor" });
    const created = (await call("POST", "/v2/sandboxes", { ...createBody, templateID: "gvisor" })).body as { sandboxID: string };
    const id = created.sandboxID;
    assertError(await call("POST", `/sandboxes/${id}/pause`, { memory: false }), 400, /^memory: a pause without memory is not offered/);
    const paused = await call("POST", `/sandboxes/${id}/pause`, {});
    assert.equal(paused.status, 204);
    assert.equal(paused.body, undefined);
    assertError(await call("POST", `/sandboxes/${id}/pause`), 409, new RegExp(`sandbox ${id} is already paused`));
    assert.equal(((await call("GET", `/sandboxes/${id}`)).body as { state: string }).state, "paused");
    assertError(await call("POST", `/sandboxes/${id}/fork`, { count: 1 }), 409, /paused and cannot be forked/);
    const pausedMetrics = await call("GET", `/sandboxes/${id}/metrics`);
    assert.equal(pausedMetrics.status, 200);
    assert.deepEqual(pausedMetrics.body, [], "a paused sandbox runs nowhere: no sample");
    // E2B's timeout route finds running sandboxes only: 404, on which SDKs before 2.6 resume.
    assertError(await call("POST", `/sandboxes/${id}/timeout`, { timeout: 60 }), 404, new RegExp(`sandbox ${id} is paused, not running`));
    assertError(await call("POST", `/v2/sandboxes/${id}/connect`, { timeout: 60, memory: false }), 400, /^memory: a resume without memory is not offered/);

    const resumed = await call("POST", `/v2/sandboxes/${id}/connect`, { timeout: 60 });
    assert.equal(resumed.status, 201, "resumed");
    assert.deepEqual(resumed.body, created);
    assert.equal((await call("POST", `/sandboxes/${id}/connect`, { timeout: 60 })).status, 200, "running already");
    assertError(await call("POST", `/sandboxes/${id}/resume`, { timeout: 60 }), 409, /already running/);
    assert.equal(((await call("GET", `/sandboxes/${id}/metrics`)).body as unknown[]).length, 1, "running again: one sample");

    const fork = await call("POST", `/sandboxes/${id}/fork`, { timeout: 60, count: 2 });
    assert.equal(fork.status, 201);
    const results = fork.body as { sandbox?: { sandboxID: string } }[];
    assert.equal(results.length, 2);
    assert.ok(results.every((result) => result.sandbox && result.sandbox.sandboxID !== id));
    assertError(await call("POST", `/sandboxes/${id}/fork`, { count: 21 }), 400, /^count: must be a whole number of copies from 1 to 20/);
  });

  it("answers GET /sandboxes/{id}/metrics with the agent's samples within ?start&end, one reading now when none is yet, and 400 for a bad range", async () => {
    const id = ((await call("POST", "/v2/sandboxes", createBody)).body as { sandboxID: string }).sandboxID;
    const reading = (timestampMs: number, cpuUsedMillis: number) => ({ ...e2b.agent.statsAnswer, timestampMs, cpuUsedMillis, nodeCpus: 2 });
    // No sample yet (younger than the agent's interval): a reading now.
    const fresh = (await call("GET", `/sandboxes/${id}/metrics`)).body as { timestampUnix: number }[];
    assert.deepEqual(
      fresh.map((metric) => metric.timestampUnix),
      [1_700_000_000],
    );
    e2b.agent.statsHistoryAnswer = [reading(1_700_000_000_000, 500), reading(1_700_000_005_000, 1000), reading(1_700_000_010_000, 2000)];
    const all = (await call("GET", `/sandboxes/${id}/metrics`)).body as { timestampUnix: number; cpuUsedPct: number; cpuCount: number }[];
    assert.deepEqual(
      all.map((metric) => [metric.timestampUnix, metric.cpuUsedPct, metric.cpuCount]),
      [
        [1_700_000_000, 25, 2],
        [1_700_000_005, 50, 2],
        [1_700_000_010, 100, 2],
      ],
    );
    const ranged = (await call("GET", `/sandboxes/${id}/metrics?start=1700000005&end=1700000009`)).body as { timestampUnix: number }[];
    assert.deepEqual(
      ranged.map((metric) => metric.timestampUnix),
      [1_700_000_005],
    );
    assert.deepEqual((await call("GET", `/sandboxes/${id}/metrics?start=1600000000&end=1600000001`)).body, [], "a range before any sample, and before now");
    assertError(await call("GET", `/sandboxes/${id}/metrics?start=yesterday`), 400, /^start: must be a time in whole seconds since the Unix epoch/);
    assertError(await call("GET", `/sandboxes/${id}/metrics?start=1700000010&end=1700000000`), 400, /^end: must not be before start \(1700000010\)/);
  });

  it("refuses to pause a sandbox of a runc template with 400, saying what is allowed", async () => {
    const created = (await call("POST", "/v2/sandboxes", createBody)).body as { sandboxID: string };
    assertError(await call("POST", `/sandboxes/${created.sandboxID}/pause`), 400, /cannot be paused: .*runtimeType is container.*runtimeType gvisor/);
    assertError(await call("POST", "/sandboxes/unknownunknownunknow/pause"), 404, /not found/);
  });

  it("answers every refusal as E2B's error body, saying what is wrong and what is allowed", async () => {
    assertError(await call("POST", "/v2/sandboxes", "{not json"), 400, /not valid JSON/);
    assertError(await call("POST", "/v2/sandboxes", {}), 400, /^templateID: is required/);
    assertError(await call("POST", "/v2/sandboxes", { templateID: "nosuch" }), 404, /template "nosuch" not found.*templates here: default/);
    assertError(await call("POST", "/v2/sandboxes", { templateID: "base", timeout: 1e6 }), 400, /from 1 to 86400/);
    assertError(await call("GET", "/sandboxes/NOT-AN-ID"), 400, /lower-case letters and digits/);
    assertError(await call("GET", "/nowhere"), 404, /no route GET \/nowhere; this E2B-compatible API serves .*POST \/v2\/sandboxes/);
    const wrongMethod = await call("PUT", "/v2/sandboxes", {});
    assertError(wrongMethod, 405, /PUT is not allowed on \/v2\/sandboxes; allowed: POST, GET/);
    assert.equal(wrongMethod.headers.get("allow"), "POST, GET");
  });

  it("maps the failures of a create to E2B's statuses: a daemon that does not answer is 504, the sandbox gone", async () => {
    e2b.envdFailure = new FsbError("deadline_exceeded", "the in-sandbox daemon did not answer within 20s");
    const timedOut = await call("POST", "/v2/sandboxes", createBody);
    assertError(timedOut, 504, /did not answer within 20s; the sandbox was deleted/);
    // E2B's Python SDK would create (and we delete) three times more without it.
    assert.equal(timedOut.headers.get("should-retry"), "false");
    e2b.envdFailure = new FsbError("unavailable", "no address");
    const unavailable = await call("POST", "/sandboxes", createBody);
    assertError(unavailable, 503, /no address/);
    assert.equal(unavailable.headers.get("should-retry"), "false");
    // No capacity (429): the SDK's own retry after its backoff may find a slot.
    e2b.envdFailure = new FsbError("no_capacity", "the pool is full");
    const full = await call("POST", "/sandboxes", createBody);
    assertError(full, 429, /the pool is full/);
    assert.equal(full.headers.get("should-retry"), null);
    assert.deepEqual(await e2b.stored(), []);
    // Elsewhere the SDKs' own retries stand: no header.
    const missing = await call("GET", "/sandboxes/nosuchsandbox0000000");
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get("should-retry"), null);
  });

  it("answers a create repeated with its Idempotency-Key with the same 201 body, and another key or none with another sandbox", async () => {
    const keyed = { "x-api-key": key, "idempotency-key": "3f0c2a6e-5b1d-4c8e-9a7f-0e1d2c3b4a59" };
    const first = await call("POST", "/v2/sandboxes", createBody, keyed);
    assert.equal(first.status, 201);
    const { sandboxID } = first.body as { sandboxID: string };
    // Its own status write landed: a repeat then finds the record Running at once (the fixture's clock stands still).
    assert.equal((await call("GET", `/sandboxes/${sandboxID}`)).status, 200);
    const again = await call("POST", "/v2/sandboxes", createBody, keyed);
    assert.equal(again.status, 201);
    assert.deepEqual(again.body, first.body, "the same sandbox, envdAccessToken and trafficAccessToken");
    const other = await call("POST", "/v2/sandboxes", createBody, { ...keyed, "idempotency-key": "another-key" });
    const unkeyed = await call("POST", "/v2/sandboxes", createBody);
    const ids = [first, other, unkeyed].map((reply) => (reply.body as { sandboxID: string }).sandboxID);
    assert.equal(new Set(ids).size, 3);
    assert.equal((await e2b.stored()).length, 3);
  });

  it("refuses a repeat with another body with 409 and E2B's error_code idempotency_request_mismatch, changing nothing", async () => {
    const keyed = { "x-api-key": key, "idempotency-key": "key-used-twice" };
    const first = await call("POST", "/v2/sandboxes", createBody, keyed);
    const { sandboxID } = first.body as { sandboxID: string };
    assert.equal((await call("GET", `/sandboxes/${sandboxID}`)).status, 200);
    const mismatch = await call("POST", "/v2/sandboxes", { ...createBody, timeout: 60 }, keyed);
    assert.equal(mismatch.status, 409);
    const body = mismatch.body as { code: number; message: string; error_code: string };
    assert.equal(body.code, 409);
    assert.equal(body.error_code, "idempotency_request_mismatch");
    assert.match(body.message, new RegExp(`^Idempotency-Key was used before for a different create request \\(that request made sandbox ${sandboxID}\\)`));
    assert.equal(mismatch.headers.get("should-retry"), null, "409: the SDKs do not retry it");
    // The legacy route's default timeout (15 s) differs from the first's 300: another request too.
    const { timeout: _timeout, ...untimed } = createBody;
    assert.equal((await call("POST", "/sandboxes", untimed, keyed)).status, 409);
    assert.equal((await e2b.stored()).length, 1);
  });

  it("refuses an Idempotency-Key E2B's SDKs would refuse with 400, saying what a key is, creating nothing; takes one of 255 characters", async () => {
    for (const [value, message] of [
      ["Upper-Case", /^Idempotency-Key: may hold only lower-case letters, digits and hyphens \(e\.g\. a lower-case UUID\); got "Upper-Case"$/],
      ["under_score", /may hold only lower-case letters, digits and hyphens/],
      ["", /^Idempotency-Key: must be 1 to 255 characters \(e\.g\. a lower-case UUID\); got 0$/],
      ["a".repeat(256), /must be 1 to 255 characters .*got 256$/],
    ] as const) {
      assertError(await call("POST", "/v2/sandboxes", createBody, { "x-api-key": key, "idempotency-key": value }), 400, message);
    }
    assert.deepEqual(await e2b.stored(), []);
    const longest = await call("POST", "/v2/sandboxes", createBody, { "x-api-key": key, "idempotency-key": "a".repeat(255) });
    assert.equal(longest.status, 201);
  });

  it("leaves the SDKs' retry of a create whose API key could not be checked (503): nothing was started", async () => {
    const unreachable = new MemoryApiKeyStore();
    unreachable.has = () => Promise.reject(new UnavailableError("cannot look up the E2B API key Secret: the Kubernetes API server is unreachable"));
    const server503 = await startE2bApiServer({ sandboxes: e2b.sandboxes, apiKeys: unreachable, logger: pino({ level: "silent" }) });
    try {
      const response = await fetch(`${server503.url}/v2/sandboxes`, {
        method: "POST",
        headers: { "x-api-key": key, "content-type": "application/json" },
        body: JSON.stringify(createBody),
      });
      assert.equal(response.status, 503);
      assert.equal(response.headers.get("should-retry"), null);
      assert.match(((await response.json()) as { message: string }).message, /Kubernetes API server is unreachable/);
    } finally {
      await server503.close();
    }
  });

  it("lets browsers call it: a CORS preflight is 204 without a key, and every answer allows any origin and shows the paging headers", async () => {
    const preflight = await fetch(`${server.url}/v2/sandboxes`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example", "access-control-request-method": "POST", "access-control-request-headers": "x-api-key, content-type" },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
    assert.equal(preflight.headers.get("access-control-allow-headers"), "x-api-key, content-type");
    assert.match(preflight.headers.get("access-control-allow-methods") ?? "", /POST/);
    assert.equal((await call("POST", "/v2/sandboxes", createBody)).headers.get("access-control-allow-origin"), "*");
    const list = await call("GET", "/v2/sandboxes");
    assert.equal(list.headers.get("access-control-allow-origin"), "*");
    assert.match(list.headers.get("access-control-expose-headers") ?? "", /X-Next-Token/);
    const refused = await call("GET", "/v2/sandboxes", undefined, {});
    assert.equal(refused.status, 401, "a request without a key is refused still");
    assert.equal(refused.headers.get("access-control-allow-origin"), "*", "so that the browser shows the refusal");
    assertError(await call("OPTIONS", "/v2/sandboxes"), 405, /OPTIONS is not allowed/);
  });

  it("answers E2B's template alias lookup (Template.exists) for the pools of its namespace and base: 200, else 404", async () => {
    for (const name of ["base", "default"]) {
      const found = await call("GET", `/templates/aliases/${name}`);
      assert.equal(found.status, 200);
      assert.deepEqual(found.body, { templateID: name, public: false });
    }
    assertError(await call("GET", "/templates/aliases/nosuch"), 404, /template "nosuch" not found.*templates here: default/);
    assertError(await call("GET", "/templates/aliases/%E0%A4%A"), 400, /not valid percent-encoding/);
    assertError(await call("GET", "/templates/aliases/base", undefined, {}), 401, /X-API-KEY header is missing/);
    // Managing aliases stays unsupported.
    assertError(await call("DELETE", "/templates/aliases/base"), 501, /^templates/);
  });

  it("answers E2B's routes it does not offer with 501 saying what is not supported (not 404, which the SDKs read as not found), after the key; unknown paths stay 404", async () => {
    const id = ((await call("POST", "/v2/sandboxes", createBody)).body as { sandboxID: string }).sandboxID;
    for (const [method, path, message] of [
      ["PUT", `/sandboxes/${id}/network`, /^changing a sandbox's network rules \(updateNetwork\) is not supported by Fast Sandbox's E2B-compatible API; /],
      ["POST", `/sandboxes/${id}/snapshots`, /^snapshots are not supported by Fast Sandbox's E2B-compatible API; use pause and resume \(connect\).* or fork/],
      ["GET", "/snapshots?sandboxID=x", /^snapshots are not supported/],
      [
        "DELETE",
        "/templates/snap-123",
        /^templates \(and the snapshots E2B keeps as templates\) are not managed through Fast Sandbox's E2B-compatible API; a template is a pool/,
      ],
      ["GET", "/templates", /^templates/],
      ["POST", "/v3/templates", /^templates/],
      ["GET", "/v2/templates/base/builds/b1/status", /^templates/],
      ["GET", "/volumes", /^volumes are not supported/],
      ["GET", "/sandboxes/metrics?sandbox_ids=abc", /^the metrics of several sandboxes at once are not served/],
      ["DELETE", "/volumes/vol-1", /^volumes are not supported/],
      // Secret.create, list, getInfo, exists, update, destroy: a 404 made exists() and destroy() false.
      ["POST", "/secrets", /^secrets are not supported by Fast Sandbox's E2B-compatible API: nothing resolves a Secret.fill\(\) placeholder/],
      ["GET", "/secrets?limit=50", /^secrets are not supported/],
      ["GET", "/secrets/openai", /^secrets are not supported/],
      ["DELETE", "/secrets/openai", /^secrets are not supported/],
      ["GET", `/sandboxes/${id}/logs`, /^sandbox logs are not served by Fast Sandbox's E2B-compatible API/],
      ["GET", `/v2/sandboxes/${id}/logs`, /^sandbox logs are not served/],
    ] as const) {
      const reply = await call(method, path, method === "GET" || method === "DELETE" ? undefined : {});
      assertError(reply, 501, message);
      assert.equal(reply.headers.get("should-retry"), null);
      assertError(await call(method, path, undefined, {}), 401, /X-API-KEY header is missing/);
    }
    assertError(await call("GET", "/templatesx"), 404, /no route GET \/templatesx; .*templates, volumes, secrets and logs answer 501/);
    assertError(await call("GET", `/sandboxes/${id}/nothing`), 404, /no route/);
    assert.equal(((await call("GET", `/sandboxes/${id}`)).body as { state: string }).state, "running", "the sandbox is untouched");
  });

  it("answers a pause that got no answer with 503 and Should-Retry: false: a retry would find it paused and report 409 (already paused)", async () => {
    await e2b.addPool("gvisor", { runtimeType: "gvisor" });
    const id = ((await call("POST", "/v2/sandboxes", { ...createBody, templateID: "gvisor" })).body as { sandboxID: string }).sandboxID;
    const agent = e2b.checkpointingAgent("gvisor");
    agent.checkpointError = new TimeoutError("CreateCheckpoint did not answer within 120000 ms");
    agent.savesLate = true;
    const unanswered = await call("POST", `/sandboxes/${id}/pause`);
    assertError(unanswered, 503, /got no answer .*stays Paused/);
    assert.equal(unanswered.headers.get("should-retry"), "false");
    assertError(await call("POST", `/sandboxes/${id}/pause`), 409, /already paused/);
    agent.finishLateSave();
  });

  it("answers a spent limit with 429, Retry-After and E2B's error body (E2B's SDKs wait and retry)", async () => {
    const throttled = new MemoryApiKeyStore();
    throttled.has = () => Promise.reject(new RateLimitedError("too many requests with API keys this server does not know; retry in 3 s", 3));
    const limited = await startE2bApiServer({ sandboxes: e2b.sandboxes, apiKeys: throttled, logger: pino({ level: "silent" }) });
    try {
      const response = await fetch(`${limited.url}/v2/sandboxes`, { headers: { "x-api-key": newApiKey() } });
      assert.equal(response.status, 429);
      assert.equal(response.headers.get("retry-after"), "3");
      assert.match(response.headers.get("access-control-expose-headers") ?? "", /Retry-After/);
      assert.deepEqual(await response.json(), { code: 429, message: "too many requests with API keys this server does not know; retry in 3 s" });
    } finally {
      await limited.close();
    }
  });

  it("answers an internal error with 500 and no detail but a request id, and logs the error whole under that id", async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const keys = new MemoryApiKeyStore();
    await keys.add(hashApiKey(key), new Date());
    const server500 = await startE2bApiServer({ sandboxes: e2b.sandboxes, apiKeys: keys, logger });
    e2b.sandboxes.get = () => Promise.reject(new Error("ENOENT: no such file or directory, open '/var/lib/fast-sandbox/state.db'"));
    try {
      const response = await fetch(`${server500.url}/sandboxes/k3x9q0m2zt7c1w8r5bn4`, { headers: { "x-api-key": key } });
      assert.equal(response.status, 500);
      const body = (await response.json()) as { code: number; message: string };
      assert.equal(body.code, 500);
      const match = /^internal error \(see the control plane's log, request ([0-9a-f]{16})\)$/.exec(body.message);
      assert.ok(match, body.message);
      const line = lines.find((entry) => entry.requestId === match[1]);
      assert.ok(line, "logged under the answer's request id");
      assert.equal(line.msg, "E2B API request failed");
      assert.equal(line.path, "/sandboxes/k3x9q0m2zt7c1w8r5bn4");
      assert.match(
        String((line.err as { message?: string } | undefined)?.message),
        /ENOENT: no such file or directory, open '\/var\/lib\/fast-sandbox\/state.db'/,
      );
    } finally {
      await server500.close();
    }
  });

  it("refuses a body larger than 1 MiB", async () => {
    assertError(await call("POST", "/v2/sandboxes", JSON.stringify({ templateID: "base", pad: "x".repeat(1_100_000) })), 400, /larger than 1048576 bytes/);
  });
});
