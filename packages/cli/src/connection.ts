import { NAME_MAX_LENGTH, NAME_PATTERN } from "@fast-sandbox/api";
import { parseDurationMs } from "@fast-sandbox/api/core";
import {
  Connection as SdkConnection,
  TimeoutError,
  TokenFile,
  UnauthenticatedError,
  UnavailableError,
  ValidationError,
  type FastSandboxClient,
  type FsbError,
} from "@fast-sandbox/sdk";
import { files, fsbUpRuns, readIfExists, readLock, resolveDataDir, upCommandFor } from "./data-dir.js";
import { chooseTarget, programNameOf, type Target, type TargetFlags } from "./target.js";

export interface GlobalOptions extends TargetFlags {
  /** The name the program runs as (`fsb`, `kubectl-fs`). @default the file name of process.argv[1] */
  programName?: string;
  /** `--request-timeout`: each call's deadline as a duration (`30s`, `2m`; `0`: none). @default FSB_REQUEST_TIMEOUT, else 60s */
  requestTimeout?: string;
}

/** The SDK's deadline of a call as `--request-timeout` or FSB_REQUEST_TIMEOUT give it; undefined: the SDK's (60 s). */
export function requestTimeoutMsOf(options: Pick<GlobalOptions, "requestTimeout">): number | undefined {
  const flag = options.requestTimeout !== undefined;
  const text = options.requestTimeout ?? process.env.FSB_REQUEST_TIMEOUT;
  if (text === undefined || text === "") return undefined;
  if (/^0+(ms|s|m|h)?$/.test(text)) return 0;
  return parseDurationMs(text, flag ? "--request-timeout" : "FSB_REQUEST_TIMEOUT");
}

/** A deadline's message from the SDK names its option, `requestTimeoutMs`; the CLI's is `--request-timeout`. */
const SDK_TIMEOUT_ADVICE = "(requestTimeoutMs); pass a larger requestTimeoutMs, or 0 for no limit";
const CLI_TIMEOUT_ADVICE = "(--request-timeout); pass a larger --request-timeout (or FSB_REQUEST_TIMEOUT), or 0 for no limit";

export interface Connection {
  client: FastSandboxClient;
  /** The SDK's connection (the same control plane, and the sandboxes' daemons through the sandbox proxy). */
  sdk: SdkConnection;
  /** The namespace of a command without -n: in a cluster the kubeconfig context's, else `default`. */
  namespace: string;
  /**
   * The data directory where the sandboxes' access tokens are kept: the embedded Fast Sandbox's, when
   * the URL in use is its own (its `url` file); undefined for a cluster or another URL (--url,
   * FSB_URL), whose sandboxes are not this data directory's.
   */
  dataDir?: string;
}

/** How to explain a failed call: set by `connect` for a cluster, whose messages differ from the embedded mode's. */
export interface ClusterCallContext {
  url: string;
  endpointDescription: string;
  /** The controller's address, e.g. `10.0.3.7:7070 (Pod …)`. */
  controllerAddress: string;
  tokenSource: string;
  /** The token is the kubeconfig user's own. */
  ownCredential: boolean;
  portForwardHint: string;
  discovered: boolean;
}

let clusterContext: ClusterCallContext | undefined;
/** The data directory whose own URL (its `url` file) the command connected to, for a failure to reach it. */
let ownInstanceDataDir: string | undefined;
/** The control plane's URL the command connected to, for messages about it. */
let connectedUrl: string | undefined;

/** The port `fsb up` and the cluster's controller serve the API on, unless told otherwise. */
const DEFAULT_API_PORT = 7070;

/** The target of the command line (see target.ts for the rules). */
export function targetOf(options: GlobalOptions): Target {
  return chooseTarget(options, {
    programName: options.programName ?? programNameOf(process.argv[1]),
    env: { FSB_URL: process.env.FSB_URL, KUBECONFIG: process.env.KUBECONFIG },
    embeddedUrlKnown: () => Boolean(readIfExists(files.url(resolveDataDir(options.dataDir)))),
  });
}

/**
 * Connects to the Fast Sandbox the command line names (target.ts): the one `fsb up` runs for the data
 * dir, the one at --url/FSB_URL, or the controller of a Kubernetes cluster.
 */
export async function connect(options: GlobalOptions & { namespace?: string }): Promise<Connection> {
  // Bad flags are bad usage (exit 2), said before anything is asked of a cluster or a control plane.
  const requestTimeoutMs = requestTimeoutMsOf(options);
  checkNamespace(options.namespace, "--namespace");
  checkNamespace(options.fsbNamespace, "--fsb-namespace");
  if (options.url !== undefined) checkUrl(options.url, "--url");
  else if (process.env.FSB_URL) checkUrl(process.env.FSB_URL, "FSB_URL");
  const target = targetOf(options);
  if (process.env.FSB_DEBUG)
    process.stderr.write(`debug: ${target.mode === "cluster" ? "a Kubernetes cluster" : "the embedded Fast Sandbox"}, as ${target.reason}\n`);
  if (target.mode === "embedded") {
    const dataDir = resolveDataDir(options.dataDir);
    const { url, token } = endpoint(options);
    connectedUrl = url;
    const sdk = new SdkConnection({ url, token, dataDir, ...timeoutOf(options) });
    open.push(sdk);
    // The SDK keeps access tokens for the data directory's own URL alone, which is what this names.
    ownInstanceDataDir = sdk.accessTokens ? dataDir : undefined;
    // Access tokens are kept in the data directory when the URL is its own (as the SDK keeps them), or
    // when it serves none and the URL is on this host's loopback (an instance started without `fsb up`):
    // never another instance's beside this one's.
    const servesNone = !readIfExists(files.url(dataDir));
    const tokensDir = sdk.accessTokens?.dataDir ?? (servesNone && onLoopback(url) ? dataDir : undefined);
    return { client: sdk.client, sdk, namespace: options.namespace ?? "default", dataDir: tokensDir };
  }
  const { resolveClusterEndpoint } = await import("./cluster-connection.js");
  const url = options.url ?? process.env.FSB_URL;
  const token = givenToken();
  if (options.url === undefined && url) {
    // FSB_URL may be left over from another Fast Sandbox: the cluster's token is sent where it names only when --url says so.
    if (!token && !onLoopback(url)) {
      throw new ValidationError(
        "FSB_URL",
        `${url} is not on this host, and the cluster's API token (Secret ${options.fsbNamespace ?? process.env.FSB_SYSTEM_NAMESPACE ?? "fast-sandbox-system"}/fast-sandbox-api-token) is not sent there unasked: ` +
          "pass it as --url to send it, set FSB_TOKEN (or FSB_TOKEN_FILE) to the token that URL takes, or unset FSB_URL to find the controller in the cluster",
      );
    }
    process.stderr.write(`warning: FSB_URL=${url} is used instead of finding the controller in the cluster; unset FSB_URL to find it\n`);
  }
  const found = await resolveClusterEndpoint({
    ...(options.kubeconfig !== undefined ? { kubeconfig: options.kubeconfig } : {}),
    ...(options.context !== undefined ? { context: options.context } : {}),
    // FSB_SYSTEM_NAMESPACE names the namespace without choosing the cluster as --fsb-namespace does (target.ts).
    ...((options.fsbNamespace ?? process.env.FSB_SYSTEM_NAMESPACE) ? { fsbNamespace: options.fsbNamespace ?? process.env.FSB_SYSTEM_NAMESPACE } : {}),
    ...(options.namespace !== undefined ? { namespace: options.namespace } : {}),
    ...(url ? { url } : {}),
    ...(token ? { token, tokenFrom: process.env.FSB_TOKEN ? "FSB_TOKEN" : "FSB_TOKEN_FILE" } : {}),
    ...(requestTimeoutMs !== undefined ? { requestTimeoutMs } : {}),
  });
  const { endpointDescription, controllerAddress, tokenSource, portForwardHint } = found;
  clusterContext = {
    url: found.url,
    endpointDescription,
    controllerAddress,
    tokenSource,
    ownCredential: found.ownCredential === true,
    portForwardHint,
    discovered: !url,
  };
  ownInstanceDataDir = undefined;
  connectedUrl = found.url;
  if (process.env.FSB_DEBUG) process.stderr.write(`debug: ${endpointDescription}, token from ${tokenSource}, namespace ${found.namespace}\n`);
  const sdk = new SdkConnection({ url: found.url, token: found.token, ...timeoutOf(options) });
  open.push(sdk);
  return { client: sdk.client, sdk, namespace: found.namespace };
}

/**
 * Connects to the Fast Sandbox `fsb up` runs for the data directory, at the URL and with the token it
 * wrote there, whatever --url, FSB_URL and FSB_TOKEN name: for `fsb down`, which acts on that one alone.
 */
export function connectOwnInstance(dataDir: string): Connection & { url: string } {
  const url = readIfExists(files.url(dataDir));
  if (!url) throw new UnavailableError(`Fast Sandbox is not serving for data directory ${dataDir}: it has no url file`);
  const token = readIfExists(files.token(dataDir));
  if (!token) throw new ValidationError("", `no API token in ${files.token(dataDir)}: 'fsb up' writes it there when it starts`);
  const sdk = new SdkConnection({ url, token, dataDir });
  open.push(sdk);
  return { client: sdk.client, sdk, namespace: "default", dataDir, url };
}

/**
 * The token the caller gave: `FSB_TOKEN`, else the file `FSB_TOKEN_FILE` names (a Pod's ServiceAccount
 * token; read once: a command is short-lived), whose absence or emptiness is the caller's error.
 */
function givenToken(): string | undefined {
  if (process.env.FSB_TOKEN) return process.env.FSB_TOKEN;
  const path = process.env.FSB_TOKEN_FILE;
  return path ? new TokenFile(path, "FSB_TOKEN_FILE").current() : undefined;
}

/**
 * The embedded control plane's URL and token: --url/FSB_URL or the data dir's `url`; FSB_TOKEN (else FSB_TOKEN_FILE) or
 * the data dir's `token` — the latter only for the data dir's own URL or one on this host's
 * loopback: the token of this host's Fast Sandbox is not sent to another host a URL names.
 */
export function endpoint(options: GlobalOptions): { url: string; token: string } {
  const dataDir = resolveDataDir(options.dataDir);
  const own = readIfExists(files.url(dataDir));
  const url = options.url ?? process.env.FSB_URL ?? own;
  if (!url) {
    throw new ValidationError(
      "",
      `Fast Sandbox is not running for data directory ${dataDir}: start it with 'npx fsb up' (or 'npm run up'), or pass --url; ` +
        "for a Kubernetes cluster use kubectl fs, or pass --kubeconfig or --context",
    );
  }
  const given = givenToken();
  if (given) return { url, token: given };
  if (url !== own && !onLoopback(url)) {
    throw new ValidationError(
      options.url ? "--url" : "FSB_URL",
      `${url} is neither this data directory's Fast Sandbox (${dataDir}) nor on this host: set FSB_TOKEN (or FSB_TOKEN_FILE) to its API token (this host's token is not sent to another host)`,
    );
  }
  const token = readIfExists(files.token(dataDir));
  if (!token) throw new ValidationError("", `no API token in ${files.token(dataDir)}; set FSB_TOKEN or run 'fsb up' once to create it`);
  return { url, token };
}

/** A namespace flag's value: a Kubernetes namespace's name (a DNS-1123 label), not an empty one that would mean another. */
function checkNamespace(namespace: string | undefined, flag: string): void {
  if (namespace === undefined) return;
  if (namespace === "") throw new ValidationError(flag, "is empty: give a namespace, or leave the flag out for the default one");
  if (namespace.length > NAME_MAX_LENGTH || !new RegExp(NAME_PATTERN).test(namespace)) {
    throw new ValidationError(
      flag,
      `${JSON.stringify(namespace)} is not a namespace: at most ${NAME_MAX_LENGTH} lowercase letters, digits and '-', starting and ending with a letter or digit`,
    );
  }
}

/** A control plane's URL: http or https, with a host and a port that is one. */
function checkUrl(url: string, field: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ValidationError(field, `${JSON.stringify(url)} is not a URL (with a valid port, if any): give one like http://127.0.0.1:7070`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new ValidationError(field, `${JSON.stringify(url)} is not an http:// or https:// URL: give one like http://127.0.0.1:7070`);
  }
}

/** Whether the URL names this host's loopback (127.0.0.0/8, ::1, localhost); false for one that does not parse. */
function onLoopback(url: string): boolean {
  if (!URL.canParse(url)) return false;
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return host === "localhost" || host.endsWith(".localhost") || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * A failed call's error as the user should read it. In a cluster, a refused token names where it came
 * from (the embedded control plane's message speaks of the data directory), and a controller that
 * cannot be reached says how to port-forward.
 */
function timeoutOf(options: Pick<GlobalOptions, "requestTimeout">): { requestTimeoutMs?: number } {
  const requestTimeoutMs = requestTimeoutMsOf(options);
  return requestTimeoutMs === undefined ? {} : { requestTimeoutMs };
}

export function explainFailure(error: FsbError): FsbError {
  if (error instanceof TimeoutError && error.message.includes(SDK_TIMEOUT_ADVICE)) {
    return new TimeoutError(error.message.replace(SDK_TIMEOUT_ADVICE, CLI_TIMEOUT_ADVICE), { cause: error });
  }
  // Node's HTTP/2 client fails with a bare "Protocol error" when the peer answers in HTTP/1 (another
  // server, the sandbox proxy, the E2B-compatible API): say what is wrong with the address.
  if (causes(error).some((cause) => (cause as { code?: unknown }).code === "ERR_HTTP2_ERROR")) {
    return new UnavailableError(
      `${connectedUrl ?? "the control plane's URL"} does not speak the Fast Sandbox API (HTTP/2; ${error.message}): give the control plane's address, ` +
        `by default port ${DEFAULT_API_PORT} ('fsb up --port'; in a cluster the controller's Service), ` +
        "not the sandbox proxy's or the E2B-compatible API's (7072 and 7073 by default)",
      { cause: error },
    );
  }
  const ownDataDir = ownInstanceDataDir;
  if (ownDataDir !== undefined && connectedUrl !== undefined) return explainOwnInstanceFailure(error, ownDataDir, connectedUrl);
  return clusterContext ? explainClusterFailure(error, clusterContext) : error;
}

/** The sandbox proxy's own refusal of a sandbox's access token (the SDK's `daemonCallError`), not the controller's of the API token. */
const SANDBOX_ACCESS_REFUSED = /the sandbox proxy refused the access token of sandbox /;
/** A sandbox's daemon call that found nothing listening at the sandbox proxy's address (the SDK's `daemonCallError`). */
const SANDBOX_PROXY_UNREACHABLE = /\b(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH)\b.*not reachable through the sandbox proxy/;

/** A failed call of a command connected to a cluster's controller, said with what to do there. */
export function explainClusterFailure(error: FsbError, context: ClusterCallContext): FsbError {
  if (error.code === "unauthenticated" && SANDBOX_ACCESS_REFUSED.test(error.message)) return error;
  if (error.code === "unavailable" && SANDBOX_PROXY_UNREACHABLE.test(error.message)) {
    return new UnavailableError(
      `${error.message}; nothing answers at the sandbox proxy's address, which the controller's FSB_PROXY_BASE_URL gives its sandboxes ` +
        "(by default http://localhost:7072, for 'kubectl -n fast-sandbox-system port-forward svc/fast-sandbox-proxy 7072' in the namespace Fast Sandbox runs in): start that port-forward, or reach the proxy where FSB_PROXY_BASE_URL says",
      { cause: error },
    );
  }
  if (error.code === "unauthenticated") {
    return new UnauthenticatedError(
      context.ownCredential
        ? `${context.endpointDescription} did not accept ${context.tokenSource}: the controller takes Kubernetes users' tokens ` +
            "unless it runs with FSB_KUBERNETES_USERS=off, and only those the API server accepts (an expired token is not): set FSB_TOKEN to the controller's token, or ask for a new credential"
        : `${context.endpointDescription} did not accept the API token from ${context.tokenSource}: ` +
            (context.tokenSource === "FSB_TOKEN"
              ? "unset FSB_TOKEN to use the cluster's Secret, or set it to the controller's token"
              : "set FSB_TOKEN to the controller's token, or fix the Secret and restart the controller"),
    );
  }
  // The controller's connection ended mid-call (its Pod restarted, was replaced or evicted): not the user's cancel.
  const lost = error.code === "unavailable" ? connectionLost(error) : undefined;
  if (lost) {
    return new UnavailableError(
      `${lost.what ? `${lost.what}: ` : ""}the controller at ${context.controllerAddress} went away (${lost.detail}); ` +
        "it may have restarted or been replaced: run the command again",
      { cause: error },
    );
  }
  // A connection failure names the address (`connect ECONNREFUSED 127.0.0.1:7070`); the controller's own `unavailable` answers do not.
  if (error.code === "unavailable" && error.message.includes(hostAndPort(context.url))) {
    return new UnavailableError(
      `${error.message}; ${context.discovered ? "from outside the cluster network" : "to reach the cluster's controller"}, ${context.portForwardHint}`,
      { cause: error },
    );
  }
  return error;
}

/**
 * A failure to reach the data directory's own URL while its `fsb up` does not run: it was killed
 * (SIGKILL) or crashed, and its `url` file, which only a clean stop removes, still selects it. Said
 * like the "not running" of a data directory without one (`endpoint`), with what to do: `fsb up`
 * takes the stale lock over and adopts the sandboxes that still run; `fsb down` clears what it left.
 */
function explainOwnInstanceFailure(error: FsbError, dataDir: string, url: string): FsbError {
  // Its connection ended mid-call: the control plane stopped ('fsb down') or restarted meanwhile.
  const lost = error.code === "unavailable" ? connectionLost(error) : undefined;
  if (lost) {
    return new UnavailableError(
      `${lost.what ? `${lost.what}: ` : ""}Fast Sandbox at ${url} went away (${lost.detail}); ` +
        `it was stopped or restarted (${fsbUpRuns(dataDir) ? "it runs again" : `'${upCommandFor(dataDir)}' starts it`}): run the command again`,
      { cause: error },
    );
  }
  // A connection failure names the address; an `unavailable` answer of a running control plane is its own.
  if (error.code !== "unavailable" || !error.message.includes(hostAndPort(url)) || fsbUpRuns(dataDir)) return error;
  const pid = readLock(dataDir)?.holder?.pid;
  return new UnavailableError(
    `Fast Sandbox is not running for data directory ${dataDir}: its 'fsb up'${pid !== undefined ? ` (pid ${pid})` : ""} was killed or crashed ` +
      `and left its URL ${url} behind (${error.message}); start it again with '${upCommandFor(dataDir)}' (it takes over the stale lock and ` +
      `adopts the sandboxes that still run), or run 'fsb down --data-dir ${dataDir}' to clear what it left`,
    { cause: error },
  );
}

/** The SDK's message for a call the other end cancelled (`callError`): `<what>: the call was cancelled before it finished: <detail>`. */
const CANCELLED_CALL = /: the call was cancelled before it finished: ([^]*)$/;
/** Errors of a connection that was there and broke (not one that could not be opened). */
const CONNECTION_LOST_CODES = new Set([
  "ECONNRESET",
  "EPIPE",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/** What a call whose connection to the control plane broke asked, and how it broke; undefined for any other failure. */
function connectionLost(error: FsbError): { what?: string; detail: string } | undefined {
  const cancelled = CANCELLED_CALL.exec(error.message);
  if (cancelled) return { what: error.message.slice(0, cancelled.index), detail: cancelled[1] ?? "" };
  const broken = causes(error).some(
    (cause) =>
      CONNECTION_LOST_CODES.has(String((cause as { code?: unknown }).code)) ||
      /\b(ECONNRESET|socket hang up|GOAWAY)\b|stream closed with error code/.test(String((cause as { message?: unknown }).message)),
  );
  return broken ? { detail: error.message } : undefined;
}

/** The error and what caused it, outermost first. */
function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let cause = error; cause !== undefined && cause !== null && chain.length < 10; cause = (cause as { cause?: unknown }).cause) chain.push(cause);
  return chain;
}

function hostAndPort(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname.replace(/^\[|\]$/g, "")}:${parsed.port || (parsed.protocol === "https:" ? "443" : "80")}`;
  } catch {
    return url;
  }
}

const open: SdkConnection[] = [];

/** Closes every connection the command opened, so the process exits as soon as it is done. */
export function closeConnections(): void {
  for (const connection of open.splice(0)) connection.close();
}
