/**
 * The controller's settings from its environment (config/manager/controller-deployment.yaml sets
 * them; the Downward API gives the Pod's name and namespace):
 * - FSB_LISTEN `host:port` of the fast-path API, /healthz, /readyz and /metrics (default `0.0.0.0:7070`);
 * - FSB_POD_NAME (required): this replica's identity in the leader election;
 * - FSB_POD_NAMESPACE (required): where the Lease is;
 * - FSB_LEADER_ELECTION_LEASE: the Lease's name (default `fast-sandbox-controller`);
 * - FSB_TOKEN or FSB_TOKEN_FILE (required): bearer token of the fast-path API;
 * - FSB_KUBERNETES_USERS: `on` (the default) lets Kubernetes users call the fast-path API with their
 *   own tokens, each call allowed as far as their RBAC allows (fastpath/api-caller-check.ts; the
 *   controller needs `system:auth-delegator`); `off`: the token above only;
 * - FSB_AGENT_TOKEN or FSB_AGENT_TOKEN_FILE (required): bearer token of the agents' API;
 * - FSB_AGENT_TEMPLATE_FILE: the default agent Pod template (YAML PodTemplateSpec) under every
 *   pool's agentTemplate; FSB_AGENT_IMAGE: the agent image for containers that name none;
 *   FSB_AGENT_CONTAINERD_NAMESPACE: the containerd namespace of the agents (default `k8s.io`);
 * - FSB_AGENT_TEMPLATE_POLICY: what a pool's agentTemplate may set (fleet/agent-template-policy.ts):
 *   `restricted` (the default: scheduling, labels and annotations, the agent container's resources,
 *   probes without exec and proxy env — nothing that raises privilege) or `unrestricted` (anything:
 *   whoever may write a SandboxPool is root on the nodes); FSB_AGENT_TEMPLATE_IMAGES: the images,
 *   comma-separated and matched exactly, a restricted pool's agent container may name (e.g. a
 *   mirror of the agent image; default none);
 * - FSB_POOL_NAMESPACES: the namespaces whose pools get agents, comma-separated namespace names
 *   (default every namespace); a pool elsewhere gets none (its condition NamespaceAllowed=False) and a
 *   Pod elsewhere is no agent. FSB_E2B_NAMESPACE must be one of them while the E2B API is served;
 * - FSB_HEARTBEAT_INTERVAL_MS (default 2000); FSB_LEASE_DURATION_SECONDS (default 15, at least 5:
 *   the leader renews within 2/3 of it, trying every 2/15 of it);
 * - FSB_PROXY_BASE_URL: the sandbox proxy's address as clients reach it; `status.endpoints` are
 *   `<port>-<sandboxID>.` + its host (default `http://localhost:7072`, which works on a machine that
 *   port-forwards the proxy's Service: `kubectl port-forward svc/fast-sandbox-proxy 7072`).
 * - FSB_E2B_LISTEN `host:port` of the E2B-compatible API (default `0.0.0.0:7073`; `off`: not served);
 *   FSB_E2B_API_URL: that API as clients reach it, what `fsb e2b env` prints as E2B_API_URL (default
 *   `http://localhost:7073`: `kubectl port-forward svc/fast-sandbox-controller 7073`);
 *   FSB_E2B_SANDBOX_URL: E2B_SANDBOX_URL, the sandbox proxy as clients reach it (default the
 *   origin of FSB_PROXY_BASE_URL); FSB_E2B_NAMESPACE: the namespace whose pools are E2B's templates
 *   and where E2B's sandboxes are (default `default`; it needs the agents' ServiceAccount and token
 *   Secret, as every namespace that runs pools).
 * The API server is found through KUBECONFIG or the in-cluster service account.
 */
import { readFileSync } from "node:fs";
import { loadYaml, type V1PodTemplateSpec } from "@kubernetes/client-node";
import { parseImageReference, ValidationError } from "@fast-sandbox/api";
import type { AgentPodOptions } from "../fleet/agent-pod.js";
import { AGENT_TEMPLATE_POLICY_MODES, type AgentTemplatePolicy, type AgentTemplatePolicyMode } from "../fleet/agent-template-policy.js";
import { DEFAULT_PROXY_BASE_URL } from "../fastpath/sandbox-manager.js";
import { parseProxyBaseUrl, proxyBaseUrl, type ProxyAddress } from "../proxy/sandbox-endpoints.js";

export interface ControllerConfig {
  host: string;
  port: number;
  identity: string;
  namespace: string;
  leaseName: string;
  leaseDurationSeconds: number;
  token: string;
  /** FSB_KUBERNETES_USERS: Kubernetes users' own tokens are taken, authorized by their RBAC. */
  kubernetesUsers: boolean;
  agentToken: string;
  /** FSB_AGENT_TOKEN_FOR_OLD_PODS=true: agent Pods without AGENT_TOKEN_LABEL are called with `agentToken` (upgrades). */
  agentTokenForOldPods: boolean;
  agentPod: AgentPodOptions;
  /** What a pool's agentTemplate may set (FSB_AGENT_TEMPLATE_POLICY, FSB_AGENT_TEMPLATE_IMAGES). */
  agentTemplatePolicy: AgentTemplatePolicy;
  /** The namespaces whose pools get agents (FSB_POOL_NAMESPACES); unset: every namespace. */
  poolNamespaces?: string[];
  heartbeatIntervalMs: number;
  /** Where `status.endpoints` point: the sandbox proxy's public address. */
  proxyAddress: ProxyAddress;
  /** The E2B-compatible API; undefined: not served (FSB_E2B_LISTEN=off). */
  e2b: E2bEndpointConfig | undefined;
}

export interface E2bEndpointConfig {
  host: string;
  port: number;
  /** E2B_API_URL as clients reach it. */
  apiUrl: string;
  /** E2B_SANDBOX_URL as clients reach it. */
  sandboxUrl: string;
  /** Where E2B's templates (pools) and sandboxes are. */
  sandboxNamespace: string;
}

/** A secret from `<key>` or the file `<key>_FILE` names (a mounted Secret); `what` says why it is required. */
export function secretFromEnv(env: NodeJS.ProcessEnv, key: string, what: string): string {
  const file = env[`${key}_FILE`];
  const value = env[key] || (file ? readFileSync(file, "utf8").trim() : "");
  if (!value) throw new ValidationError(key, `set ${key} or ${key}_FILE: ${what}`);
  return value;
}

export function controllerConfigFromEnv(env: NodeJS.ProcessEnv = process.env): ControllerConfig {
  const required = (key: string, what: string): string => {
    const value = env[key];
    if (!value) throw new ValidationError(key, `environment variable is required: ${what}`);
    return value;
  };
  const secret = (key: string, what: string): string => secretFromEnv(env, key, what);
  const { host, port } = parseListen(env.FSB_LISTEN || "0.0.0.0:7070");
  const templateFile = env.FSB_AGENT_TEMPLATE_FILE;
  const proxyAddress = parseProxyBaseUrl(env.FSB_PROXY_BASE_URL || DEFAULT_PROXY_BASE_URL, "FSB_PROXY_BASE_URL");
  const poolNamespaces = poolNamespacesFromEnv(env);
  const e2b = e2bConfig(env, proxyAddress);
  if (e2b && poolNamespaces && !poolNamespaces.includes(e2b.sandboxNamespace)) {
    // Its templates are that namespace's pools: none would ever get an agent.
    throw new ValidationError(
      "FSB_POOL_NAMESPACES",
      `lists ${poolNamespaces.join(", ")} but not ${e2b.sandboxNamespace}, the namespace of the E2B API's templates and sandboxes (FSB_E2B_NAMESPACE): add it, set FSB_E2B_NAMESPACE to one of them, or set FSB_E2B_LISTEN=off`,
    );
  }
  return {
    host,
    port,
    identity: required("FSB_POD_NAME", "this replica's Pod name (Downward API metadata.name)"),
    namespace: required("FSB_POD_NAMESPACE", "this replica's namespace (Downward API metadata.namespace)"),
    leaseName: env.FSB_LEADER_ELECTION_LEASE || "fast-sandbox-controller",
    leaseDurationSeconds: positiveInteger(env, "FSB_LEASE_DURATION_SECONDS", 15, MIN_LEASE_DURATION_SECONDS, LEASE_DURATION_MINIMUM_REASON),
    token: secret("FSB_TOKEN", "the fast-path API is always authenticated"),
    kubernetesUsers: onOff(env, "FSB_KUBERNETES_USERS", true),
    agentToken: secret("FSB_AGENT_TOKEN", "the agents' API is always authenticated"),
    // Agent Pods made before pools had tokens of their own are called with this one (agent-token.ts).
    agentTokenForOldPods: env.FSB_AGENT_TOKEN_FOR_OLD_PODS === "true",
    agentPod: {
      ...(env.FSB_AGENT_IMAGE ? { image: env.FSB_AGENT_IMAGE } : {}),
      ...(env.FSB_AGENT_CONTAINERD_NAMESPACE ? { containerdNamespace: env.FSB_AGENT_CONTAINERD_NAMESPACE } : {}),
      ...(templateFile ? { baseTemplate: readTemplate(templateFile) } : {}),
    },
    agentTemplatePolicy: agentTemplatePolicyFromEnv(env),
    ...(poolNamespaces ? { poolNamespaces } : {}),
    heartbeatIntervalMs: positiveInteger(env, "FSB_HEARTBEAT_INTERVAL_MS", 2000),
    proxyAddress,
    e2b,
  };
}

/** An `on`/`off` setting (also true/false). */
function onOff(env: NodeJS.ProcessEnv, key: string, fallback: boolean): boolean {
  const text = env[key];
  if (!text) return fallback;
  if (text === "on" || text === "true") return true;
  if (text === "off" || text === "false") return false;
  throw new ValidationError(key, `${JSON.stringify(text)} is neither on nor off`);
}

/** FSB_AGENT_TEMPLATE_POLICY (default restricted) and the images FSB_AGENT_TEMPLATE_IMAGES lists for it. */
function agentTemplatePolicyFromEnv(env: NodeJS.ProcessEnv): AgentTemplatePolicy {
  const text = env.FSB_AGENT_TEMPLATE_POLICY || "restricted";
  if (!(AGENT_TEMPLATE_POLICY_MODES as readonly string[]).includes(text)) {
    throw new ValidationError(
      "FSB_AGENT_TEMPLATE_POLICY",
      `${JSON.stringify(text)} is not a policy: restricted (the default: a pool's agentTemplate may set only what cannot raise privilege) or unrestricted (anything: whoever may write a SandboxPool is root on the nodes)`,
    );
  }
  // Exact references: the pool's `image` must be written as listed (`busybox` is not docker.io/library/busybox:latest).
  const allowedImages = commaList(env.FSB_AGENT_TEMPLATE_IMAGES);
  for (const image of allowedImages) parseImageReference(image, "FSB_AGENT_TEMPLATE_IMAGES");
  return { mode: text as AgentTemplatePolicyMode, allowedImages };
}

/** FSB_POOL_NAMESPACES: namespace names (RFC 1123 labels); undefined when it lists none (every namespace). */
function poolNamespacesFromEnv(env: NodeJS.ProcessEnv): string[] | undefined {
  const names = commaList(env.FSB_POOL_NAMESPACES);
  for (const name of names) {
    if (!NAMESPACE_NAME.test(name)) {
      throw new ValidationError(
        "FSB_POOL_NAMESPACES",
        `${JSON.stringify(name)} is not a namespace name (${NAMESPACE_NAME_RULE}); list names separated by commas`,
      );
    }
  }
  return names.length > 0 ? [...new Set(names)] : undefined;
}

/** The entries of a comma-separated list, trimmed, empty ones left out. */
function commaList(text: string | undefined): string[] {
  return (text ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter(Boolean);
}

function e2bConfig(env: NodeJS.ProcessEnv, proxyAddress: ProxyAddress): E2bEndpointConfig | undefined {
  const listen = env.FSB_E2B_LISTEN || "0.0.0.0:7073";
  if (listen === "off") return undefined;
  let address: { host: string; port: number };
  try {
    address = parseListen(listen);
  } catch {
    throw new ValidationError("FSB_E2B_LISTEN", `${JSON.stringify(listen)} is not host:port (e.g. 0.0.0.0:7073) or off`);
  }
  return {
    ...address,
    apiUrl: serviceUrl(env, "FSB_E2B_API_URL", "http://localhost:7073"),
    sandboxUrl: serviceUrl(env, "FSB_E2B_SANDBOX_URL", proxyBaseUrl(proxyAddress)),
    sandboxNamespace: namespaceName(env, "FSB_E2B_NAMESPACE", "default"),
  };
}

/** A namespace's name: an RFC 1123 (DNS) label. */
const NAMESPACE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const NAMESPACE_NAME_RULE = "lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit";

/** A namespace's name (an RFC 1123 label) from `key`. */
function namespaceName(env: NodeJS.ProcessEnv, key: string, fallback: string): string {
  const text = env[key] || fallback;
  if (!NAMESPACE_NAME.test(text)) throw new ValidationError(key, `${JSON.stringify(text)} is not a namespace name (${NAMESPACE_NAME_RULE})`);
  return text;
}

/** An http(s) origin from `key` (no path: E2B's SDKs append theirs). */
function serviceUrl(env: NodeJS.ProcessEnv, key: string, fallback: string): string {
  const text = env[key] || fallback;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ValidationError(key, `${JSON.stringify(text)} is not a URL; e.g. ${fallback}`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.pathname !== "/" || url.search || url.hash || url.username || url.password) {
    throw new ValidationError(
      key,
      `${JSON.stringify(text)} must be an http:// or https:// scheme, a host and optionally a port, nothing else; e.g. ${fallback}`,
    );
  }
  return url.origin;
}

/** `host:port` or `[v6]:port`, port 0–65535. */
export function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new ValidationError("FSB_LISTEN", `${JSON.stringify(listen)} is not host:port (e.g. 0.0.0.0:7070)`);
  return { host: match[1] ?? match[2] ?? "", port };
}

/**
 * The shortest Lease the leader election works with. The elector derives its renew deadline (2/3)
 * and retry period (2/15) from it; below 5 s a leader would have under 3.3 s, in tries under 700 ms
 * apart, to renew, and one slow answer of the API server would cost it the leadership (the replica
 * restarts).
 */
const MIN_LEASE_DURATION_SECONDS = 5;
const LEASE_DURATION_MINIMUM_REASON =
  "the leader must renew the Lease within 2/3 of its duration, trying every 2/15 of it, and a shorter one leaves too little time for a slow API server: the leader would lose the lease (and restart) on a hiccup";

/** A whole number from `key`, at least `min` (`why`, when given, says why that minimum). */
function positiveInteger(env: NodeJS.ProcessEnv, key: string, fallback: number, min = 1, why?: string): number {
  const text = env[key];
  if (!text) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) {
    throw new ValidationError(key, `${JSON.stringify(text)} is not a whole number of at least ${min}${why ? `: ${why}` : ""}`);
  }
  return value;
}

function readTemplate(path: string): V1PodTemplateSpec {
  let parsed: unknown;
  try {
    parsed = loadYaml(readFileSync(path, "utf8"));
  } catch (error) {
    throw new ValidationError(
      "FSB_AGENT_TEMPLATE_FILE",
      `cannot read the agent Pod template ${path}: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new ValidationError("FSB_AGENT_TEMPLATE_FILE", `${path} is not a Pod template (a YAML mapping with metadata and spec)`);
  }
  return parsed;
}
