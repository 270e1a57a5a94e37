/**
 * A Fast Sandbox `Sandbox` as E2B's API shows it (`Sandbox`, `ListedSandbox`, `SandboxDetail` of
 * E2B's OpenAPI spec), and what the E2B-compatible API keeps on the record to do so: the template
 * name, the metadata and the nonce of the access token, as annotations. Metadata is one JSON
 * annotation rather than labels or one annotation per key: E2B allows any key and value, which
 * Kubernetes label values and annotation keys do not.
 */
import { parseCpuMillis, parseMemoryBytes, type AgentLimits, type Sandbox, type SandboxPool } from "@fast-sandbox/api";
import { isPaused, pausedAtOf } from "../fastpath/checkpoint-pauses.js";
import type { HostResources } from "./host-resources.js";
import type { E2bSandboxState } from "./e2b-requests.js";

/** The template a sandbox was created from; it marks the sandboxes of the E2B-compatible API. */
export const TEMPLATE_ANNOTATION = "e2b.sandbox.fast.io/template-id";
/** The sandbox's E2B metadata, as a JSON object of strings. */
export const METADATA_ANNOTATION = "e2b.sandbox.fast.io/metadata";
/** The nonce its access token is derived from (see envd-access-token.ts). */
export const TOKEN_NONCE_ANNOTATION = "e2b.sandbox.fast.io/token-nonce";
/** The create's `allow_internet_access`, when it gave one (`true` or `false`): E2B's detail reports it, null when not given. */
export const INTERNET_ACCESS_ANNOTATION = "e2b.sandbox.fast.io/allow-internet-access";
/** E2B's legacy `clientID`: a constant (E2B's own), which Python's SDK requires and JavaScript's ignores. */
export const CLIENT_ID = "6532622b";
/** endAt of a sandbox whose expiry was removed (e.g. with `fsb apply`): it does not end by itself. */
const NO_END = "9999-12-31T23:59:59.000Z";
const MIB = 1024 * 1024;

/** E2B's `Sandbox`: the answer of create and connect. */
export interface E2bSandbox {
  templateID: string;
  sandboxID: string;
  alias: string;
  clientID: string;
  envdVersion: string;
  envdAccessToken: string;
  /**
   * The token of the sandbox's own ports, not its daemon's (envd-access-token.ts): every port is
   * behind a token here (E2B sets this when a sandbox's public traffic is restricted), and E2B's
   * code-interpreter SDKs send it, in `E2B-Traffic-Access-Token`, on the calls that carry no envd token.
   */
  trafficAccessToken: string;
  /** The sandbox proxy's domain with its port (E2B's SDKs' `getHost(port)` is `<port>-<sandboxID>.<domain>`); null when unknown. */
  domain: string | null;
}

/** E2B's `ListedSandbox`: an item of `GET /v2/sandboxes`. */
export interface E2bListedSandbox {
  templateID: string;
  alias: string;
  sandboxID: string;
  clientID: string;
  startedAt: string;
  endAt: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  state: E2bSandboxState;
  metadata: Record<string, string>;
  envdVersion: string;
}

/** E2B's `SandboxDetail`: the answer of `GET /sandboxes/{id}`. */
export interface E2bSandboxDetail extends E2bListedSandbox {
  /** Absent when the token was replaced with `fsb token` (E2B clients cannot be given that one). */
  envdAccessToken?: string;
  /** Whether the create allowed or refused internet access explicitly; null when it did not say. */
  allowInternetAccess: boolean | null;
  domain: string | null;
  /** What happens at the timeout: always killed (a pause on timeout is refused at create), no resume on traffic. */
  lifecycle: { onTimeout: "kill"; autoResume: false };
}

export interface SandboxResources {
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
}

/** Whether the E2B-compatible API created the sandbox. */
export function isE2bSandbox(sandbox: Sandbox): boolean {
  return sandbox.metadata.annotations?.[TEMPLATE_ANNOTATION] !== undefined;
}

/**
 * Whether E2B clients see the sandbox: it is the E2B API's, has an instance id, and runs or is paused.
 * A sandbox being deleted, expired, lost or failed is gone as far as E2B's API goes (it knows no such states).
 */
export function isVisible(sandbox: Sandbox): boolean {
  const phase = sandbox.status?.phase;
  return isE2bSandbox(sandbox) && !sandbox.metadata.deletionTimestamp && Boolean(sandbox.status?.sandboxID) && (phase === "Running" || phase === "Paused");
}

/** E2B's state of a visible sandbox: `paused` from the moment its pause begins, else `running`. */
export function stateOf(sandbox: Sandbox): E2bSandboxState {
  return isPaused(sandbox) ? "paused" : "running";
}

export function templateOf(sandbox: Sandbox): string {
  return sandbox.metadata.annotations?.[TEMPLATE_ANNOTATION] ?? "";
}

/** The sandbox's E2B metadata; a record whose annotation was edited into something else has none. */
export function metadataOf(sandbox: Sandbox): Record<string, string> {
  const text = sandbox.metadata.annotations?.[METADATA_ANNOTATION];
  if (!text) return {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return {};
    return Object.fromEntries(Object.entries(parsed).filter((entry): entry is [string, string] => typeof entry[1] === "string"));
  } catch {
    return {};
  }
}

/**
 * When the sandbox started: its instance's start (`status.startTime`: the create, or the last resume,
 * as E2B starts a resumed sandbox anew; kept while it is paused), else its record's creation.
 */
export function startedAtOf(sandbox: Sandbox): string {
  return sandbox.status?.startTime ?? sandbox.metadata.creationTimestamp ?? new Date(0).toISOString();
}

/** When the sandbox ends: its `spec.expireTime`. (E2B shows a paused sandbox's as its pause: see listedSandboxOf.) */
export function endAtOf(sandbox: Sandbox): string {
  return sandbox.spec.expireTime ? new Date(sandbox.spec.expireTime).toISOString() : NO_END;
}

/**
 * The CPUs, memory and disk of the pool's sandboxes: its `sandboxResources`, else its agents' limits
 * (which bound all of an agent's sandboxes together, so one sandbox at most) where below the
 * host's, else the host's (the disk: its `ephemeralStorage`, else the host's). E2B
 * counts whole CPUs (at least 1) and at least 128 MiB, so smaller limits are rounded up to those.
 */
export function resourcesOf(pool: SandboxPool | undefined, host: HostResources, agent: AgentLimits = {}): SandboxResources {
  const limits = pool?.spec.sandboxResources;
  const cpuMillis = limits?.cpu ? parseCpuMillis(limits.cpu, "sandboxResources.cpu") : agent.cpuMillis;
  const memoryBytes = limits?.memory ? parseMemoryBytes(limits.memory, "sandboxResources.memory") : agent.memoryBytes;
  // An agent's limits may exceed its node (the shipped template's 4 CPUs on a 2-CPU node): the lesser.
  const cpuCount = cpuMillis !== undefined ? Math.min(Math.ceil(cpuMillis / 1000), limits?.cpu ? Infinity : host.cpuCount) : host.cpuCount;
  const memoryMB = memoryBytes !== undefined ? Math.min(Math.floor(memoryBytes / MIB), limits?.memory ? Infinity : host.memoryMB) : host.memoryMB;
  const diskSizeMB = limits?.ephemeralStorage
    ? Math.floor(parseMemoryBytes(limits.ephemeralStorage, "sandboxResources.ephemeralStorage") / MIB)
    : host.diskSizeMB;
  return { cpuCount: Math.max(1, cpuCount), memoryMB: Math.max(128, memoryMB), diskSizeMB };
}

export function e2bSandboxOf(sandbox: Sandbox, envdVersion: string, accessToken: string, trafficAccessToken: string, domain?: string): E2bSandbox {
  const templateID = templateOf(sandbox);
  return {
    templateID,
    sandboxID: sandbox.status?.sandboxID ?? "",
    alias: templateID,
    clientID: CLIENT_ID,
    envdVersion,
    envdAccessToken: accessToken,
    trafficAccessToken,
    // The SDKs reach the daemon through E2B_SANDBOX_URL when it is set (`fsb e2b env` sets it);
    // getHost(port) names the port under this domain, which the sandbox proxy routes.
    domain: domain ?? null,
  };
}

export function listedSandboxOf(sandbox: Sandbox, envdVersion: string, resources: SandboxResources): E2bListedSandbox {
  const templateID = templateOf(sandbox);
  return {
    templateID,
    alias: templateID,
    sandboxID: sandbox.status?.sandboxID ?? "",
    clientID: CLIENT_ID,
    startedAt: startedAtOf(sandbox),
    // A paused sandbox does not end by itself; E2B shows when it was paused.
    endAt: isPaused(sandbox) ? new Date(pausedAtOf(sandbox) ?? startedAtOf(sandbox)).toISOString() : endAtOf(sandbox),
    ...resources,
    state: stateOf(sandbox),
    metadata: metadataOf(sandbox),
    envdVersion,
  };
}

export function sandboxDetailOf(
  sandbox: Sandbox,
  envdVersion: string,
  resources: SandboxResources,
  accessToken: string | undefined,
  domain?: string,
): E2bSandboxDetail {
  const internet = sandbox.metadata.annotations?.[INTERNET_ACCESS_ANNOTATION];
  return {
    ...listedSandboxOf(sandbox, envdVersion, resources),
    ...(accessToken ? { envdAccessToken: accessToken } : {}),
    allowInternetAccess: internet === "true" ? true : internet === "false" ? false : null,
    domain: domain ?? null,
    lifecycle: { onTimeout: "kill", autoResume: false },
  };
}
