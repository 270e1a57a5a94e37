/**
 * The E2B-compatible control API over HTTP (JSON bodies), on a port of its own beside the fast-path
 * API (embedded default 127.0.0.1:7073), so that E2B's official SDKs run against Fast Sandbox with
 * only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set:
 *
 *   GET    /health                          204, no key needed
 *   POST   /sandboxes, /v2/sandboxes        201 Sandbox (once the sandbox's daemon answers); with an `Idempotency-Key`
 *                                           a repeat gets the same sandbox, 409 for another body (e2b-idempotency.ts)
 *   GET    /v2/sandboxes                    200 [ListedSandbox], X-Next-Token while more pages follow
 *   GET    /sandboxes                       200 [ListedSandbox]: every running one (?metadata), E2B's v1 list (SDKs 1.x)
 *   GET    /sandboxes/{id}                  200 SandboxDetail
 *   GET    /sandboxes/{id}/metrics          200 [SandboxMetric]: its agent's samples within ?start&end (none while paused)
 *   DELETE /sandboxes/{id}                  204
 *   POST   /sandboxes/{id}/timeout          204 ({"timeout": seconds}: end = now + timeout)
 *   POST   /sandboxes/{id}/refreshes        204 ({"duration": 0…3600 s, 15 by default}: end extended to now + duration, never shortened; 404 while paused)
 *   POST   /sandboxes/{id}/connect          200 Sandbox ({"timeout": seconds}: end extended, never shortened),
 *                                           201 when it was paused and is resumed (end = now + timeout)
 *   POST   /v2/sandboxes/{id}/connect       the same (body optional, timeout 300 by default)
 *   POST   /sandboxes/{id}/pause            204 (gVisor templates; 409 when it is paused already)
 *   POST   /sandboxes/{id}/resume           201 Sandbox (E2B's legacy resume; 409 when it runs)
 *   POST   /sandboxes/{id}/fork             201 [{sandbox} | {error}] ({"timeout", "count"}: one result per copy)
 *
 * E2B's routes this server does not offer (network updates, snapshots, templates, volumes, logs)
 * answer 501 saying so; any other path is 404.
 *
 * `{id}` is E2B's sandbox id, or its legacy form `<id>-<clientID>`. Every request but `/health`
 * needs an issued API key in `X-API-KEY`. Browsers may call it from any origin (E2B's JS SDK runs in
 * browsers too): a CORS preflight is answered 204, every answer allows any origin — the key travels
 * in a header, never a cookie, so a page without it can do nothing. Every error is `{"code": <status>, "message": "…"}`: this
 * file is the API's one error edge (e2b-errors.ts).
 */
import type http from "node:http";
import { UnauthenticatedError, ValidationError, listenCleartext, type HttpHandler } from "@fast-sandbox/api";
import type { Logger } from "pino";
import { hashApiKey, isWellFormedApiKey } from "./api-key.js";
import type { ApiKeyStore } from "./api-key-store.js";
import { e2bError, e2bErrorOf, newRequestId, type E2bError } from "./e2b-errors.js";
import { IDEMPOTENCY_KEY_HEADER, parseIdempotencyKey } from "./e2b-idempotency.js";
import {
  DEFAULT_CONNECT_TIMEOUT_SECONDS,
  parseConnectBody,
  parseForkBody,
  parseListQuery,
  parseRefreshBody,
  parseV1ListQuery,
  parseMetricsQuery,
  parseNewSandbox,
  DEFAULT_CREATE_TIMEOUT_SECONDS,
  DEFAULT_LEGACY_CREATE_TIMEOUT_SECONDS,
  parsePauseBody,
  parseResumeBody,
  parseSandboxId,
  parseTimeoutBody,
} from "./e2b-requests.js";
import type { E2bSandboxes } from "./e2b-sandboxes.js";

/** Largest request body accepted (a create with its metadata and environment is a few KiB). */
const MAX_BODY_BYTES = 1024 * 1024;

type HttpRequest = Parameters<HttpHandler>[0];
type HttpResponse = Parameters<HttpHandler>[1];

export interface E2bApiServerOptions {
  sandboxes: E2bSandboxes;
  apiKeys: ApiKeyStore;
  /** @default "127.0.0.1" */
  host?: string;
  /** @default 0 (any free port) */
  port?: number;
  logger: Logger;
}

export interface E2bApiServer {
  /** http://host:port, E2B's E2B_API_URL. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** What a route answers: a status and a JSON body (none for 204), and headers. */
interface Answer {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

interface Call {
  /** The path's sandbox id, when the route has one. */
  sandboxID: string;
  /** The path's named segment (URI-decoded), when the route has one that is not a sandbox id (`segment: true`). */
  segment: string;
  query: URLSearchParams;
  headers: HttpRequest["headers"];
  body: () => Promise<unknown>;
  /** Aborts when the client goes away before the answer. */
  signal: AbortSignal;
}

interface Route {
  /** The HTTP method; `*`: any (a route that answers every method alike). */
  method: string;
  pattern: RegExp;
  /** False: no API key needed. @default true */
  authenticated?: boolean;
  /** The pattern's group is a name of another kind (Call.segment), not a sandbox id. @default false */
  segment?: boolean;
  /**
   * Its failure is final for E2B's SDKs (Python's retries 429, 502, 503 and 504 up to three times
   * unless told `Should-Retry: false`): a create, resume or fork that failed has removed what it
   * started, and trying again at once would start and remove again under the same pressure, and
   * end in the client's timeout instead of this answer. A pause that got no answer (503) has left
   * the sandbox Paused until the control plane settles it (reconcile/pause-settler.ts; a resume
   * settles it too): a retry would find it paused and answer 409, which
   * the SDKs report as "already paused", hiding that the pause's outcome is unknown. Only the
   * route's own failures are final: one before it ran (the API key could not be checked) started
   * nothing, and the SDKs' retry stands. @default false
   */
  final?: boolean;
  handle(call: Call): Promise<Answer>;
}

/**
 * What E2B's SDKs retry by themselves (429 too) unless the answer says `Should-Retry: false`, and a
 * final route's failure answers with that: not 429 (no capacity: nothing was started, and a retry
 * after the SDK's backoff may find a slot).
 */
const RETRIED_FAILURES: ReadonlySet<number> = new Set([502, 503, 504]);

const ID = "([^/]+)";

function routes(sandboxes: E2bSandboxes): Route[] {
  // A create without a timeout gets each route's E2B default: 300 s (v2, what the SDKs call), 15 s (the legacy route).
  const create =
    (defaultTimeoutSeconds: number) =>
    async (call: Call): Promise<Answer> => {
      const idempotencyKey = parseIdempotencyKey(call.headers[IDEMPOTENCY_KEY_HEADER]);
      return { status: 201, body: await sandboxes.create(parseNewSandbox(await call.body(), defaultTimeoutSeconds), call.signal, idempotencyKey) };
    };
  // A connect answers 201 when it resumed a paused sandbox, 200 when the sandbox ran already (as E2B's API).
  const connect = async (call: Call, timeoutOf: (body: unknown) => number): Promise<Answer> => {
    const { sandbox, resumed } = await sandboxes.connect(call.sandboxID, timeoutOf(await call.body()), call.signal);
    return { status: resumed ? 201 : 200, body: sandbox };
  };
  return [
    { method: "GET", pattern: /^\/health$/, authenticated: false, handle: () => Promise.resolve({ status: 204 }) },
    // Template.exists(name) (and aliasExists): 200 when the name is a template here (a pool, or base), else 404 (false).
    {
      method: "GET",
      pattern: /^\/templates\/aliases\/([^/]+)$/,
      segment: true,
      handle: async (call) => ({ status: 200, body: await sandboxes.templateAlias(call.segment) }),
    },
    // Before GET /sandboxes/{id}, whose sandbox `metrics` it would be (404, which the SDKs read as gone).
    { method: "GET", pattern: /^\/sandboxes\/metrics$/, handle: () => Promise.resolve(errorAnswer(e2bError(501, SEVERAL_METRICS_UNSUPPORTED))) },
    { method: "POST", pattern: /^\/sandboxes$/, final: true, handle: create(DEFAULT_LEGACY_CREATE_TIMEOUT_SECONDS) },
    { method: "POST", pattern: /^\/v2\/sandboxes$/, final: true, handle: create(DEFAULT_CREATE_TIMEOUT_SECONDS) },
    {
      method: "GET",
      pattern: /^\/v2\/sandboxes$/,
      handle: async (call) => {
        const { page, totalRunning } = await sandboxes.list(parseListQuery(call.query));
        return {
          status: 200,
          body: page.items,
          headers: {
            ...(totalRunning !== undefined ? { "x-total-running": String(totalRunning) } : {}),
            ...(page.nextToken ? { "x-next-token": page.nextToken } : {}),
          },
        };
      },
    },
    {
      method: "GET",
      pattern: /^\/sandboxes$/,
      handle: async (call) => ({ status: 200, body: (await sandboxes.list(parseV1ListQuery(call.query))).page.items }),
    },
    {
      method: "POST",
      pattern: new RegExp(`^/sandboxes/${ID}/refreshes$`),
      handle: async (call) => {
        await sandboxes.refresh(call.sandboxID, parseRefreshBody(await call.body()));
        return { status: 204 };
      },
    },
    { method: "GET", pattern: new RegExp(`^/sandboxes/${ID}$`), handle: async (call) => ({ status: 200, body: await sandboxes.get(call.sandboxID) }) },
    {
      method: "GET",
      pattern: new RegExp(`^/sandboxes/${ID}/metrics$`),
      handle: async (call) => ({ status: 200, body: await sandboxes.metrics(call.sandboxID, parseMetricsQuery(call.query)) }),
    },
    {
      method: "DELETE",
      pattern: new RegExp(`^/sandboxes/${ID}$`),
      handle: async (call) => {
        await sandboxes.kill(call.sandboxID);
        return { status: 204 };
      },
    },
    {
      method: "POST",
      pattern: new RegExp(`^/sandboxes/${ID}/timeout$`),
      handle: async (call) => {
        await sandboxes.setTimeout(call.sandboxID, parseTimeoutBody(await call.body()));
        return { status: 204 };
      },
    },
    { method: "POST", pattern: new RegExp(`^/sandboxes/${ID}/connect$`), final: true, handle: (call) => connect(call, parseConnectBody) },
    {
      method: "POST",
      pattern: new RegExp(`^/v2/sandboxes/${ID}/connect$`),
      final: true,
      handle: (call) => connect(call, (body) => parseConnectBody(body, DEFAULT_CONNECT_TIMEOUT_SECONDS)),
    },
    {
      method: "POST",
      pattern: new RegExp(`^/sandboxes/${ID}/pause$`),
      final: true,
      handle: async (call) => {
        parsePauseBody(await call.body());
        await sandboxes.pause(call.sandboxID);
        return { status: 204 };
      },
    },
    {
      method: "POST",
      pattern: new RegExp(`^/sandboxes/${ID}/resume$`),
      final: true,
      handle: async (call) => ({ status: 201, body: await sandboxes.resume(call.sandboxID, parseResumeBody(await call.body()), call.signal) }),
    },
    {
      method: "POST",
      pattern: new RegExp(`^/sandboxes/${ID}/fork$`),
      final: true,
      handle: async (call) => ({ status: 201, body: await sandboxes.fork(call.sandboxID, parseForkBody(await call.body()), call.signal) }),
    },
    ...UNSUPPORTED.map(({ pattern, message }): Route => ({ method: "*", pattern, handle: () => Promise.resolve(errorAnswer(e2bError(501, message))) })),
  ];
}

const SEVERAL_METRICS_UNSUPPORTED =
  "the metrics of several sandboxes at once are not served by Fast Sandbox's E2B-compatible API; ask each sandbox's (GET /sandboxes/{id}/metrics)";

const SNAPSHOTS_UNSUPPORTED =
  "snapshots are not supported by Fast Sandbox's E2B-compatible API; use pause and resume (connect) to keep a sandbox, or fork to copy it";

/**
 * Routes of E2B's API this server does not offer, any method on them: 501 with what is not
 * supported, after the key is checked as everywhere. A 404 would tell E2B's SDKs "not found": the
 * sandbox gone, or for `Sandbox.deleteSnapshot` (`DELETE /templates/{id}`) a snapshot gone
 * already, which it reports as false without a word.
 */
const UNSUPPORTED: readonly { pattern: RegExp; message: string }[] = [
  {
    pattern: /^\/sandboxes\/[^/]+\/network$/,
    message:
      "changing a sandbox's network rules (updateNetwork) is not supported by Fast Sandbox's E2B-compatible API; " +
      "a sandbox's egress is its template's pool's, or none at all when it is created with allow_internet_access false",
  },
  { pattern: /^\/sandboxes\/[^/]+\/snapshots$/, message: SNAPSHOTS_UNSUPPORTED },
  { pattern: /^\/snapshots(?:\/.*)?$/, message: SNAPSHOTS_UNSUPPORTED },
  {
    pattern: /^(?:\/v\d+)?\/templates(?:\/.*)?$/,
    message:
      "templates (and the snapshots E2B keeps as templates) are not managed through Fast Sandbox's E2B-compatible API; " +
      "a template is a pool of the namespace ('fsb apply -f pool.yaml', 'fsb pools'), and a sandbox is kept by pause and resume (connect) or copied by fork",
  },
  { pattern: /^\/volumes(?:\/.*)?$/, message: "volumes are not supported by Fast Sandbox's E2B-compatible API" },
  {
    pattern: /^\/secrets(?:\/.*)?$/,
    message:
      "secrets are not supported by Fast Sandbox's E2B-compatible API: nothing resolves a Secret.fill() placeholder; " +
      "pass the value itself in the sandbox's envs (a Kubernetes Secret or your own store keeps it)",
  },

  {
    pattern: /^(?:\/v2)?\/sandboxes\/[^/]+\/logs$/,
    message: "sandbox logs are not served by Fast Sandbox's E2B-compatible API; 'fsb logs <name>' prints a sandbox's output",
  },
];

const ROUTE_LIST =
  "GET /health, GET /templates/aliases/{name}, GET|POST /sandboxes, POST /v2/sandboxes, GET /v2/sandboxes, GET|DELETE /sandboxes/{id}, GET /sandboxes/{id}/metrics, POST /sandboxes/{id}/timeout, POST /sandboxes/{id}/refreshes, " +
  "POST /sandboxes/{id}/connect, POST /v2/sandboxes/{id}/connect, POST /sandboxes/{id}/pause, POST /sandboxes/{id}/resume, POST /sandboxes/{id}/fork " +
  "(E2B's network updates, snapshots, templates, volumes, secrets and logs answer 501: not supported)";

/** A path segment URI-decoded; one that does not decode is a ValidationError (400). */
function decodePathSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new ValidationError("", `the path segment ${JSON.stringify(segment)} is not valid percent-encoding`);
  }
}

/** The request body as JSON: undefined when empty; at most MAX_BODY_BYTES. */
async function readJson(request: HttpRequest): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new ValidationError("", `the request body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text.trim() === "") return undefined;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ValidationError("", `the request body is not valid JSON (${error instanceof Error ? error.message : String(error)})`);
  }
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Checks the request's `X-API-KEY` against the issued keys. */
async function authenticate(request: HttpRequest, apiKeys: ApiKeyStore): Promise<void> {
  const key = single(request.headers["x-api-key"])?.trim();
  if (!key) {
    throw new UnauthenticatedError("the X-API-KEY header is missing: send an API key of this server ('fsb e2b env' issues one and sets E2B_API_KEY)");
  }
  if (!isWellFormedApiKey(key)) {
    throw new UnauthenticatedError(
      "the X-API-KEY header is not an API key of this server: its keys are e2b_ and 40 lower-case hex digits ('fsb e2b env' issues one)",
    );
  }
  if (!(await apiKeys.has(hashApiKey(key))))
    throw new UnauthenticatedError("the API key in X-API-KEY was not issued by this server, or was revoked; 'fsb e2b env' issues one");
}

function send(response: HttpResponse, answer: Answer): void {
  const json = answer.body === undefined ? undefined : JSON.stringify(answer.body);
  // The HTTP/1.1 and HTTP/2 response types share these methods; their overloads differ, hence the cast.
  const target = response as http.ServerResponse;
  target.writeHead(answer.status, {
    "cache-control": "no-store",
    ...CORS_HEADERS,
    ...(json === undefined ? {} : { "content-type": "application/json; charset=utf-8" }),
    ...answer.headers,
  });
  target.end(json);
}

/** What every answer carries for browsers: any origin, and the headers E2B's SDK reads (and Retry-After of a 429). */
const CORS_HEADERS = {
  "access-control-allow-origin": "*",
  "access-control-expose-headers": "X-Next-Token, X-Total-Running, Should-Retry, Retry-After",
};

/**
 * A CORS preflight (OPTIONS with Access-Control-Request-Method): what a browser may send, for two
 * hours. PUT and PATCH too, which only unsupported E2B routes take: a browser then shows their 501
 * rather than a CORS failure.
 */
function preflightAnswer(request: HttpRequest): Answer {
  const requested = single(request.headers["access-control-request-headers"]);
  return {
    status: 204,
    headers: {
      "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
      ...(requested ? { "access-control-allow-headers": requested } : {}),
      "access-control-max-age": "7200",
    },
  };
}

function errorAnswer(error: E2bError, headers?: Record<string, string>): Answer {
  const merged = { ...error.headers, ...headers };
  return { status: error.status, body: error.body, ...(Object.keys(merged).length > 0 ? { headers: merged } : {}) };
}

/** The API as a request handler (HTTP/1.1 or HTTP/2). */
export function e2bApiHandler(options: Pick<E2bApiServerOptions, "sandboxes" | "apiKeys" | "logger">): HttpHandler {
  const table = routes(options.sandboxes);
  return (request, response) => {
    // Node's parser takes request targets (`http://[`) that are no URL; a throw here would end the process.
    const target = request.url ?? "/";
    if (!URL.canParse(target, "http://e2b.invalid")) {
      send(response, errorAnswer(e2bError(400, `the request target ${JSON.stringify(target.slice(0, 200))} is not a URL`)));
      return;
    }
    const url = new URL(target, "http://e2b.invalid");
    const method = request.method ?? "GET";
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, "") : url.pathname;
    if (method === "OPTIONS" && request.headers["access-control-request-method"] !== undefined) {
      send(response, preflightAnswer(request));
      return;
    }
    const candidates = table.map((route) => ({ route, match: route.pattern.exec(path) })).filter((c) => c.match !== null);
    const found = candidates.find((c) => c.route.method === method) ?? candidates.find((c) => c.route.method === "*");
    if (!found) {
      const allowed = candidates.map((c) => c.route.method);
      send(
        response,
        allowed.length > 0
          ? errorAnswer(e2bError(405, `${method} is not allowed on ${path}; allowed: ${allowed.join(", ")}`), { allow: allowed.join(", ") })
          : errorAnswer(e2bError(404, `no route ${method} ${path}; this E2B-compatible API serves ${ROUTE_LIST}`)),
      );
      return;
    }
    const aborted = new AbortController();
    response.once("close", () => {
      if (!response.writableFinished) aborted.abort(new Error("the client closed the connection before the answer"));
    });
    // Set once the route runs: a failure before (the API key's check) is never final.
    let handling = false;
    void (async (): Promise<Answer> => {
      if (found.route.authenticated !== false) await authenticate(request, options.apiKeys);
      const segment = found.match?.[1];
      handling = true;
      const named = found.route.segment === true;
      return found.route.handle({
        sandboxID: segment === undefined || named ? "" : parseSandboxId(segment),
        segment: segment === undefined || !named ? "" : decodePathSegment(segment),
        query: url.searchParams,
        headers: request.headers,
        body: () => readJson(request),
        signal: aborted.signal,
      });
    })()
      .catch((error: unknown) => {
        const requestId = newRequestId();
        const failure = e2bErrorOf(error, requestId);
        const final = handling && found.route.final === true && RETRIED_FAILURES.has(failure.status);
        const answer = errorAnswer(failure, final ? { "should-retry": "false" } : undefined);
        // A bug has its stack logged, under the request id its answer names (the client is told no
        // more); a sandbox that failed to start (503, 504) is told to the client, logged in a line.
        if (answer.status === 500) options.logger.error({ err: error, method, path, requestId }, "E2B API request failed");
        else if (answer.status > 500) options.logger.warn({ method, path, status: answer.status }, failure.body.message);
        return answer;
      })
      .then((answer) => {
        if (!response.headersSent && !aborted.signal.aborted) send(response, answer);
      });
  };
}

/** Serves the API on `host:port` (HTTP/1.1, and HTTP/2 with prior knowledge). */
export async function startE2bApiServer(options: E2bApiServerOptions): Promise<E2bApiServer> {
  const host = options.host ?? "127.0.0.1";
  const server = await listenCleartext(e2bApiHandler(options), host, options.port ?? 0);
  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${server.port}`,
    port: server.port,
    close: () => server.close(),
  };
}
