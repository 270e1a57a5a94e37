/**
 * Where a request through the sandbox proxy goes, or the answer it gets instead. In order:
 * 1. a route (Host label or E2B headers; or, for E2B's presigned file URLs, which name no sandbox,
 *    the sandbox whose token signed the URL — signed-file-url.ts, signed-file-lookup.ts: 401 for an
 *    expired or foreign signature, 429 past the lookup budget; else 400);
 * 2. a sandbox with that instance id (else 502 with E2B's body, which its SDKs read as "gone");
 * 3. the sandbox's access token in `X-Access-Token`, or, for any port but its daemon's, the traffic
 *    token of a sandbox of the E2B-compatible API in `E2B-Traffic-Access-Token`, or, for its daemon's
 *    port, a presigned file URL its own current token signed (else 401; 400 for a malformed one);
 * 4. a sandbox that runs (Bound: its create may still be finishing — served when it has an address
 *    of its own or its pool's network is known to be Shared, else 503: its agent's address is not
 *    where an Isolated sandbox listens; else 409 with E2B's "The sandbox is paused" while it is
 *    Paused, 503 with its phase while it may still run — Pending, Lost — and 502 once it never
 *    will: deleted, Terminating, Expired, Failed);
 * 5. a port it exposes, or the in-sandbox daemon's port of an Isolated sandbox (else 403 with the
 *    ports it does expose);
 * 6. an address: its own (`status.sandboxIP`, an Isolated network) or its agent's (a Shared network:
 *    the sandbox listens in the agent's network; else 503); and, when the proxy dials Isolated
 *    sandboxes through their agents' relays (Kubernetes), the relay of its agent (else 503).
 * Nothing about the sandbox beyond "not found" is told before the token matched.
 */
import { ACCESS_TOKEN_HEADER, SANDBOX_DAEMON_PORT, TRAFFIC_ACCESS_TOKEN_HEADER, type ErrorCode, type NetworkMode, type Sandbox } from "@fast-sandbox/api";
import { accessTokenMatches, tokensEqual } from "./access-token.js";
import { isRefusal, routeOf, type RoutingHeaders } from "./sandbox-route.js";
import type { SignedFileLookup } from "./signed-file-lookup.js";
import { parseSignedFileRequest, signatureExpired, signedFileTarget, type SignedFileRequest } from "./signed-file-url.js";

export interface ProxyTarget {
  sandboxId: string;
  namespace: string;
  name: string;
  /** The address to connect to: the sandbox's own, or its agent's. */
  host: string;
  port: number;
  /** The agent relay (`host:port` of its agent's API) to dial the address through, if any. */
  relay?: string;
  /** The request target to send instead of the caller's (a presigned file URL: rebuilt from what its signature covers). */
  path?: string;
  /** The sandbox's access token hash when the caller was let in (by the token, a traffic token or a signature derived from it): a tunnel, WebSocket or request in flight lasts only as long as it (open-tunnels.ts). */
  accessTokenHash?: string;
}

/** The JSON answer to a request the proxy does not forward: `{code, message, sandboxId?}`, as E2B's proxy answers. */
export interface ProxyRefusal {
  status: number;
  body: { code: number; message: string; sandboxId?: string; port?: number };
  /**
   * Fast Sandbox's own error code, sent as the `fsb-error-code` header beside E2B's body: a Connect
   * client reads headers but not the body of a failed stream, so the SDKs tell "gone" (`not_found`)
   * and "paused" (`failed_precondition`) from a port that does not answer (all 502 or 409 to E2B's SDKs).
   */
  errorCode?: ErrorCode;
}

export interface ProxyTargetSources {
  /** The sandbox whose current instance has this id (an informer's cache: no store read). */
  lookup(sandboxId: string): Promise<Sandbox | undefined>;
  /**
   * The address of an agent (the registry's hostIP): where the sandboxes of a Shared network listen.
   * `namespace` is the sandbox's: an agent of another namespace of that name (a Pod's name is unique
   * only within its namespace) is not its agent, and has no address for it (agent-fleet.ts's agentsByName).
   */
  agentAddress(agentName: string, namespace: string): string | undefined;
  /**
   * The relay of an agent (`host:port` of its API), when Isolated sandboxes are reached through
   * their agents (Kubernetes: a sandbox's address is routable only inside its agent's network).
   * Absent: Isolated sandboxes are dialed directly (embedded: one host). `namespace` as for agentAddress.
   */
  agentRelay?(agentName: string, namespace: string): string | undefined;
  /**
   * Which sandbox signed an E2B presigned file URL, among those whose access tokens the proxy can
   * derive (those the E2B-compatible API created): such URLs are routed to it; and whether a routed
   * sandbox's token signed one sent to its daemon's host name. Absent: such URLs are not routed.
   */
  signedFiles?: Pick<SignedFileLookup, "find" | "signerOf">;
  /**
   * Whether every port of an Isolated sandbox is reachable, not only its exposed ones (E2B's
   * semantics, for the sandboxes its API created: `getHost(port)` works for any port). @default none
   */
  exposesEveryPort?(sandbox: Sandbox): boolean;
  /** The sandbox's E2B traffic token (its own ports, not its daemon's), if it has one (e2b/envd-access-token.ts). */
  trafficTokenOf?(sandbox: Sandbox): string | undefined;
  /**
   * The network mode of the sandbox's pool, when known here. A sandbox being created (Bound) has no
   * address of its own yet, and only a Shared one listens at its agent's address: a Bound sandbox
   * without an address is routed only when this says Shared (else 503 until it runs).
   */
  networkModeOf?(sandbox: Sandbox): NetworkMode | undefined;
  /**
   * Tells `listener` of every change to a sandbox's record (as it is now), and of its deletion (as
   * last seen, `deleted`), e.g. `SandboxDirectory.onChange`; returns what stops it. The proxy closes
   * the tunnels and WebSockets a new access token or the deletion no longer allows. Absent: they last
   * as long as their connections.
   */
  onSandboxChange?(listener: (sandbox: Sandbox, deleted: boolean) => void): () => void;
  /** The proxy's public domain, e.g. `localhost`. */
  domain: string;
}

/** Phases in which a sandbox's instance exists on its agent. */
const SERVING_PHASES = new Set(["Bound", "Running"]);
/** Phases after which the instance never serves again. */
const GONE_PHASES = new Set(["Terminating", "Expired", "Failed"]);

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

export function isProxyRefusal(value: ProxyTarget | ProxyRefusal): value is ProxyRefusal {
  return "status" in value;
}

function refuse(status: number, message: string, extra: { sandboxId?: string; port?: number; errorCode?: ErrorCode } = {}): ProxyRefusal {
  return {
    status,
    body: { ...(extra.sandboxId ? { sandboxId: extra.sandboxId } : {}), message, code: status, ...(extra.port ? { port: extra.port } : {}) },
    ...(extra.errorCode ? { errorCode: extra.errorCode } : {}),
  };
}

/** The method and URL of an HTTP request (a presigned file URL routes by them). */
export interface RequestLine {
  method?: string | undefined;
  url?: string | undefined;
  /** The caller's address (presigned URL lookups are budgeted per caller). */
  remoteAddress?: string | undefined;
}

/** The presigned file request the request is, or the refusal (malformed, expired); undefined when it is not one. */
function signedFileRequest(request: RequestLine | undefined, sources: ProxyTargetSources): SignedFileRequest | ProxyRefusal | undefined {
  const signed = sources.signedFiles ? parseSignedFileRequest(request?.method, request?.url) : undefined;
  if (!signed) return undefined;
  if ("malformed" in signed) return refuse(400, signed.malformed);
  // The expiration is in the URL: an expired one is refused before any signature is computed.
  if (signatureExpired(signed, Math.floor(Date.now() / 1000))) return refuse(401, "this file URL has expired: ask for a new one");
  return signed;
}

/** The sandbox whose token signed a presigned file URL, or the refusal; undefined when the request is not one. */
async function signedFileSandbox(
  request: RequestLine | undefined,
  sources: ProxyTargetSources,
): Promise<{ sandbox: Sandbox; path: string } | ProxyRefusal | undefined> {
  const signed = signedFileRequest(request, sources);
  if (!signed || "body" in signed) return signed;
  if (!sources.signedFiles) return undefined;
  const found = await sources.signedFiles.find(signed, request?.remoteAddress);
  if (found === "busy") return refuse(429, "too many new file URLs were looked up lately; retry in a few seconds");
  // A match whose token was rotated since the URL was signed (`fsb token NAME`) no longer counts.
  if (found === "unmatched" || !accessTokenMatches(found.token, found.sandbox.status?.accessTokenHash)) {
    return refuse(401, "the signature of this file URL matches no sandbox: ask the sandbox for a new URL (download_url/upload_url)");
  }
  return { sandbox: found.sandbox, path: signedFileTarget(signed) };
}

/**
 * A presigned file URL on the routed sandbox's daemon port (`49983-<id>.<domain>/files?…&signature=`,
 * what E2B's SDKs build without E2B_SANDBOX_URL): the signed request target, when the routed sandbox's
 * own token signed it and is still its token; else the refusal; undefined when the request is not one.
 * A signature by another sandbox's token never opens this one.
 */
function routedSignedFile(request: RequestLine | undefined, sandbox: Sandbox, sources: ProxyTargetSources): { path: string } | ProxyRefusal | undefined {
  const signed = signedFileRequest(request, sources);
  if (!signed || "body" in signed) return signed;
  if (!sources.signedFiles) return undefined;
  const found = sources.signedFiles.signerOf(signed, sandbox);
  if (!found || !accessTokenMatches(found.token, sandbox.status?.accessTokenHash)) {
    return refuse(401, "the signature of this file URL is not this sandbox's: ask the sandbox for a new URL (download_url/upload_url)", {
      ...(sandbox.status?.sandboxID ? { sandboxId: sandbox.status.sandboxID } : {}),
    });
  }
  return { path: signedFileTarget(signed) };
}

export async function resolveProxyTarget(headers: RoutingHeaders, sources: ProxyTargetSources, request?: RequestLine): Promise<ProxyTarget | ProxyRefusal> {
  const route = routeOf(headers, sources.domain);
  let signedFor: Sandbox | undefined;
  let signedPath: string | undefined;
  if (isRefusal(route)) {
    const signed = await signedFileSandbox(request, sources);
    if (!signed) return refuse(400, route.refused);
    if ("body" in signed) return signed;
    signedFor = signed.sandbox;
    signedPath = signed.path;
  }
  const sandboxId = isRefusal(route) ? (signedFor?.status?.sandboxID ?? "") : route.sandboxId;
  const port = isRefusal(route) ? SANDBOX_DAEMON_PORT : route.port;
  const sandbox = signedFor ?? (await sources.lookup(sandboxId));
  if (!sandbox) return refuse(502, "The sandbox was not found", { sandboxId, errorCode: "not_found" });
  const namespace = sandbox.metadata.namespace ?? "default";
  const name = sandbox.metadata.name;
  const token = single(headers[ACCESS_TOKEN_HEADER]);
  const traffic = single(headers[TRAFFIC_ACCESS_TOKEN_HEADER]);
  // A presigned URL's signature stands for the token. The traffic header opens any port but the
  // daemon's with the traffic token, and any with the access token (which opens everything anyway:
  // E2B clients of an older answer hold it there).
  const hash = sandbox.status?.accessTokenHash;
  const trafficAllowed = (port !== SANDBOX_DAEMON_PORT && tokensEqual(traffic, sources.trafficTokenOf?.(sandbox))) || accessTokenMatches(traffic, hash);
  if (!signedFor && !trafficAllowed && !accessTokenMatches(token, hash)) {
    // On the sandbox's own route to its daemon (E2B's SDKs without E2B_SANDBOX_URL), a presigned
    // file URL stands for the token too: checked against this sandbox's token alone.
    const signed = !isRefusal(route) && port === SANDBOX_DAEMON_PORT ? routedSignedFile(request, sandbox, sources) : undefined;
    if (signed && "body" in signed) return signed;
    if (signed) signedPath = signed.path;
    else {
      const daemonOnly =
        port === SANDBOX_DAEMON_PORT ? " (the traffic token opens the sandbox's own ports, not its daemon's: send the access token in X-Access-Token)" : "";
      return refuse(
        401,
        token
          ? "the X-Access-Token header does not hold this sandbox's access token ('fsb token NAME' makes a new one)"
          : traffic
            ? `the E2B-Traffic-Access-Token header does not hold this sandbox's traffic token${daemonOnly}`
            : port === SANDBOX_DAEMON_PORT
              ? "the X-Access-Token header is missing: send the sandbox's access token (printed by 'fsb run'; 'fsb token NAME' makes a new one)"
              : "the X-Access-Token header is missing: send the sandbox's access token (printed by 'fsb run'; 'fsb token NAME' makes a new one), " +
                "or its traffic access token in E2B-Traffic-Access-Token (E2B's SDKs: sandbox.trafficAccessToken)",
        { sandboxId },
      );
    }
  }
  const phase = sandbox.status?.phase ?? "Pending";
  // E2B's proxy answers a paused sandbox so (409): it runs again once resumed (connect).
  if (phase === "Paused" && !sandbox.metadata.deletionTimestamp) return refuse(409, "The sandbox is paused", { sandboxId, errorCode: "failed_precondition" });
  if (sandbox.metadata.deletionTimestamp || !SERVING_PHASES.has(phase)) {
    const state = sandbox.metadata.deletionTimestamp ? "being deleted" : phase;
    // Gone for good (502, what E2B's SDKs read as "not running"), or not yet / not now (503).
    const gone = Boolean(sandbox.metadata.deletionTimestamp) || GONE_PHASES.has(phase);
    return refuse(gone ? 502 : 503, `sandbox ${namespace}/${name} is ${state}, not running`, { sandboxId });
  }
  const isolated = Boolean(sandbox.status?.sandboxIP);
  if (phase === "Bound" && !isolated && sources.networkModeOf?.(sandbox) !== "Shared") {
    return refuse(503, `sandbox ${namespace}/${name} is starting (Bound), not running yet; retry shortly`, { sandboxId });
  }
  const exposed = sandbox.spec.exposedPorts ?? [];
  const open = isolated && (port === SANDBOX_DAEMON_PORT || sources.exposesEveryPort?.(sandbox) === true);
  if (!exposed.includes(port) && !open) {
    return refuse(
      403,
      `port ${port} of sandbox ${namespace}/${name} is not exposed (${exposed.length > 0 ? `exposed: ${exposed.join(", ")}` : "it exposes none"}); ports are declared at create (fsb run -p PORT)`,
      { sandboxId, port },
    );
  }
  const agent = sandbox.status?.assignedPod;
  const host = sandbox.status?.sandboxIP || (agent ? sources.agentAddress(agent, namespace) : undefined);
  const notConnected = () => refuse(503, `the agent ${agent ?? "?"} of sandbox ${namespace}/${name} is not connected; retry shortly`, { sandboxId });
  if (!host) return notConnected();
  const path = signedPath !== undefined ? { path: signedPath } : {};
  const letInWith = hash !== undefined ? { accessTokenHash: hash } : {};
  if (isolated && sources.agentRelay) {
    const relay = agent ? sources.agentRelay(agent, namespace) : undefined;
    if (!relay) return notConnected();
    return { sandboxId, namespace, name, host, port, relay, ...path, ...letInWith };
  }
  return { sandboxId, namespace, name, host, port, ...path, ...letInWith };
}
