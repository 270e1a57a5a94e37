/**
 * The sandbox proxy Deployment's settings from its environment (config/proxy/proxy-deployment.yaml):
 * - FSB_PROXY_LISTEN `host:port` of the proxy (default `0.0.0.0:7072`);
 * - FSB_PROBE_LISTEN `host:port` of /healthz, /readyz and /metrics (default `0.0.0.0:7073`): not on
 *   the proxy's port, where every path belongs to the sandboxes;
 * - FSB_PROXY_BASE_URL: the proxy's address as clients reach it (the controller's must match), whose
 *   host is the domain routed by Host label (default `http://localhost:7072`);
 * - FSB_AGENT_PORT: the agents' port, to tell agent Pods' addresses (default 7071);
 * - FSB_AGENT_TOKEN or FSB_AGENT_TOKEN_FILE (required): the agents' token, which their relays require
 *   (an Isolated sandbox is reached through the relay of its agent).
 * - FSB_POD_NAMESPACE: the namespace of the controller and this proxy (Downward API), where the
 *   controllers keep the secret of E2B sandboxes' tokens (e2b/kubernetes-token-secret.ts), read to
 *   route E2B's presigned file URLs; unset: those URLs are not routed.
 * The API server is found through KUBECONFIG or the in-cluster service account.
 */
import { parseProxyBaseUrl, type ProxyAddress } from "../proxy/sandbox-endpoints.js";
import { DEFAULT_PROXY_BASE_URL } from "../fastpath/sandbox-manager.js";
import { parseListen, secretFromEnv } from "./controller-config.js";
import { ValidationError } from "@fast-sandbox/api";

export interface ProxyConfig {
  host: string;
  port: number;
  probeHost: string;
  probePort: number;
  proxyAddress: ProxyAddress;
  agentPort: number;
  agentToken: string;
  /** FSB_AGENT_TOKEN_FOR_OLD_PODS=true: agent Pods without AGENT_TOKEN_LABEL are called with `agentToken` (upgrades). */
  agentTokenForOldPods: boolean;
  /** Where the E2B token secret is; undefined: E2B's presigned file URLs are not routed. */
  e2bSecretNamespace: string | undefined;
}

export function proxyConfigFromEnv(env: NodeJS.ProcessEnv = process.env): ProxyConfig {
  const listen = (key: string, fallback: string) => {
    try {
      return parseListen(env[key] || fallback);
    } catch (error) {
      throw new ValidationError(key, error instanceof Error ? error.message.replace(/^FSB_LISTEN: /, "") : String(error));
    }
  };
  const { host, port } = listen("FSB_PROXY_LISTEN", "0.0.0.0:7072");
  const probe = listen("FSB_PROBE_LISTEN", "0.0.0.0:7073");
  const agentPort = Number(env.FSB_AGENT_PORT || 7071);
  if (!Number.isInteger(agentPort) || agentPort < 1 || agentPort > 65535)
    throw new ValidationError("FSB_AGENT_PORT", `${JSON.stringify(env.FSB_AGENT_PORT)} is not a port`);
  return {
    host,
    port,
    probeHost: probe.host,
    probePort: probe.port,
    proxyAddress: parseProxyBaseUrl(env.FSB_PROXY_BASE_URL || DEFAULT_PROXY_BASE_URL, "FSB_PROXY_BASE_URL"),
    agentPort,
    agentToken: secretFromEnv(env, "FSB_AGENT_TOKEN", "Isolated sandboxes are reached through their agents' relays, which require it"),
    // Agent Pods made before pools had tokens of their own are called with this one (agent-token.ts).
    agentTokenForOldPods: env.FSB_AGENT_TOKEN_FOR_OLD_PODS === "true",
    e2bSecretNamespace: env.FSB_POD_NAMESPACE || undefined,
  };
}
