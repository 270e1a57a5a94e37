import { readFileSync } from "node:fs";
import { ValidationError, parseDurationMs } from "@fast-sandbox/api/core";
import { DEFAULT_CHECKPOINT_GRACE_MS, DEFAULT_INTERVAL_MS, DEFAULT_PROTECTION_MS } from "./janitor.js";
import { parseLoopbackListen } from "./metrics.js";
import type { JanitorProcessOptions } from "./janitor-process.js";

/** A duration such as `10s`, `2m`, `1h30m`; `0` is allowed where it means "at once". */
export function parseDuration(text: string, field: string, options: { allowZero?: boolean } = {}): number {
  if (options.allowZero && /^0+(ms|s|m|h)?$/.test(text)) return 0;
  return parseDurationMs(text, field);
}

/**
 * The janitor process's settings from its environment (set by `fsb up`, or by a DaemonSet):
 * FSB_JANITOR_INVENTORY `control-plane` (default) or `kubernetes`; for the control plane, FSB_URL and
 * FSB_TOKEN (or FSB_TOKEN_FILE) reach it; for Kubernetes, FSB_NODE_NAME names this node and the API
 * server is found through KUBECONFIG or the in-cluster service account; FSB_CONTAINERD_SOCKET;
 * FSB_CONTAINERD_NAMESPACE (comma-separated, default `fast-sandbox`); FSB_JANITOR_AGENTS_DIR;
 * FSB_CGROUP_ROOT; FSB_NETWORK_STATE_DIR (the sandbox networks' state directories, comma-separated;
 * default every directory under /run/fast-sandbox/network); FSB_JANITOR_INTERVAL (default 10s); FSB_JANITOR_PROTECTION (default 2m);
 * FSB_JANITOR_CHECKPOINT_DIR (the node's checkpoint directory, the agents' FSB_CHECKPOINT_DIR: gone
 * pools' directories are removed there; unset: not looked at); FSB_JANITOR_CHECKPOINT_GRACE (how long a pool must be gone and its directory
 * unchanged first; default 1h); FSB_JANITOR_METRICS (`127.0.0.1:9464`; unset: no endpoint).
 */
export function janitorConfigFromEnv(env: NodeJS.ProcessEnv = process.env): Omit<JanitorProcessOptions, "logger"> {
  const source = env.FSB_JANITOR_INVENTORY || "control-plane";
  if (source !== "control-plane" && source !== "kubernetes") {
    throw new ValidationError("FSB_JANITOR_INVENTORY", `"${source}" is not an inventory; use control-plane or kubernetes`);
  }
  if (source === "kubernetes") {
    const nodeName = env.FSB_NODE_NAME;
    if (!nodeName)
      throw new ValidationError(
        "FSB_NODE_NAME",
        "environment variable is required with FSB_JANITOR_INVENTORY=kubernetes: this node's name (Downward API spec.nodeName)",
      );
    return { ...nodeScopeAndTimings(env), kubernetes: { nodeName, ...(env.KUBECONFIG ? { kubeconfigPath: env.KUBECONFIG } : {}) } };
  }
  const url = env.FSB_URL;
  if (!url) throw new ValidationError("FSB_URL", "environment variable is required: the control plane's URL");
  const token = env.FSB_TOKEN || (env.FSB_TOKEN_FILE ? readFileSync(env.FSB_TOKEN_FILE, "utf8").trim() : "");
  if (!token) throw new ValidationError("FSB_TOKEN", "set FSB_TOKEN or FSB_TOKEN_FILE: the control plane's API is always authenticated");
  return { url, token, ...nodeScopeAndTimings(env) };
}

function nodeScopeAndTimings(env: NodeJS.ProcessEnv): Omit<JanitorProcessOptions, "logger" | "url" | "token" | "kubernetes"> {
  const containerdNamespaces = (env.FSB_CONTAINERD_NAMESPACE || "fast-sandbox")
    .split(",")
    .map((namespace) => namespace.trim())
    .filter(Boolean);
  return {
    containerdNamespaces,
    containerdSocket: env.FSB_CONTAINERD_SOCKET || "/run/containerd/containerd.sock",
    ...(env.FSB_JANITOR_AGENTS_DIR ? { agentsDir: env.FSB_JANITOR_AGENTS_DIR } : {}),
    cgroupRoot: env.FSB_CGROUP_ROOT ?? "",
    ...(env.FSB_NETWORK_STATE_DIR
      ? {
          networkStateDirs: env.FSB_NETWORK_STATE_DIR.split(",")
            .map((dir) => dir.trim())
            .filter(Boolean),
        }
      : {}),
    intervalMs: env.FSB_JANITOR_INTERVAL ? parseDuration(env.FSB_JANITOR_INTERVAL, "FSB_JANITOR_INTERVAL") : DEFAULT_INTERVAL_MS,
    protectionMs: env.FSB_JANITOR_PROTECTION ? parseDuration(env.FSB_JANITOR_PROTECTION, "FSB_JANITOR_PROTECTION", { allowZero: true }) : DEFAULT_PROTECTION_MS,
    ...(env.FSB_JANITOR_CHECKPOINT_DIR ? { checkpointDir: env.FSB_JANITOR_CHECKPOINT_DIR } : {}),
    checkpointGraceMs: env.FSB_JANITOR_CHECKPOINT_GRACE
      ? parseDuration(env.FSB_JANITOR_CHECKPOINT_GRACE, "FSB_JANITOR_CHECKPOINT_GRACE")
      : DEFAULT_CHECKPOINT_GRACE_MS,
    ...(env.FSB_JANITOR_METRICS ? { metricsListen: parseLoopbackListen(env.FSB_JANITOR_METRICS, "FSB_JANITOR_METRICS") } : {}),
  };
}
