/**
 * What the E2B-compatible API accepts, checked field by field into typed requests: a wrong field is
 * a ValidationError naming it and what is allowed. As E2B's API does, fields it does not know are
 * ignored; fields E2B knows but Fast Sandbox cannot honour (pausing on timeout, a pause or resume
 * without memory, network rules, volumes, MCP) are refused when they ask for something, rather than
 * dropped silently. JSON `null` counts as absent.
 */
import { ValidationError } from "@fast-sandbox/api";
import { decodeMetadataFilter } from "./metadata-filter.js";

/** The longest timeout a sandbox may be given: 24 hours, E2B's limit for its Pro tier. */
export const MAX_TIMEOUT_SECONDS = 86_400;
/**
 * The timeout of a `POST /v2/sandboxes` that names none: E2B's API default (its `NewSandboxV2`),
 * which its SDKs rely on — `Sandbox.create()` without a timeout sends none.
 */
export const DEFAULT_CREATE_TIMEOUT_SECONDS = 300;
/** The timeout of a legacy `POST /sandboxes` that names none (E2B's `NewSandbox` default). */
export const DEFAULT_LEGACY_CREATE_TIMEOUT_SECONDS = 15;
/** The timeout of a `POST /v2/sandboxes/{id}/connect` that names none (E2B's default). */
export const DEFAULT_CONNECT_TIMEOUT_SECONDS = 300;
/** The timeout of forked sandboxes that name none (E2B's API default). */
export const DEFAULT_FORK_TIMEOUT_SECONDS = 15;
/** The timeout of a legacy `POST /sandboxes/{id}/resume` that names none (E2B's API default). */
export const DEFAULT_RESUME_TIMEOUT_SECONDS = 15;
/** The longest refresh (`POST /sandboxes/{id}/refreshes`, E2B's `duration` maximum). */
export const MAX_REFRESH_SECONDS = 3600;
/** The duration of a refresh that names none (E2B's default instance expiration). */
export const DEFAULT_REFRESH_SECONDS = 15;
/** Most copies one fork makes (E2B's SDKs allow 1 to 20). */
export const MAX_E2B_FORK_COUNT = 20;
/** Most sandboxes a list page holds, and its default size. */
export const MAX_LIST_LIMIT = 100;
/** Most bytes of a sandbox's metadata (as JSON), which is kept in one annotation of its record. */
export const MAX_METADATA_BYTES = 64 * 1024;

export type E2bSandboxState = "running" | "paused";
const STATES: readonly E2bSandboxState[] = ["running", "paused"];

export interface NewSandboxRequest {
  templateID: string;
  timeoutSeconds: number;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  /** false: the sandbox may connect nowhere (egress denyAll); undefined or true: its pool's egress policy. */
  allowInternetAccess: boolean | undefined;
}

export interface ForkRequest {
  /** Seconds from now until each copy ends. */
  timeoutSeconds: number;
  count: number;
}

export interface ListSandboxesQuery {
  /** Pairs the sandbox's metadata must all hold. */
  metadata: Map<string, string>;
  /** Undefined: every state. */
  states: Set<E2bSandboxState> | undefined;
  template: string | undefined;
  startedAfter: Date | undefined;
  /** By start time: desc (newest first, the default) or asc. */
  order: "asc" | "desc";
  limit: number;
  nextToken: string | undefined;
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function present(body: JsonObject, field: string): unknown {
  const value = body[field];
  return value === null ? undefined : value;
}

/** The request body as an object; an empty body is `{}` only where every field is optional. */
export function requestObject(body: unknown, example: string): JsonObject {
  if (!isObject(body)) throw new ValidationError("", `the request body must be a JSON object, e.g. ${example}`);
  return body;
}

/**
 * A timeout in seconds: a whole number from `least` (0; 1 where a sandbox is made or brought back
 * to run, as E2B's resume and fork require) to MAX_TIMEOUT_SECONDS; `why` follows the message.
 */
export function parseTimeoutSeconds(value: unknown, field = "timeout", least = 0, why = ""): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < least || value > MAX_TIMEOUT_SECONDS) {
    throw new ValidationError(
      field,
      `must be a whole number of seconds from ${least} to ${MAX_TIMEOUT_SECONDS} (24 hours), counted from now${why}; got ${JSON.stringify(value) ?? "nothing"}`,
    );
  }
  return value;
}

/** Why a create's timeout is at least 1 s. */
const CREATE_TIMEOUT_LEAST = " (at least 1: a sandbox ending at once would be removed before it could be used; E2B has no unlimited timeout either)";

/** How E2B's `Secret.fill(name)` placeholders begin (`${e2b.secrets.<name>}`). */
const SECRET_PLACEHOLDER = "${e2b.secrets.";

function stringMap(value: unknown, field: string, kind: "metadata" | "env"): Record<string, string> {
  if (value === undefined) return {};
  if (!isObject(value)) throw new ValidationError(field, `must be an object of string values, e.g. {"user": "abc"}; got ${JSON.stringify(value)}`);
  const result: Record<string, string> = {};
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== "string") throw new ValidationError(`${field}.${key}`, `must be a string; got ${JSON.stringify(entry)}`);
    if (kind === "env") {
      if (key === "" || key.includes("=") || key.includes("\0")) {
        throw new ValidationError(`${field}.${key}`, "is not a usable variable name: a name is not empty and holds no '=' or NUL character");
      }
      if (entry.includes("\0")) throw new ValidationError(`${field}.${key}`, "holds a NUL character, which no environment variable can carry");
      if (entry.includes(SECRET_PLACEHOLDER)) {
        // The sandbox would get the placeholder itself as the value (e.g. as its API key) without a word.
        throw new ValidationError(
          `${field}.${key}`,
          `holds a secret placeholder (${SECRET_PLACEHOLDER}…}, Secret.fill()), which nothing resolves here: E2B's secrets are not supported; pass the value itself`,
        );
      }
    }
    result[key] = entry;
  }
  return result;
}

function optionalBoolean(body: JsonObject, field: string): boolean | undefined {
  const value = present(body, field);
  if (value !== undefined && typeof value !== "boolean") throw new ValidationError(field, `must be true or false; got ${JSON.stringify(value)}`);
  return value;
}

/** Refuses an E2B feature the request asks for (a non-empty value) that Fast Sandbox does not have. */
function refuseIfAsked(body: JsonObject, field: string, why: string): void {
  const value = present(body, field);
  if (value === undefined) return;
  const empty = (Array.isArray(value) && value.length === 0) || (isObject(value) && Object.keys(value).length === 0);
  if (!empty) throw new ValidationError(field, why);
}

/**
 * E2B's `network` of a new sandbox: `allowPublicTraffic: false` is what Fast Sandbox always does
 * (a sandbox's ports answer only with its traffic access token), so it is accepted; egress rules
 * and public ports are refused.
 */
function refuseNetworkRules(network: unknown): void {
  if (network === undefined || network === null) return;
  if (!isObject(network)) throw new ValidationError("network", 'must be an object, e.g. {"allowPublicTraffic": false}');
  for (const [key, value] of Object.entries(network)) {
    if (value === undefined || value === null || (Array.isArray(value) && value.length === 0)) continue;
    if (key === "allowPublicTraffic" && value === false) continue;
    if (key === "allowPublicTraffic") {
      throw new ValidationError(
        "network.allowPublicTraffic",
        "public ports are not offered: a sandbox's ports answer only with its traffic access token (header E2B-Traffic-Access-Token); send false or omit it",
      );
    }
    throw new ValidationError("network", "network rules are not supported; send allow_internet_access: false for a sandbox that may connect nowhere");
  }
}

/** The body of `POST /sandboxes` and `POST /v2/sandboxes` (E2B's NewSandbox and NewSandboxV2). */
export function parseNewSandbox(body: unknown, defaultTimeoutSeconds = DEFAULT_CREATE_TIMEOUT_SECONDS): NewSandboxRequest {
  const request = requestObject(body, '{"templateID": "base", "timeout": 300}');
  const templateID = present(request, "templateID");
  if (typeof templateID !== "string" || templateID.trim() === "") {
    throw new ValidationError("templateID", `is required: the template to start, e.g. "base"; got ${JSON.stringify(templateID) ?? "nothing"}`);
  }
  const timeout = present(request, "timeout");
  const metadata = stringMap(present(request, "metadata"), "metadata", "metadata");
  if (Buffer.byteLength(JSON.stringify(metadata)) > MAX_METADATA_BYTES) {
    throw new ValidationError("metadata", `is larger than ${MAX_METADATA_BYTES} bytes as JSON; keep metadata to short labels`);
  }
  optionalBoolean(request, "secure");
  optionalBoolean(request, "autoPauseMemory");
  if (optionalBoolean(request, "autoPause") === true) {
    throw new ValidationError(
      "autoPause",
      "pausing when the timeout passes is not supported: a sandbox is killed then (pause it yourself with POST /sandboxes/{id}/pause); omit autoPause or send false",
    );
  }
  const autoResume = present(request, "autoResume");
  if (
    autoResume !== undefined &&
    (!isObject(autoResume) || (autoResume.enabled !== undefined && autoResume.enabled !== null && autoResume.enabled !== false))
  ) {
    throw new ValidationError(
      "autoResume",
      'resuming on traffic is not supported (connect resumes a paused sandbox); omit autoResume or send {"enabled": false}',
    );
  }
  refuseNetworkRules(present(request, "network"));
  refuseIfAsked(request, "volumeMounts", "volumes are not supported; omit volumeMounts");
  refuseIfAsked(request, "mcp", "MCP gateways are not supported; omit mcp");
  refuseIfAsked(request, "iam", "workload identity tokens are not supported; omit iam");
  return {
    templateID,
    timeoutSeconds: timeout === undefined ? defaultTimeoutSeconds : parseTimeoutSeconds(timeout, "timeout", 1, CREATE_TIMEOUT_LEAST),
    metadata,
    envVars: stringMap(present(request, "envVars"), "envVars", "env"),
    allowInternetAccess: optionalBoolean(request, "allow_internet_access"),
  };
}

/**
 * The timeout of `POST …/timeout` and `POST …/connect` bodies (`{"timeout": seconds}`): required,
 * unless `defaultSeconds` is given (the v2 connect, whose body is optional).
 */
export function parseTimeoutBody(body: unknown, defaultSeconds?: number): number {
  if (body === undefined && defaultSeconds !== undefined) return defaultSeconds;
  const request = requestObject(body, '{"timeout": 300}');
  const timeout = present(request, "timeout");
  if (timeout === undefined) {
    if (defaultSeconds !== undefined) return defaultSeconds;
    throw new ValidationError("timeout", `is required: seconds from now until the sandbox ends, 0 to ${MAX_TIMEOUT_SECONDS}`);
  }
  return parseTimeoutSeconds(timeout);
}

/**
 * The body of E2B's legacy `POST /sandboxes/{id}/refreshes` (optional): `duration`, whole seconds
 * from 0 to 3600 (15 by default), for which the sandbox is kept alive from now.
 */
export function parseRefreshBody(body: unknown): number {
  if (body === undefined) return DEFAULT_REFRESH_SECONDS;
  const request = requestObject(body, '{"duration": 60}');
  const duration = present(request, "duration");
  if (duration === undefined) return DEFAULT_REFRESH_SECONDS;
  if (typeof duration !== "number" || !Number.isInteger(duration) || duration < 0 || duration > MAX_REFRESH_SECONDS) {
    throw new ValidationError("duration", `must be whole seconds from 0 to ${MAX_REFRESH_SECONDS}; got ${JSON.stringify(duration)}`);
  }
  return duration;
}

/** The query of E2B's v1 `GET /sandboxes` (SDKs 1.x): the running sandboxes whose metadata holds `metadata`'s pairs, all of them. */
export function parseV1ListQuery(query: URLSearchParams): ListSandboxesQuery {
  const metadata = query.get("metadata");
  return {
    metadata: metadata === null ? new Map<string, string>() : decodeMetadataFilter(metadata),
    states: new Set(["running"]),
    template: undefined,
    startedAfter: undefined,
    order: "desc",
    limit: Number.MAX_SAFE_INTEGER,
    nextToken: undefined,
  };
}

/** Refuses `memory: false`: a gVisor sandbox's file changes live in its memory, so a pause saves (and a resume restores) both. */
function refuseWithoutMemory(request: JsonObject, what: string): void {
  if (optionalBoolean(request, "memory") === false) {
    throw new ValidationError(
      "memory",
      `${what} without memory is not offered: a paused sandbox (gVisor) keeps its file changes in its memory, so its checkpoint holds both; omit memory or send true`,
    );
  }
}

/** The body of `POST /sandboxes/{id}/pause` (optional): `memory` must not be false; `requireHealthyGuest` is moot (a pause always needs the daemon). */
export function parsePauseBody(body: unknown): void {
  if (body === undefined) return;
  const request = requestObject(body, '{"memory": true}');
  refuseWithoutMemory(request, "a pause");
  optionalBoolean(request, "requireHealthyGuest");
}

/**
 * The body of `POST /sandboxes/{id}/connect` and `/v2/…/connect`: the timeout (parseTimeoutBody), and
 * `memory`, which must not be false (E2B's `on_resume="reboot"`, a cold boot from the files alone).
 * A timeout of 0 passes here, as in E2B's API (a running sandbox's end only moves later); resuming a
 * paused sandbox needs 1 or more, which E2bSandboxes checks, knowing whether it is paused.
 */
export function parseConnectBody(body: unknown, defaultSeconds?: number): number {
  const timeoutSeconds = parseTimeoutBody(body, defaultSeconds);
  if (body !== undefined) refuseWithoutMemory(requestObject(body, '{"timeout": 300}'), "a resume");
  return timeoutSeconds;
}

/** The body of E2B's legacy `POST /sandboxes/{id}/resume` (`{timeout, autoPause}`): the timeout, 15 s by default. */
export function parseResumeBody(body: unknown): number {
  if (body === undefined) return DEFAULT_RESUME_TIMEOUT_SECONDS;
  const request = requestObject(body, '{"timeout": 300}');
  if (optionalBoolean(request, "autoPause") === true) {
    throw new ValidationError("autoPause", "pausing when the timeout passes is not supported: a sandbox is killed then; omit autoPause or send false");
  }
  const timeout = present(request, "timeout");
  return timeout === undefined ? DEFAULT_RESUME_TIMEOUT_SECONDS : parseTimeoutSeconds(timeout, "timeout", 1);
}

/** The body of `POST /sandboxes/{id}/fork` (optional): `timeout` of the copies (15 s by default) and `count` (1 to 20, 1 by default). */
export function parseForkBody(body: unknown): ForkRequest {
  if (body === undefined) return { timeoutSeconds: DEFAULT_FORK_TIMEOUT_SECONDS, count: 1 };
  const request = requestObject(body, '{"timeout": 300, "count": 2}');
  const timeout = present(request, "timeout");
  const count = present(request, "count") ?? 1;
  if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > MAX_E2B_FORK_COUNT) {
    throw new ValidationError("count", `must be a whole number of copies from 1 to ${MAX_E2B_FORK_COUNT}; got ${JSON.stringify(count)}`);
  }
  return { timeoutSeconds: timeout === undefined ? DEFAULT_FORK_TIMEOUT_SECONDS : parseTimeoutSeconds(timeout, "timeout", 1), count };
}

/** The interval of `GET /sandboxes/{id}/metrics`: `start` and `end`, Unix seconds (each optional). */
export interface MetricsRange {
  start?: number;
  end?: number;
}

/** The query of `GET /sandboxes/{id}/metrics`: `start` and `end` in seconds since the Unix epoch, start ≤ end. */
export function parseMetricsQuery(query: URLSearchParams): MetricsRange {
  const range: MetricsRange = {};
  for (const key of ["start", "end"] as const) {
    const text = query.get(key);
    if (text === null || text === "") continue;
    if (!/^\d{1,12}$/.test(text))
      throw new ValidationError(
        key,
        `must be a time in whole seconds since the Unix epoch, e.g. ${Math.floor(Date.now() / 1000)}; got ${JSON.stringify(text)}`,
      );
    range[key] = Number(text);
  }
  if (range.start !== undefined && range.end !== undefined && range.start > range.end) {
    throw new ValidationError("end", `must not be before start (${range.start}); got ${range.end}`);
  }
  return range;
}

/** The query of `GET /v2/sandboxes`. Array parameters come comma-joined (E2B's SDKs) or repeated. */
export function parseListQuery(query: URLSearchParams): ListSandboxesQuery {
  const metadata = query.get("metadata");
  const limitText = query.get("limit");
  let limit = MAX_LIST_LIMIT;
  if (limitText !== null) {
    limit = /^\d+$/.test(limitText) ? Number(limitText) : Number.NaN;
    if (!(limit >= 1 && limit <= MAX_LIST_LIMIT))
      throw new ValidationError("limit", `must be a whole number from 1 to ${MAX_LIST_LIMIT}; got ${JSON.stringify(limitText)}`);
  }
  let states: Set<E2bSandboxState> | undefined;
  const stateValues = query
    .getAll("state")
    .flatMap((value) => value.split(","))
    .filter((value) => value !== "");
  if (stateValues.length > 0) {
    states = new Set();
    for (const value of stateValues) {
      if (!(STATES as readonly string[]).includes(value))
        throw new ValidationError("state", `${JSON.stringify(value)} is not a state; allowed: ${STATES.join(", ")}`);
      states.add(value as E2bSandboxState);
    }
  }
  const order = query.get("order") ?? "desc";
  if (order !== "asc" && order !== "desc") throw new ValidationError("order", `${JSON.stringify(order)} is not an order; allowed: asc, desc (by start time)`);
  const startedAfterText = query.get("startedAfter");
  let startedAfter: Date | undefined;
  if (startedAfterText !== null) {
    startedAfter = new Date(startedAfterText);
    if (!/^\d{4}-\d{2}-\d{2}T/.test(startedAfterText) || Number.isNaN(startedAfter.getTime())) {
      throw new ValidationError("startedAfter", `${JSON.stringify(startedAfterText)} is not an RFC 3339 time, e.g. 2026-01-02T03:04:05Z`);
    }
  }
  return {
    metadata: metadata === null ? new Map<string, string>() : decodeMetadataFilter(metadata),
    states,
    template: query.get("template") || undefined,
    startedAfter,
    order,
    limit,
    nextToken: query.get("nextToken") || undefined,
  };
}

/** The sandbox id of a path: E2B's `<sandboxID>`, or its legacy `<sandboxID>-<clientID>`. */
export function parseSandboxId(segment: string): string {
  const [id = ""] = segment.split("-");
  if (!/^[a-z0-9]{1,64}$/.test(id)) {
    throw new ValidationError(
      "sandboxID",
      `${JSON.stringify(segment)} is not a sandbox id: lower-case letters and digits (e.g. k3x9q0m2zt7c1w8r5bn4), optionally followed by -<clientID>`,
    );
  }
  return id;
}
