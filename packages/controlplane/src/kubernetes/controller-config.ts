/**
 * The controller's settings from its environment (config/manager/controller-deployment.yaml sets
 * them; the Downward API gives the Pod's name and namespace):
 * - FSB_LISTEN `host:port` of the fast-path API, /healthz, /readyz and /metrics (default `0.0.0.0:7070`);
 * - FSB_POD_NAME (required): this replica's identity in the leader election;
 * - FSB_POD_NAMESPACE (required): where the Lease is;
 * - FSB_LEADER_ELECTION_LEASE: the Lease's name (default `fast-sandbox-controller`);
 * - FSB_TOKEN or FSB_TOKEN_FILE (required): bearer token of the fast-path API;
 * - FSB_AGENT_TOKEN or FSB_AGENT_TOKEN_FILE (required): bearer token of the agents' API;
 * - FSB_AGENT_TEMPLATE_FILE: the default agent Pod template (YAML PodTemplateSpec) under every
 *   pool's agentTemplate; FSB_AGENT_IMAGE: the agent image for containers that name none;
 *   FSB_AGENT_CONTAINERD_NAMESPACE: the containerd namespace of the agents (default `k8s.io`);
 * - FSB_HEARTBEAT_INTERVAL_MS (default 2000), FSB_LEASE_DURATION_SECONDS (default 15);
 * - FSB_PROXY_BASE_URL: the sandbox proxy's address as clients reach it; `status.endpoints` are
 *   `<port>-<sandboxID>.` + its host (default `http://localhost:7072`, which works on a machine that
 *   port-forwards the proxy's Service: `kubectl port-forward svc/fast-sandbox-proxy 7072`).
 * The API server is found through KUBECONFIG or the in-cluster service account.
 */
import { readFileSync } from "node:fs";
import { loadYaml, type V1PodTemplateSpec } from "@kubernetes/client-node";
import { ValidationError } from "@fast-sandbox/api";
import type { AgentPodOptions } from "../fleet/agent-pod.js";
import { DEFAULT_PROXY_BASE_URL } from "../fastpath/sandbox-manager.js";
import { parseProxyBaseUrl, type ProxyAddress } from "../proxy/sandbox-endpoints.js";

export interface ControllerConfig {
  host: string;
  port: number;
  identity: string;
  namespace: string;
  leaseName: string;
  leaseDurationSeconds: number;
  token: string;
  agentToken: string;
  agentPod: AgentPodOptions;
  heartbeatIntervalMs: number;
  /** Where `status.endpoints` point: the sandbox proxy's public address. */
  proxyAddress: ProxyAddress;
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
  return {
    host,
    port,
    identity: required("FSB_POD_NAME", "this replica's Pod name (Downward API metadata.name)"),
    namespace: required("FSB_POD_NAMESPACE", "this replica's namespace (Downward API metadata.namespace)"),
    leaseName: env.FSB_LEADER_ELECTION_LEASE || "fast-sandbox-controller",
    leaseDurationSeconds: positiveInteger(env, "FSB_LEASE_DURATION_SECONDS", 15),
    token: secret("FSB_TOKEN", "the fast-path API is always authenticated"),
    agentToken: secret("FSB_AGENT_TOKEN", "the agents' API is always authenticated"),
    agentPod: {
      ...(env.FSB_AGENT_IMAGE ? { image: env.FSB_AGENT_IMAGE } : {}),
      ...(env.FSB_AGENT_CONTAINERD_NAMESPACE ? { containerdNamespace: env.FSB_AGENT_CONTAINERD_NAMESPACE } : {}),
      ...(templateFile ? { baseTemplate: readTemplate(templateFile) } : {}),
    },
    heartbeatIntervalMs: positiveInteger(env, "FSB_HEARTBEAT_INTERVAL_MS", 2000),
    proxyAddress: parseProxyBaseUrl(env.FSB_PROXY_BASE_URL || DEFAULT_PROXY_BASE_URL, "FSB_PROXY_BASE_URL"),
  };
}

/** `host:port` or `[v6]:port`, port 0–65535. */
export function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new ValidationError("FSB_LISTEN", `${JSON.stringify(listen)} is not host:port (e.g. 0.0.0.0:7070)`);
  return { host: match[1] ?? match[2] ?? "", port };
}

function positiveInteger(env: NodeJS.ProcessEnv, key: string, fallback: number): number {
  const text = env[key];
  if (!text) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new ValidationError(key, `${JSON.stringify(text)} is not a whole number of at least 1`);
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
