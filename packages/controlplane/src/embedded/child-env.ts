/**
 * The environment of the embedded mode's children (agents, janitor): what their parent sets for
 * them on purpose, plus the few variables of `fsb up`'s own environment that are this host's
 * settings. Nothing else of it is passed: the user's FSB_TOKEN/FSB_URL (the CLI's, for any control
 * plane) must not sit in every agent's /proc/<pid>/environ, and settings the parent owns (a pool's
 * FSB_PREPARED_INSTANCES or agent limits, FSB_NODE_NAME, the janitor's FSB_JANITOR_INVENTORY or
 * KUBECONFIG) left in the user's shell must not silently change what the children do.
 */

/** What every child takes from the host: its search path, home, locale and time zone, proxies and TLS trust (registry pulls), coverage. */
const HOST_ENV = [
  "PATH",
  "HOME",
  "TMPDIR",
  "LANG",
  "LANGUAGE",
  "TZ",
  "HTTP_PROXY",
  "HTTPS_PROXY",
  "NO_PROXY",
  "ALL_PROXY",
  "http_proxy",
  "https_proxy",
  "no_proxy",
  "all_proxy",
  "NODE_EXTRA_CA_CERTS",
  "SSL_CERT_FILE",
  "SSL_CERT_DIR",
  "NODE_V8_COVERAGE",
  "FSB_LOG_LEVEL",
] as const;

/**
 * The agent's settings of this host (agent-config.ts, network-settings.ts; README "Sandbox
 * networks" and "Development"), which `fsb up`'s environment sets for every agent. Not among them:
 * what the fleet sets per agent or per pool (name, token, state, containerd, cgroup, checkpoints,
 * registry credentials, prepared instances, limits) and what only a Pod has (FSB_AGENT_UID,
 * FSB_AGENT_OWN_NETWORK, FSB_NODE_NAME, KUBERNETES_SERVICE_HOST).
 */
export const AGENT_HOST_ENV: readonly string[] = [
  ...HOST_ENV,
  "FSB_HELPER_PATH",
  "FSB_ENVD_PATH",
  "FSB_RUNSC_PATH",
  "FSB_CNI_PATH",
  "FSB_NETWORK_NAME",
  "FSB_NETWORK_SUBNET",
  "FSB_NETWORK_STATE_DIR",
  "FSB_NETWORK_DNS",
  "FSB_NETWORK_RESOLV_CONF",
  "FSB_NETWORK_PREPARED",
  "FSB_NETWORK_DENY",
  "FSB_HOST_IP",
  "FSB_STATS_INTERVAL_MS",
  "FSB_STATS_HISTORY_SAMPLES",
  "FSB_DISK_CHECK_INTERVAL_MS",
  "FSB_SANDBOX_LOG_MAX_BYTES",
];

/** The janitor's settings of this host (janitor-config.ts): where the agents' sandbox networks keep their state, as the agents see it. */
export const JANITOR_HOST_ENV: readonly string[] = [...HOST_ENV, "FSB_NETWORK_STATE_DIR"];

/**
 * The variables of `names` that `env` sets (an empty value too: `FSB_NETWORK_DENY=` means "deny
 * nothing", unlike an unset one), and the locale's LC_* ones, under `own`, which wins.
 */
export function childEnv(names: readonly string[], own: Record<string, string>, env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const chosen: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value !== undefined && (names.includes(name) || name.startsWith("LC_"))) chosen[name] = value;
  }
  return { ...chosen, ...own };
}
