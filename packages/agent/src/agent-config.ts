import { hostname } from "node:os";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromJsonString } from "@bufbuild/protobuf";
import { ValidationError, pb } from "@fast-sandbox/api/core";
import type { CgroupLimits } from "./cgroup.js";
import type { PreparedInstancesSettings } from "./containerd/prepared-instances.js";
import { DEFAULT_LOG_MAX_BYTES } from "./log-rotation.js";
import { runtimeSpecOf } from "./server/create-request.js";

/** Everything an agent process needs, read from its environment (set by the pool that starts it). */
export interface AgentConfig {
  /** FSB_AGENT_NAME (required): unique agent name; labels its containers. */
  name: string;
  /**
   * FSB_AGENT_UID: UID of the agent's Pod (Kubernetes sets it through the Downward API); labels its
   * containers so a Pod recreated under the same name does not take them over. Empty: none (embedded mode).
   */
  uid: string;
  /** FSB_AGENT_NAMESPACE, default `default`: namespace of the agent's pool. */
  namespace: string;
  /** FSB_AGENT_POOL (required). */
  pool: string;
  /** FSB_NODE_NAME, default the host name. */
  nodeName: string;
  /** FSB_AGENT_LISTEN, default `127.0.0.1:0`. */
  listenHost: string;
  listenPort: number;
  /** FSB_AGENT_TOKEN or the file named by FSB_AGENT_TOKEN_FILE (required): bearer token of the agent API. */
  token: string;
  /** FSB_AGENT_STATE_DIR (required): logs and exec FIFOs. */
  stateDir: string;
  /** FSB_CONTAINERD_SOCKET, default `/run/containerd/containerd.sock`. */
  containerdSocket: string;
  /** FSB_CONTAINERD_NAMESPACE, default `fast-sandbox`. */
  containerdNamespace: string;
  /** FSB_CGROUP_PARENT: cgroup of this agent (e.g. `/fast-sandbox/default-0`); empty: no cgroup management. */
  cgroupParent: string;
  /** FSB_HELPER_PATH, default the helper built beside this package (`helper/build/fsb-helper`). */
  helperPath: string;
  /**
   * FSB_ENVD_PATH, default the in-sandbox daemon `scripts/build-envd.sh` builds (`packages/envd/build/fsb-envd`);
   * set but empty: none. The helper runs it in every Isolated sandbox (E2B's envd interface, port 49983).
   */
  envdPath: string;
  /** FSB_REGISTRY_CONFIG: registry credentials in Docker's config.json format (what `fsb login` writes), read at every pull; empty: anonymous pulls. */
  registryConfigPath: string;
  /** FSB_RUNSC_PATH: the runsc binary for gVisor sandboxes; empty: the runtime's default (`/usr/bin/runsc`). */
  runscPath: string;
  /**
   * The pool's gVisor checkpoints on this node: `<FSB_CHECKPOINT_DIR>/<namespace>/<pool>`, shared by
   * the pool's agents there (embedded: `<dataDir>/checkpoints`); FSB_CHECKPOINT_DIR unset:
   * `<stateDir>/checkpoints/<namespace>/<pool>`, this agent's own.
   */
  checkpointDir: string;
  /**
   * FSB_PREPARED_INSTANCES (a count, 0–64) and FSB_PREPARED_TEMPLATE (the pool's template as an
   * agent create request in protobuf JSON, without sandbox id or command): sandboxes the agent keeps
   * ready to be claimed; with FSB_PREPARED_FROM_CHECKPOINT (a checkpoint name, gVisor templates),
   * copies restored ahead from that checkpoint. Undefined when the count is 0 or unset.
   */
  preparedInstances: PreparedInstancesSettings | undefined;
  /**
   * FSB_AGENT_CPU_LIMIT_MILLICORES and FSB_AGENT_MEMORY_LIMIT_BYTES (whole numbers, Kubernetes sets
   * them from the agent container's limits through the Downward API; the embedded mode from the
   * pool's agentTemplate): what all of the agent's sandboxes may use together, each within its own
   * limits. Empty: no bound beyond each sandbox's.
   */
  limits: CgroupLimits;
  /**
   * FSB_AGENT_OWN_NETWORK (`true`/`false`, default false): the agent runs in a network namespace of
   * its own (a Pod's), which its Shared runc sandboxes must join (shared-network.ts); false: it runs
   * in the host's, which they get from the runtime anyway.
   */
  ownNetwork: boolean;
  /** FSB_STATS_INTERVAL_MS: how often each running sandbox's resource use is sampled for its history (stats-history.ts); default 5000. */
  statsIntervalMs: number;
  /** FSB_STATS_HISTORY_SAMPLES: the samples kept per sandbox; default 720 (an hour at 5 s). */
  statsHistorySamples: number;
  /**
   * FSB_DISK_CHECK_INTERVAL_MS: how often each sandbox with a disk limit has its disk use measured
   * and is evicted past it (ephemeral-storage-guard.ts); default 10000, at least 100.
   */
  diskCheckIntervalMs: number;
  /**
   * FSB_SANDBOX_LOG_MAX_BYTES: a sandbox's log is rotated past this size, its previous part kept
   * (log-rotation.ts): at most about twice this per sandbox; default 10 MiB, at least 4096.
   */
  logMaxBytes: number;
}

/** `true` or `false` (empty or unset: false); anything else is refused. */
function booleanFromEnv(env: NodeJS.ProcessEnv, key: string): boolean {
  const value = env[key] ?? "";
  if (value === "" || value === "false") return false;
  if (value === "true") return true;
  throw new ValidationError(key, `${JSON.stringify(value)} is not a boolean: give true or false`);
}

/** The most prepared instances an agent keeps. */
export const MAX_PREPARED_INSTANCES = 64;

function preparedInstancesFromEnv(env: NodeJS.ProcessEnv, namespace: string, pool: string): PreparedInstancesSettings | undefined {
  const countText = env.FSB_PREPARED_INSTANCES ?? "0";
  const count = Number(countText);
  if (!/^\d+$/.test(countText) || count > MAX_PREPARED_INSTANCES) {
    throw new ValidationError("FSB_PREPARED_INSTANCES", `${JSON.stringify(countText)} must be a number of instances from 0 to ${MAX_PREPARED_INSTANCES}`);
  }
  if (count === 0) return undefined;
  let request: pb.AgentCreateSandboxRequest;
  try {
    request = fromJsonString(pb.AgentCreateSandboxRequestSchema, env.FSB_PREPARED_TEMPLATE ?? "");
  } catch (error) {
    throw new ValidationError("FSB_PREPARED_TEMPLATE", `must be an agent create request in protobuf JSON (the pool's template): ${String(error)}`);
  }
  const fromCheckpoint = env.FSB_PREPARED_FROM_CHECKPOINT ?? "";
  if (fromCheckpoint && request.runtimeType !== "gvisor") {
    throw new ValidationError("FSB_PREPARED_FROM_CHECKPOINT", "instances restored from a checkpoint need a gvisor template (runtimeType gvisor)");
  }
  if (!request.image && !fromCheckpoint) throw new ValidationError("FSB_PREPARED_TEMPLATE", "names no image: prepared instances need the pool's image");
  const spec = runtimeSpecOf({ ...request, namespace: request.namespace || namespace }, pool, "");
  return {
    count,
    ...(fromCheckpoint ? { fromCheckpoint } : {}),
    template: {
      namespace: spec.namespace,
      pool,
      image: spec.image,
      runtimeType: spec.runtimeType,
      ...(spec.resources ? { resources: spec.resources } : {}),
      ...(spec.network ? { network: spec.network } : {}),
    },
  };
}

/** A whole number of at least `min` from `key`, or undefined when unset or empty. */
function positiveIntegerFromEnv(env: NodeJS.ProcessEnv, key: string, what: string, min: number): number | undefined {
  const text = env[key] ?? "";
  if (text === "") return undefined;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) {
    throw new ValidationError(key, `${JSON.stringify(text)} must be a whole number of ${what}, at least ${min}`);
  }
  return value;
}

/** The bound on all of the agent's sandboxes together (see AgentConfig.limits). */
function agentLimitsFromEnv(env: NodeJS.ProcessEnv): CgroupLimits {
  // Whatever Kubernetes allows (1m; a quota below the kernel's 1 ms is written as 1 ms).
  const cpuMillis = positiveIntegerFromEnv(env, "FSB_AGENT_CPU_LIMIT_MILLICORES", "millicores", 1);
  const memoryBytes = positiveIntegerFromEnv(env, "FSB_AGENT_MEMORY_LIMIT_BYTES", "bytes", 1);
  return { ...(cpuMillis !== undefined ? { cpuMillis } : {}), ...(memoryBytes !== undefined ? { memoryBytes } : {}) };
}

/** The helper `scripts/build-helper.sh` builds, found relative to this file in src/ and dist/ alike. */
export const DEFAULT_HELPER_PATH = fileURLToPath(new URL("../helper/build/fsb-helper", import.meta.url));

/** The in-sandbox daemon `scripts/build-envd.sh` builds, found relative to this file in src/ and dist/ alike. */
export const DEFAULT_ENVD_PATH = fileURLToPath(new URL("../../envd/build/fsb-envd", import.meta.url));

export function agentConfigFromEnv(env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const required = (key: string): string => {
    const value = env[key];
    if (!value) throw new ValidationError(key, "environment variable is required");
    return value;
  };
  const listen = env.FSB_AGENT_LISTEN || "127.0.0.1:0";
  // host:port, or [v6-address]:port; the port is 0 (any free one) to 65535, in decimal.
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen);
  const listenPort = Number(match?.[3]);
  if (!match || listenPort > 65535) {
    throw new ValidationError("FSB_AGENT_LISTEN", `${JSON.stringify(listen)} is not host:port (e.g. 127.0.0.1:0 or [::1]:7000)`);
  }
  const token = env.FSB_AGENT_TOKEN || (env.FSB_AGENT_TOKEN_FILE ? readFileSync(env.FSB_AGENT_TOKEN_FILE, "utf8").trim() : "");
  if (!token) throw new ValidationError("FSB_AGENT_TOKEN", "set FSB_AGENT_TOKEN or FSB_AGENT_TOKEN_FILE: the agent API is always authenticated");
  return {
    name: required("FSB_AGENT_NAME"),
    uid: env.FSB_AGENT_UID ?? "",
    namespace: env.FSB_AGENT_NAMESPACE ?? "default",
    pool: required("FSB_AGENT_POOL"),
    nodeName: env.FSB_NODE_NAME ?? hostname(),
    listenHost: match[1] ?? match[2] ?? "",
    listenPort,
    token,
    stateDir: required("FSB_AGENT_STATE_DIR"),
    containerdSocket: env.FSB_CONTAINERD_SOCKET ?? "/run/containerd/containerd.sock",
    containerdNamespace: env.FSB_CONTAINERD_NAMESPACE ?? "fast-sandbox",
    cgroupParent: env.FSB_CGROUP_PARENT ?? "",
    helperPath: env.FSB_HELPER_PATH || DEFAULT_HELPER_PATH,
    envdPath: env.FSB_ENVD_PATH ?? DEFAULT_ENVD_PATH,
    registryConfigPath: env.FSB_REGISTRY_CONFIG ?? "",
    runscPath: env.FSB_RUNSC_PATH ?? "",
    checkpointDir: join(
      env.FSB_CHECKPOINT_DIR || join(required("FSB_AGENT_STATE_DIR"), "checkpoints"),
      env.FSB_AGENT_NAMESPACE ?? "default",
      required("FSB_AGENT_POOL"),
    ),
    preparedInstances: preparedInstancesFromEnv(env, env.FSB_AGENT_NAMESPACE ?? "default", required("FSB_AGENT_POOL")),
    limits: agentLimitsFromEnv(env),
    ownNetwork: booleanFromEnv(env, "FSB_AGENT_OWN_NETWORK"),
    statsIntervalMs: positiveIntegerFromEnv(env, "FSB_STATS_INTERVAL_MS", "milliseconds", 100) ?? 5000,
    statsHistorySamples: positiveIntegerFromEnv(env, "FSB_STATS_HISTORY_SAMPLES", "samples", 1) ?? 720,
    diskCheckIntervalMs: positiveIntegerFromEnv(env, "FSB_DISK_CHECK_INTERVAL_MS", "milliseconds", 100) ?? 10_000,
    logMaxBytes: positiveIntegerFromEnv(env, "FSB_SANDBOX_LOG_MAX_BYTES", "bytes", 4096) ?? DEFAULT_LOG_MAX_BYTES,
  };
}
