/**
 * The agent Pod of a SandboxPool (Kubernetes mode): the pool's `spec.agentTemplate` (a Pod
 * template; the user's containers, resources, node selectors and tolerations are kept) with what
 * the agent needs injected into the container named `agent` (or the first one):
 * - identity through the Downward API (name, UID, namespace, node) and the pool's name;
 * - its own resource limits (`resourceFieldRef`): the agent bounds the cgroup its sandboxes'
 *   cgroups are made in with them, so these bound all of its sandboxes together;
 * - the node's containerd (the `/run/containerd` directory, so a restarted containerd's new socket
 *   is seen, and `/var/lib/containerd`), in the namespace `k8s.io` the kubelet uses, so images the
 *   node already holds are shared;
 * - the agent API token: the pool's own (agent-token.ts), derived from the deployment's token
 *   (`deploymentToken`), from the pool's token Secret (pool-token-secret.ts, which the fleet writes
 *   before it creates Pods) and labelled so, or without one the deployment's from a Secret of the
 *   pool's namespace; and the address to listen on;
 * - the node's checkpoint directory (FSB_CHECKPOINT_DIR, a hostPath at its host path): the agent keeps
 *   a pool's gVisor checkpoints (paused sandboxes among them) in `<dir>/<namespace>/<pool>`, shared by
 *   the pool's agents on the node, so they outlive the agent that made them (a replaced or scaled-down
 *   agent Pod) — never in the agent's own state directory, which the agent falls back to without it;
 * - FSB_AGENT_OWN_NETWORK: the Pod has a network of its own, which the agent's Shared runc sandboxes
 *   join (the agent names it under /run/netns), instead of the node's, where runc would leave them.
 * The pool's template is merged over the deployment's default template (`baseTemplate`, the file
 * config/agent/agent-pod-template.yaml: containers, init containers and volumes by name, env by
 * name, mounts by path); containers that name no image get the agent image.
 * The Pod is named `<pool>-agent-<random>`, labelled with its pool and its template's hash, and owned
 * by the pool (deleting the pool deletes its agents through the garbage collector). Pure: no I/O.
 */
import type { V1Container, V1EnvVar, V1Pod, V1PodTemplateSpec, V1Probe, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import { AGENT_CONTAINER_NAME, API_VERSION, agentLimitsOf, type AgentLimits, type SandboxPool } from "@fast-sandbox/api";
import { preparedInstancesEnv } from "../fastpath/instance-template.js";
import { agentTemplateHash, TEMPLATE_HASH_LABEL } from "./agent-template-hash.js";
import { AGENT_TOKEN_LABEL, POOL_TOKEN_SCHEME, POOL_TOKEN_SECRET_KEY, poolTokenSecretName } from "./agent-token.js";

/** The label every agent Pod carries: the name of its pool. */
export const POOL_LABEL = "fast-sandbox.io/pool";
/** The container that runs the agent when the template names one so; otherwise the first. */
export const AGENT_CONTAINER = AGENT_CONTAINER_NAME;

export interface AgentPodOptions {
  /** The agent image, for a template whose agent container names none. @default "fast-sandbox.io/agent:latest" */
  image?: string;
  /** The port of the agent API on the Pod's IP. @default 7071 */
  port?: number;
  /**
   * The deployment's agent token: each pool's agents get their pool's token derived from it
   * (poolAgentToken) from the pool's token Secret (poolTokenSecretName). @default "": the deployment's token itself, from the
   * Secret `tokenSecretName` of the pool's namespace
   */
  deploymentToken?: string;
  /** The Secret (in the pool's namespace) holding the agent API token, without `deploymentToken`. @default "fast-sandbox-agent-token" */
  tokenSecretName?: string;
  /** The key of the token in that Secret. @default "token" */
  tokenSecretKey?: string;
  /** The containerd namespace the agent works in. @default "k8s.io" */
  containerdNamespace?: string;
  /** The deployment's default agent Pod template, under every pool's `agentTemplate`. @default none */
  baseTemplate?: V1PodTemplateSpec;
}

export const AGENT_POD_DEFAULTS: Required<AgentPodOptions> = {
  image: "fast-sandbox.io/agent:latest",
  port: 7071,
  deploymentToken: "",
  tokenSecretName: "fast-sandbox-agent-token",
  tokenSecretKey: "token",
  containerdNamespace: "k8s.io",
  baseTemplate: {},
};

const CONTAINERD_RUN_DIR = "/run/containerd";
const CONTAINERD_SOCKET = `${CONTAINERD_RUN_DIR}/containerd.sock`;
const CONTAINERD_ROOT = "/var/lib/containerd";
/**
 * The node's directory of the pools' gVisor checkpoints (`<dir>/<namespace>/<pool>`), as the embedded
 * mode's `<dataDir>/checkpoints`. The host's containerd writes the images there, so the agent must
 * see it at the same path as the host.
 */
export const AGENT_CHECKPOINT_DIR = "/var/lib/fast-sandbox/checkpoints";
/** The hostPath volume of AGENT_CHECKPOINT_DIR (config/agent/agent-pod-template.yaml names it so too). */
const CHECKPOINT_VOLUME = "sandbox-checkpoints";

/**
 * The limits of the agent container of the pool's agent Pods (its agentTemplate over `baseTemplate`),
 * which bound all of an agent's sandboxes together; none for a template that sets none, or limits
 * that are not quantities (the API server refuses such a Pod).
 */
export function agentPodLimits(pool: SandboxPool, options: Pick<AgentPodOptions, "baseTemplate"> = {}): AgentLimits {
  const agentTemplate = mergePodTemplates(structuredClone(options.baseTemplate ?? {}), structuredClone((pool.spec.agentTemplate ?? {}) as V1PodTemplateSpec));
  try {
    return agentLimitsOf({ agentTemplate });
  } catch {
    return {};
  }
}

/** `<pool>-agent-`; the API server appends 5 random characters. */
export function agentPodGenerateName(pool: string): string {
  return `${pool}-agent-`;
}

/**
 * The agent Pod for `pool` (it must have been read from the API server: its UID is the owner
 * reference's), labelled with the hash of everything else in it (TEMPLATE_HASH_LABEL): a Pod whose
 * label differs from a Pod built now was started from an earlier pool spec or base template.
 */
export function buildAgentPod(pool: SandboxPool, options: AgentPodOptions = {}): V1Pod {
  const pod = buildUnlabelledAgentPod(pool, options);
  const labels = pod.metadata?.labels ?? {};
  return { ...pod, metadata: { ...pod.metadata, labels: { ...labels, [TEMPLATE_HASH_LABEL]: agentTemplateHash(pod) } } };
}

/** The hash of the template of the pool's agent Pods (the TEMPLATE_HASH_LABEL of a Pod built now). */
export function agentPodTemplateHash(pool: SandboxPool, options: AgentPodOptions = {}): string {
  return buildAgentPod(pool, options).metadata?.labels?.[TEMPLATE_HASH_LABEL] ?? "";
}

function buildUnlabelledAgentPod(pool: SandboxPool, options: AgentPodOptions): V1Pod {
  const settings = { ...AGENT_POD_DEFAULTS, ...options };
  const poolName = pool.metadata.name;
  const namespace = pool.metadata.namespace ?? "default";
  if (!pool.metadata.uid) throw new Error(`SandboxPool ${namespace}/${poolName} has no uid: read it from the API server before building its agent Pods`);
  const template = mergePodTemplates(structuredClone(settings.baseTemplate), structuredClone((pool.spec.agentTemplate ?? {}) as V1PodTemplateSpec));
  const spec = template.spec ?? { containers: [] };
  const containers: V1Container[] = (spec.containers?.length ? spec.containers : [{ name: AGENT_CONTAINER }]).map((c) => ({
    ...c,
    image: c.image ?? settings.image,
  }));
  if (spec.initContainers) spec.initContainers = spec.initContainers.map((c) => ({ ...c, image: c.image ?? settings.image }));
  const agentIndex = Math.max(
    0,
    containers.findIndex((c) => c.name === AGENT_CONTAINER),
  );
  const prepared = Object.entries(preparedInstancesEnv(pool)).map(([name, value]) => ({ name, value }));
  const token: V1EnvVar = settings.deploymentToken
    ? { name: "FSB_AGENT_TOKEN", valueFrom: { secretKeyRef: { name: poolTokenSecretName(poolName), key: POOL_TOKEN_SECRET_KEY } } }
    : { name: "FSB_AGENT_TOKEN", valueFrom: { secretKeyRef: { name: settings.tokenSecretName, key: settings.tokenSecretKey } } };
  containers[agentIndex] = injectAgent(containers[agentIndex] ?? { name: AGENT_CONTAINER }, poolName, settings, [token, ...prepared]);
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      ...template.metadata,
      name: undefined,
      generateName: agentPodGenerateName(poolName),
      namespace,
      labels: {
        ...template.metadata?.labels,
        "app.kubernetes.io/name": "fast-sandbox",
        "app.kubernetes.io/component": "agent",
        [POOL_LABEL]: poolName,
        ...(settings.deploymentToken ? { [AGENT_TOKEN_LABEL]: POOL_TOKEN_SCHEME } : {}),
      },
      ownerReferences: [
        {
          apiVersion: API_VERSION,
          kind: "SandboxPool",
          name: poolName,
          uid: pool.metadata.uid,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    spec: {
      ...spec,
      restartPolicy: spec.restartPolicy ?? "Always",
      containers,
      volumes: mergeByName(spec.volumes ?? [], agentVolumes()),
    },
  };
}

function injectAgent(container: V1Container, pool: string, settings: Required<AgentPodOptions>, extraEnv: V1EnvVar[]): V1Container {
  // The resourceFieldRefs name the container they read, which is this one whatever its name.
  const name = container.name || AGENT_CONTAINER;
  return {
    ...container,
    name,
    image: container.image ?? settings.image,
    // Ours win over the template's for the same name: the agent cannot work with other values. They
    // take the template's places, so a later `$(FSB_AGENT_NAME)` of the template still expands.
    env: withAgentEnv(container.env ?? [], [...agentEnv(name, pool, settings), ...extraEnv]),
    ports: container.ports?.some((p) => p.containerPort === settings.port)
      ? container.ports
      : [...(container.ports ?? []), { name: "agent", containerPort: settings.port, protocol: "TCP" }],
    // A template's own mount at one of these paths stays (e.g. the e2e suite's checkpoint
    // directory, a hostPath elsewhere on its host).
    volumeMounts: mergeMounts(container.volumeMounts ?? [], [
      { name: "containerd-run", mountPath: CONTAINERD_RUN_DIR },
      { name: "containerd-root", mountPath: CONTAINERD_ROOT },
      { name: CHECKPOINT_VOLUME, mountPath: AGENT_CHECKPOINT_DIR },
    ]),
    readinessProbe: container.readinessProbe ?? agentReadinessProbe(settings.port),
  };
}

/**
 * What a template may set itself: the address the agent listens on (e.g. `$(POD_IP):7071` where Pods
 * share a network); its port must stay the fleet's agent port.
 */
const TEMPLATE_MAY_SET = new Set(["FSB_AGENT_LISTEN"]);

/** The template's env with ours in place of theirs of the same name, ours it lacks appended. */
function withAgentEnv(theirs: V1EnvVar[], injected: V1EnvVar[]): V1EnvVar[] {
  const ours = injected.filter((e) => !(TEMPLATE_MAY_SET.has(e.name) && theirs.some((t) => t.name === e.name)));
  const byName = new Map(ours.map((e) => [e.name, e]));
  const replaced = theirs.map((e) => byName.get(e.name) ?? e);
  return [...replaced, ...ours.filter((o) => !theirs.some((t) => t.name === o.name))];
}

function agentEnv(container: string, pool: string, settings: Required<AgentPodOptions>): V1EnvVar[] {
  const field = (name: string, fieldPath: string): V1EnvVar => ({ name, valueFrom: { fieldRef: { fieldPath } } });
  return [
    field("FSB_AGENT_NAME", "metadata.name"),
    field("FSB_AGENT_UID", "metadata.uid"),
    field("FSB_AGENT_NAMESPACE", "metadata.namespace"),
    { name: "FSB_AGENT_POOL", value: pool },
    field("FSB_NODE_NAME", "spec.nodeName"),
    field("FSB_HOST_IP", "status.hostIP"),
    // Without limits in the template these are the node's allocatable CPU and memory.
    { name: "FSB_AGENT_CPU_LIMIT_MILLICORES", valueFrom: { resourceFieldRef: { containerName: container, resource: "limits.cpu", divisor: "1m" } } },
    { name: "FSB_AGENT_MEMORY_LIMIT_BYTES", valueFrom: { resourceFieldRef: { containerName: container, resource: "limits.memory", divisor: "1" } } },
    { name: "FSB_AGENT_LISTEN", value: `0.0.0.0:${settings.port}` },
    { name: "FSB_CONTAINERD_SOCKET", value: CONTAINERD_SOCKET },
    { name: "FSB_CONTAINERD_NAMESPACE", value: settings.containerdNamespace },
    // The node's, shared by the pool's agents there: not `<FSB_AGENT_STATE_DIR>/checkpoints`, the
    // agent's own, whose checkpoints (paused sandboxes) would go with the agent.
    { name: "FSB_CHECKPOINT_DIR", value: AGENT_CHECKPOINT_DIR },
    // The Pod's network is not the node's: Shared runc sandboxes join it (runc would leave them in the node's).
    { name: "FSB_AGENT_OWN_NETWORK", value: "true" },
  ];
}

function agentVolumes(): V1Volume[] {
  return [
    // The directory, not the socket file: a restarted containerd makes a new socket, which a bind
    // mount of the file would not follow.
    { name: "containerd-run", hostPath: { path: CONTAINERD_RUN_DIR, type: "Directory" } },
    { name: "containerd-root", hostPath: { path: CONTAINERD_ROOT, type: "Directory" } },
    { name: CHECKPOINT_VOLUME, hostPath: { path: AGENT_CHECKPOINT_DIR, type: "DirectoryOrCreate" } },
  ];
}

/**
 * The agent answers `/readyz` once it reaches containerd and holds its token. A NotReady Pod is a
 * lost agent to the fleet, so the probe allows what the heartbeat does (agent-heartbeat.ts): a
 * couple of seconds per answer (a busy host, a full GC), three misses in a row.
 */
function agentReadinessProbe(port: number): V1Probe {
  return { httpGet: { path: "/readyz", port }, periodSeconds: 2, timeoutSeconds: 2, failureThreshold: 3 };
}

/** The template's volumes, plus ours it does not already define (by name). */
function mergeByName<T extends { name: string }>(theirs: T[], ours: T[]): T[] {
  return [...theirs, ...ours.filter((o) => !theirs.some((t) => t.name === o.name))];
}

/** The template's mounts, plus ours at paths it does not already mount something at. */
function mergeMounts(theirs: V1VolumeMount[], ours: V1VolumeMount[]): V1VolumeMount[] {
  return [...theirs, ...ours.filter((o) => !theirs.some((t) => t.mountPath === o.mountPath))];
}

/**
 * `overlay` (a pool's agentTemplate) over `base` (the deployment's default): metadata labels and
 * annotations merged, other spec fields of the overlay win; containers, init containers and volumes
 * merged by name, a container's env by name and its mounts by path, the overlay's winning.
 */
export function mergePodTemplates(base: V1PodTemplateSpec, overlay: V1PodTemplateSpec): V1PodTemplateSpec {
  const baseSpec = base.spec;
  const overlaySpec = overlay.spec;
  const metadata = {
    ...base.metadata,
    ...overlay.metadata,
    labels: { ...base.metadata?.labels, ...overlay.metadata?.labels },
    annotations: { ...base.metadata?.annotations, ...overlay.metadata?.annotations },
  };
  if (!baseSpec || !overlaySpec) return { metadata, ...((overlaySpec ?? baseSpec) ? { spec: overlaySpec ?? baseSpec } : {}) };
  const containers = mergeContainers(baseSpec.containers, overlaySpec.containers) ?? [];
  const initContainers = mergeContainers(baseSpec.initContainers, overlaySpec.initContainers);
  const volumes = overlayByKey(baseSpec.volumes, overlaySpec.volumes, (v) => v.name);
  return {
    metadata,
    spec: {
      ...baseSpec,
      ...overlaySpec,
      containers,
      ...(initContainers ? { initContainers } : {}),
      ...(volumes ? { volumes } : {}),
    },
  };
}

function mergeContainers(base: V1Container[] | undefined, overlay: V1Container[] | undefined): V1Container[] | undefined {
  if (!base?.length) return overlay;
  if (!overlay?.length) return base;
  const merged = base.map((b) => {
    const o = overlay.find((c) => c.name === b.name);
    if (!o) return b;
    const env = overlayByKey(b.env, o.env, (e) => e.name);
    const volumeMounts = overlayByKey(b.volumeMounts, o.volumeMounts, (m) => m.mountPath);
    return { ...b, ...o, ...(env ? { env } : {}), ...(volumeMounts ? { volumeMounts } : {}) };
  });
  return [...merged, ...overlay.filter((o) => !base.some((b) => b.name === o.name))];
}

/** The base's items with the overlay's replacing those of the same key, then the overlay's new ones. */
function overlayByKey<T>(base: T[] | undefined, overlay: T[] | undefined, key: (item: T) => string): T[] | undefined {
  if (!base) return overlay;
  if (!overlay) return base;
  const byKey = new Map(overlay.map((item) => [key(item), item]));
  return [...base.map((item) => byKey.get(key(item)) ?? item), ...overlay.filter((item) => !base.some((b) => key(b) === key(item)))];
}
