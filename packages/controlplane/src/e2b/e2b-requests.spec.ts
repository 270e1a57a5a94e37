import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ValidationError } from "@fast-sandbox/api";
import {
  DEFAULT_CONNECT_TIMEOUT_SECONDS,
  DEFAULT_CREATE_TIMEOUT_SECONDS,
  MAX_LIST_LIMIT,
  MAX_TIMEOUT_SECONDS,
  parseConnectBody,
  parseForkBody,
  parseListQuery,
  parseNewSandbox,
  parsePauseBody,
  parseResumeBody,
  parseSandboxId,
  parseTimeoutBody,
} from "./e2b-requests.js";

/** Asserts that `fn` fails with a ValidationError of `field` whose message matches `message`. */
function refuses(fn: () => unknown, field: string, message: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${String(error)}`);
    assert.equal(error.field, field);
    assert.match(error.message, message);
    return true;
  });
}

describe("E2B create requests (NewSandbox, NewSandboxV2)", () => {
  it("reads what E2B's JS SDK sends for Sandbox.create('base', {timeoutMs, metadata, envs})", () => {
    assert.deepEqual(parseNewSandbox({ templateID: "base", timeout: 300, metadata: { user: "abc" }, envVars: { FOO: "bar" } }), {
      templateID: "base",
      timeoutSeconds: 300,
      metadata: { user: "abc" },
      envVars: { FOO: "bar" },
      allowInternetAccess: undefined,
    });
  });

  it("reads what E2B's Python SDK sends: empty maps, autoPause false, null for what is unset; unknown fields are ignored", () => {
    const request = parseNewSandbox({
      templateID: "base",
      timeout: 60,
      metadata: {},
      envVars: {},
      autoPause: false,
      autoResume: null,
      mcp: null,
      network: null,
      secure: true,
      allow_internet_access: true,
      someFieldOfATomorrowsSdk: { anything: 1 },
    });
    assert.deepEqual(request, { templateID: "base", timeoutSeconds: 60, metadata: {}, envVars: {}, allowInternetAccess: true });
  });

  it("gives a create without a timeout E2B's default (300 s for v2, what the SDKs call; 15 s for the legacy route), and accepts 1 and the maximum, 24 hours", () => {
    assert.equal(parseNewSandbox({ templateID: "base" }).timeoutSeconds, 300);
    assert.equal(DEFAULT_CREATE_TIMEOUT_SECONDS, 300);
    assert.equal(parseNewSandbox({ templateID: "base" }, 15).timeoutSeconds, 15);
    assert.equal(parseNewSandbox({ templateID: "base", timeout: 1 }).timeoutSeconds, 1);
    assert.equal(parseNewSandbox({ templateID: "base", timeout: MAX_TIMEOUT_SECONDS }).timeoutSeconds, 86_400);
  });

  it("refuses a timeout that is not a whole number of seconds from 1 to 86400, saying what is allowed", () => {
    for (const timeout of [-1, 86_401, 1.5, "300", true, [], {}]) {
      refuses(() => parseNewSandbox({ templateID: "base", timeout }), "timeout", /whole number of seconds from 1 to 86400/);
    }
    // A sandbox ending at once: its create would wait for a daemon being removed (was: 20 s, then "retry").
    refuses(
      () => parseNewSandbox({ templateID: "base", timeout: 0 }),
      "timeout",
      /from 1 to 86400 .*at least 1: a sandbox ending at once would be removed.*got 0/,
    );
  });

  it("requires a templateID", () => {
    for (const templateID of [undefined, null, "", "  ", 7]) refuses(() => parseNewSandbox({ templateID }), "templateID", /is required.*"base"/);
  });

  it("refuses a body that is not a JSON object", () => {
    for (const body of [undefined, null, [], "base", 3]) refuses(() => parseNewSandbox(body), "", /must be a JSON object/);
  });

  it("takes metadata and envVars as maps of strings only, and env names a process can carry", () => {
    refuses(() => parseNewSandbox({ templateID: "base", metadata: ["a"] }), "metadata", /object of string values/);
    refuses(() => parseNewSandbox({ templateID: "base", metadata: { n: 1 } }), "metadata.n", /must be a string/);
    refuses(() => parseNewSandbox({ templateID: "base", envVars: { FOO: null } }), "envVars.FOO", /must be a string/);
    refuses(() => parseNewSandbox({ templateID: "base", envVars: { "A=B": "x" } }), "envVars.A=B", /not a usable variable name/);
    refuses(() => parseNewSandbox({ templateID: "base", envVars: { "": "x" } }), "envVars.", /not a usable variable name/);
    refuses(() => parseNewSandbox({ templateID: "base", envVars: { A: "x\0y" } }), "envVars.A", /NUL/);
    refuses(() => parseNewSandbox({ templateID: "base", metadata: { big: "x".repeat(70_000) } }), "metadata", /larger than 65536 bytes/);
  });

  it("refuses what E2B offers and Fast Sandbox does not have, instead of ignoring it", () => {
    refuses(
      () => parseNewSandbox({ templateID: "base", autoPause: true }),
      "autoPause",
      /pausing when the timeout passes is not supported.*POST \/sandboxes\/\{id\}\/pause/,
    );
    refuses(() => parseNewSandbox({ templateID: "base", autoResume: { enabled: true } }), "autoResume", /not supported/);
    refuses(() => parseNewSandbox({ templateID: "base", network: { denyOut: ["0.0.0.0/0"] } }), "network", /allow_internet_access: false/);
    refuses(() => parseNewSandbox({ templateID: "base", network: { allowPublicTraffic: true } }), "network.allowPublicTraffic", /E2B-Traffic-Access-Token/);
    refuses(() => parseNewSandbox({ templateID: "base", network: "open" }), "network", /must be an object/);
    // What Fast Sandbox always does: a sandbox's ports need its traffic access token.
    assert.ok(parseNewSandbox({ templateID: "base", network: { allowPublicTraffic: false, allowOut: [] } }));
    refuses(() => parseNewSandbox({ templateID: "base", volumeMounts: [{ name: "v", path: "/data" }] }), "volumeMounts", /not supported/);
    refuses(() => parseNewSandbox({ templateID: "base", mcp: { server: {} } }), "mcp", /not supported/);
    refuses(
      () => parseNewSandbox({ templateID: "base", envVars: { OPENAI_API_KEY: "${e2b.secrets.openai}" } }),
      "envVars.OPENAI_API_KEY",
      /secret placeholder .*Secret.fill\(\).*not supported; pass the value itself/,
    );
    refuses(() => parseNewSandbox({ templateID: "base", envVars: { AUTH: "Bearer ${e2b.secrets.token}" } }), "envVars.AUTH", /secret placeholder/);
    assert.deepEqual(parseNewSandbox({ templateID: "base", envVars: { PRICE: "${e2b.other}", DOLLAR: "$HOME" } }).envVars, {
      PRICE: "${e2b.other}",
      DOLLAR: "$HOME",
    });
    refuses(() => parseNewSandbox({ templateID: "base", secure: "yes" }), "secure", /true or false/);
    refuses(() => parseNewSandbox({ templateID: "base", allow_internet_access: 0 }), "allow_internet_access", /true or false/);
    assert.equal(parseNewSandbox({ templateID: "base", allow_internet_access: false }).allowInternetAccess, false);
    assert.ok(parseNewSandbox({ templateID: "base", network: {}, volumeMounts: [], autoResume: { enabled: false } }));
  });
});

describe("E2B timeout bodies ({timeout} of /timeout and /connect)", () => {
  it("requires the timeout unless the route has a default (the v2 connect, 300 s, whose body is optional)", () => {
    assert.equal(parseTimeoutBody({ timeout: 30 }), 30);
    refuses(() => parseTimeoutBody({}), "timeout", /is required/);
    refuses(() => parseTimeoutBody(undefined), "", /JSON object/);
    assert.equal(parseTimeoutBody(undefined, DEFAULT_CONNECT_TIMEOUT_SECONDS), 300);
    assert.equal(parseTimeoutBody({ memory: false }, DEFAULT_CONNECT_TIMEOUT_SECONDS), 300);
    refuses(() => parseTimeoutBody({ timeout: 1e9 }), "timeout", /from 0 to 86400/);
  });
});

describe("E2B list queries (GET /v2/sandboxes)", () => {
  const query = (text: string) => parseListQuery(new URLSearchParams(text));

  it("defaults to every state, newest first, 100 per page", () => {
    assert.deepEqual(query(""), {
      metadata: new Map(),
      states: undefined,
      template: undefined,
      startedAfter: undefined,
      order: "desc",
      limit: MAX_LIST_LIMIT,
      nextToken: undefined,
    });
  });

  it("takes states comma-joined (E2B's SDKs) or repeated, and refuses unknown ones", () => {
    assert.deepEqual(query("state=running,paused").states, new Set(["running", "paused"]));
    assert.deepEqual(query("state=running&state=paused").states, new Set(["running", "paused"]));
    refuses(() => query("state=running,stopped"), "state", /"stopped" is not a state; allowed: running, paused/);
  });

  it("takes a limit from 1 to 100 only", () => {
    assert.equal(query("limit=1").limit, 1);
    assert.equal(query("limit=100").limit, 100);
    for (const limit of ["0", "101", "-1", "2.5", "ten", ""]) refuses(() => query(`limit=${limit}`), "limit", /whole number from 1 to 100/);
  });

  it("takes order asc|desc, an RFC 3339 startedAfter, a template and the cursor", () => {
    const parsed = query("order=asc&startedAfter=2026-01-02T03:04:05Z&template=base&nextToken=abc");
    assert.equal(parsed.order, "asc");
    assert.equal(parsed.startedAfter?.toISOString(), "2026-01-02T03:04:05.000Z");
    assert.equal(parsed.template, "base");
    assert.equal(parsed.nextToken, "abc");
    refuses(() => query("order=newest"), "order", /allowed: asc, desc/);
    refuses(() => query("startedAfter=yesterday"), "startedAfter", /RFC 3339/);
  });
});

describe("E2B sandbox ids in paths", () => {
  it("are the id, or the legacy <id>-<clientID>", () => {
    assert.equal(parseSandboxId("k3x9q0m2zt7c1w8r5bn4"), "k3x9q0m2zt7c1w8r5bn4");
    assert.equal(parseSandboxId("k3x9q0m2zt7c1w8r5bn4-6532622b"), "k3x9q0m2zt7c1w8r5bn4");
  });

  it("are refused when they cannot be an id, saying what one looks like", () => {
    for (const id of ["", "K3X9", "a.b", "-6532622b", "%41"]) refuses(() => parseSandboxId(id), "sandboxID", /lower-case letters and digits/);
  });
});

describe("E2B pause, connect, resume and fork requests", () => {
  it("pause: takes an empty body, or what the SDKs send (memory true, requireHealthyGuest), and refuses a pause without memory", () => {
    parsePauseBody(undefined);
    parsePauseBody({});
    parsePauseBody({ memory: true, requireHealthyGuest: true });
    parsePauseBody({ memory: null });
    refuses(
      () => parsePauseBody({ memory: false }),
      "memory",
      /a pause without memory is not offered: a paused sandbox \(gVisor\) keeps its file changes in its memory.*omit memory or send true/,
    );
    refuses(() => parsePauseBody({ memory: "no" }), "memory", /true or false/);
    refuses(() => parsePauseBody([]), "", /JSON object/);
  });

  it("connect: the timeout, and a resume from the files alone (E2B's on_resume=reboot, memory false) refused", () => {
    assert.equal(parseConnectBody({ timeout: 60 }), 60);
    assert.equal(parseConnectBody(undefined, DEFAULT_CONNECT_TIMEOUT_SECONDS), DEFAULT_CONNECT_TIMEOUT_SECONDS);
    assert.equal(parseConnectBody({ memory: true }, DEFAULT_CONNECT_TIMEOUT_SECONDS), DEFAULT_CONNECT_TIMEOUT_SECONDS);
    refuses(() => parseConnectBody({ timeout: 60, memory: false }), "memory", /a resume without memory is not offered/);
    refuses(() => parseConnectBody({}), "timeout", /is required/);
  });

  it("resume (E2B's legacy): 15 s by default, autoPause refused", () => {
    assert.equal(parseResumeBody(undefined), 15);
    assert.equal(parseResumeBody({ timeout: 120, autoPause: false }), 120);
    refuses(() => parseResumeBody({ autoPause: true }), "autoPause", /not supported/);
    // A sandbox brought back to run for no time at all: E2B refuses it too.
    refuses(() => parseResumeBody({ timeout: 0 }), "timeout", /from 1 to 86400/);
  });

  it("fork: 1 copy ending in 15 s by default (E2B's), count from 1 to 20", () => {
    assert.deepEqual(parseForkBody(undefined), { timeoutSeconds: 15, count: 1 });
    assert.deepEqual(parseForkBody({}), { timeoutSeconds: 15, count: 1 });
    assert.deepEqual(parseForkBody({ timeout: 300, count: 3 }), { timeoutSeconds: 300, count: 3 });
    refuses(() => parseForkBody({ count: 0 }), "count", /from 1 to 20; got 0/);
    refuses(() => parseForkBody({ timeout: 0, count: 1 }), "timeout", /from 1 to 86400/);
    refuses(() => parseForkBody({ count: 21 }), "count", /from 1 to 20; got 21/);
    refuses(() => parseForkBody({ count: 1.5 }), "count", /whole number/);
    refuses(() => parseForkBody({ timeout: -1 }), "timeout", /from 1 to 86400/);
  });
});
