/**
 * What the cases of the Kubernetes e2e suite (test/e2e/kubernetes/<case>/case.ts) share, on top of
 * the fixture (kubernetes-suite.ts): reading Sandboxes, SandboxPools, agent Pods, the controller's
 * replicas and Lease through the suite's kubectl; waiting for a sandbox's state or a pool's agents;
 * watching the API server; removing what a case made; and tests that print the cluster's state
 * when they fail. Containerd's side is containerd-contents.ts, the Pods' processes pod-processes.ts.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { readFileSync } from "node:fs";
import { after, before, it } from "node:test";
import type { Condition, Sandbox, SandboxPhase, SandboxPool, SandboxPoolStatus } from "@fast-sandbox/api";
import { FastSandboxClient } from "@fast-sandbox/sdk";
import {
  AGENT_SELECTOR,
  CONTROLLER_LEASE,
  CONTROLLER_SELECTOR,
  FAST_PATH_PORT,
  JANITOR_SELECTOR,
  SYSTEM_NAMESPACE,
  isPodReady,
  type EventuallyOptions,
  type KubernetesSuiteContext,
  type PodJson,
} from "./kubernetes-suite.js";
import { containerPid } from "./pod-processes.js";

/** The Sandbox resource, fully qualified for kubectl. */
export const SANDBOXES = "sandboxes.sandbox.fast.io";
/** The SandboxPool resource, fully qualified for kubectl. */
export const SANDBOX_POOLS = "sandboxpools.sandbox.fast.io";
/** The label of a pool's agent Pods: `<POOL_LABEL>=<pool name>`. */
export const POOL_LABEL = "fast-sandbox.io/pool";
/** The janitor's metrics and probe port (config/janitor). */
export const JANITOR_PORT = 9464;

// --- Fast Sandbox's objects ---

/** `kubectl get <resource> <name> -o json` in `namespace`; undefined when the API server does not have it (any other failure fails the test). */
export async function getObject<T>(suite: KubernetesSuiteContext, namespace: string, resource: string, name: string): Promise<T | undefined> {
  const result = await suite.kubectl("-n", namespace, "get", resource, name, "-o", "json");
  if (result.code !== 0 && /NotFound|not found/.test(result.stderr)) return undefined;
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as T;
}

/** The Sandbox object, or undefined when it does not exist. */
export function getSandbox(suite: KubernetesSuiteContext, namespace: string, name: string): Promise<Sandbox | undefined> {
  return getObject<Sandbox>(suite, namespace, SANDBOXES, name);
}

/** Every Sandbox object of the namespace. */
export async function listSandboxes(suite: KubernetesSuiteContext, namespace: string): Promise<Sandbox[]> {
  return (JSON.parse(await suite.kubectlOk("-n", namespace, "get", SANDBOXES, "-o", "json")) as { items: Sandbox[] }).items;
}

/** The SandboxPool object; fails the test when it does not exist. */
export async function getPool(suite: KubernetesSuiteContext, namespace: string, pool: string): Promise<SandboxPool> {
  return JSON.parse(await suite.kubectlOk("-n", namespace, "get", SANDBOX_POOLS, pool, "-o", "json")) as SandboxPool;
}

/** The pool's status (empty before the controller first wrote it). */
export async function poolStatus(suite: KubernetesSuiteContext, namespace: string, pool: string): Promise<SandboxPoolStatus> {
  return (await getPool(suite, namespace, pool)).status ?? {};
}

/** A condition of the sandbox's status, by type. */
export function sandboxCondition(sandbox: Sandbox | undefined, type: string): Condition | undefined {
  return sandbox?.status?.conditions?.find((condition) => condition.type === type);
}

/** Polls the Sandbox object until it exists and `accept` holds; returns it. */
export function waitForSandbox(
  suite: KubernetesSuiteContext,
  namespace: string,
  name: string,
  what: string,
  accept: (sandbox: Sandbox) => boolean,
  options?: EventuallyOptions,
): Promise<Sandbox> {
  return suite.eventually(
    what,
    async () => {
      const sandbox = await getSandbox(suite, namespace, name);
      return sandbox && accept(sandbox) ? sandbox : undefined;
    },
    options,
  );
}

/** Polls the Sandbox object until its status shows `phase`; returns it. */
export function waitForPhase(
  suite: KubernetesSuiteContext,
  namespace: string,
  name: string,
  phase: SandboxPhase,
  options?: EventuallyOptions,
): Promise<Sandbox> {
  return waitForSandbox(suite, namespace, name, `sandbox ${name} to be ${phase}`, (sandbox) => sandbox.status?.phase === phase, options);
}

// --- Agent Pods ---

/** The pool's agent Pods, without those being deleted unless `includeDeleting`. */
export function agentPods(suite: KubernetesSuiteContext, namespace: string, pool: string, options?: { includeDeleting?: boolean }): Promise<PodJson[]> {
  return suite.pods(namespace, `${POOL_LABEL}=${pool}`, options);
}

/** Waits until the pool's status counts exactly `count` ready agents (2 minutes at most: agents start as local processes). */
export async function waitForReadyAgents(suite: KubernetesSuiteContext, namespace: string, pool: string, count: number): Promise<void> {
  await suite.eventually(`pool ${pool}'s ${count} agent(s) to be ready`, async () => (await getPool(suite, namespace, pool)).status?.readyAgents === count, {
    timeoutMs: 120_000,
  });
}

// --- Controller replicas and their Lease ---

/** A controller replica (a Pod of the Deployment, not being deleted). */
export interface ControllerReplica {
  /** Its Pod's name (also its identity in the Lease). */
  name: string;
  podIP?: string;
  /** Its fast path: `http://<Pod IP>:7070` (no Service networking in the test cluster). */
  url: string;
  ready: boolean;
  /** The process group leader of its `controller` container (see pod-processes.ts), 0 while it does not run. */
  pid: number;
  restartCount: number;
}

/** The controller's replicas, as their Pods show them now. */
export async function controllerReplicas(suite: KubernetesSuiteContext): Promise<ControllerReplica[]> {
  return (await suite.pods(SYSTEM_NAMESPACE, CONTROLLER_SELECTOR)).map((pod) => {
    const status = pod.status?.containerStatuses?.find((container) => container.name === "controller");
    return {
      name: pod.metadata.name,
      ...(pod.status?.podIP ? { podIP: pod.status.podIP } : {}),
      url: `http://${pod.status?.podIP}:${FAST_PATH_PORT}`,
      ready: isPodReady(pod),
      pid: containerPid(status),
      restartCount: status?.restartCount ?? 0,
    };
  });
}

/** Waits until exactly `count` controller replicas are Ready; returns them. */
export function waitForReadyControllers(suite: KubernetesSuiteContext, count = 2): Promise<ControllerReplica[]> {
  return suite.eventually(`${count} Ready controller replicas`, async () => {
    const ready = (await controllerReplicas(suite)).filter((replica) => replica.ready);
    return ready.length === count ? ready : undefined;
  });
}

/** The controllers' Lease (its spec). */
export interface LeaseSpec {
  /** The holder's Pod name (a replica's identity is `<Pod name>_<random per process>`; the suffix is cut). */
  holderIdentity?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

/** The controllers' Lease, its holder named by Pod. */
export async function controllerLease(suite: KubernetesSuiteContext): Promise<LeaseSpec> {
  const { spec } = JSON.parse(await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "lease", CONTROLLER_LEASE, "-o", "json")) as { spec: LeaseSpec };
  return { ...spec, ...(spec.holderIdentity ? { holderIdentity: spec.holderIdentity.replace(/_[0-9a-f]+$/, "") } : {}) };
}

/** Waits until a replica holds the controllers' Lease; returns its Pod name. */
export function waitForLeaseHolder(suite: KubernetesSuiteContext): Promise<string> {
  return suite.eventually("a holder of the controllers' Lease", async () => (await controllerLease(suite)).holderIdentity);
}

/** A client of the Lease holder's fast path (the replica that sizes the pools), once it is a Ready Pod. */
async function leaderClient(suite: KubernetesSuiteContext): Promise<FastSandboxClient> {
  // Right after the deployment, the holder may still be starting (it listens once its first lists are read).
  const podIP = await suite.eventually(
    "the Lease holder to be a Ready controller Pod",
    async () => {
      const leader = await waitForLeaseHolder(suite);
      const pod = JSON.parse(await suite.kubectlOk("-n", SYSTEM_NAMESPACE, "get", "pod", leader, "-o", "json")) as PodJson;
      return pod.status?.podIP && isPodReady(pod) ? pod.status.podIP : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  return new FastSandboxClient({ url: `http://${podIP}:${FAST_PATH_PORT}`, token: suite.apiToken });
}

/**
 * Registers a pool case's `before` and `after`: a namespace of its own (`namespacePrefix`), a client
 * of the Lease holder's fast path, and the pool of `poolFile` applied there and known to the leader
 * — handed to `use` — then, afterwards, the pool with its sandboxes and agent Pods removed.
 */
export function poolCaseOnLeader(
  suite: KubernetesSuiteContext,
  options: { namespacePrefix: string; poolFile: string; pool: string },
  use: (namespace: string, client: FastSandboxClient) => void,
): void {
  let namespace = "";
  let client: FastSandboxClient | undefined;
  before(
    async () => {
      namespace = await suite.createNamespace(options.namespacePrefix);
      const leader = await leaderClient(suite);
      client = leader;
      await suite.apply(readFileSync(options.poolFile, "utf8"), namespace);
      await suite.eventually("the leader to know the pool", async () => (await leader.pools.get(options.pool, { namespace })).metadata.name === options.pool);
      use(namespace, leader);
    },
    { timeout: 120_000 },
  );
  after(
    async () => {
      if (namespace) await removePool(suite, namespace, options.pool);
      client?.close();
    },
    { timeout: 300_000 },
  );
}

/** The slots the pool's agents hold, as one controller replica's registry sees them (its fast path). */
export async function allocatedSlots(client: FastSandboxClient, namespace: string, pool: string): Promise<number> {
  return (await client.pools.agents({ namespace, pool })).reduce((sum, agent) => sum + agent.allocated, 0);
}

/** `http://<janitor Pod IP>:9464`: its /metrics and /readyz. */
export async function janitorUrl(suite: KubernetesSuiteContext): Promise<string> {
  const [pod] = await suite.pods(SYSTEM_NAMESPACE, JANITOR_SELECTOR, { includeDeleting: true });
  const podIP = pod?.status?.podIP;
  assert.ok(podIP, "the janitor's Pod has an IP");
  return `http://${podIP}:${JANITOR_PORT}`;
}

// --- Watches ---

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

/** The events a watch received so far, until `stop()`. */
export interface Watch<T> {
  readonly events: WatchEvent<T>[];
  stop(): void;
}

/**
 * A watch of an API path (`/api/v1/namespaces/<ns>/pods`, `/apis/sandbox.fast.io/v1alpha1/…`) from
 * now on: it lists first and watches from the list's resourceVersion (`kubectl get --raw`, one JSON
 * event per line), so it has every change after the call returns, however late the watch gets going.
 */
export async function watch<T>(
  suite: KubernetesSuiteContext,
  apiPath: string,
  selectors: { labelSelector?: string; fieldSelector?: string } = {},
): Promise<Watch<T>> {
  const query = new URLSearchParams(Object.entries(selectors).filter((entry): entry is [string, string] => Boolean(entry[1])));
  const listed = JSON.parse(await suite.kubectlOk("get", "--raw", query.size > 0 ? `${apiPath}?${query.toString()}` : apiPath)) as {
    metadata: { resourceVersion: string };
  };
  query.set("watch", "1");
  query.set("resourceVersion", listed.metadata.resourceVersion);
  const child = spawn("kubectl", ["--kubeconfig", suite.kubeconfigPath, "get", "--raw", `${apiPath}?${query.toString()}`], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  const events: WatchEvent<T>[] = [];
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (line.trim() !== "") events.push(JSON.parse(line) as WatchEvent<T>);
  });
  return { events, stop: () => child.kill() };
}

// --- Cleaning up ---

/**
 * Deletes the case's sandboxes first, while their agents run (their cleanup needs them), then its
 * pools and Pods, then its namespace, without waiting for it to go. The namespace goes last, empty:
 * the namespace controller, finding Pods still terminating when it deletes a namespace's content,
 * looks again only after half their grace period (16 s for an agent's 30 s), however fast they end;
 * and it starts 5 s after the deletion at the earliest (what is left then is Secrets and service
 * accounts; the suite's last test waits for every namespace it made to be gone).
 */
export async function deleteCaseNamespace(suite: KubernetesSuiteContext, namespace: string): Promise<void> {
  await suite.kubectl("-n", namespace, "delete", SANDBOXES, "--all", "--timeout=120s");
  await suite.kubectl("-n", namespace, "delete", SANDBOX_POOLS, "--all", "--wait=true", "--timeout=60s");
  await suite.kubectl("-n", namespace, "delete", "pods", "--all", "--wait=true", "--timeout=60s");
  await suite.kubectl("delete", "namespace", namespace, "--wait=false");
}

/** Deletes the pool's sandboxes, then the pool, and waits until its agent Pods are gone (those being deleted too). */
export async function removePool(suite: KubernetesSuiteContext, namespace: string, pool: string): Promise<void> {
  await suite.kubectl("-n", namespace, "delete", SANDBOXES, "--all", "--wait=true", "--timeout=120s");
  await suite.kubectl("-n", namespace, "delete", SANDBOX_POOLS, pool, "--ignore-not-found", "--wait=true", "--timeout=60s");
  await suite.eventually(
    `pool ${pool}'s agent Pods to be gone`,
    async () => (await agentPods(suite, namespace, pool, { includeDeleting: true })).length === 0,
    {
      timeoutMs: 120_000,
    },
  );
}

// --- Failure output ---

/** What a failure message needs: every Pod, the case's Sandboxes and SandboxPools, the Lease, the tail of the controllers' and the case's agents' logs. */
export async function clusterDiagnostics(suite: KubernetesSuiteContext, namespace: string): Promise<string> {
  const parts = [(await suite.kubectl("get", "pods", "-A", "-o", "wide")).stdout];
  parts.push((await suite.kubectl("-n", namespace, "get", `${SANDBOXES},${SANDBOX_POOLS}`, "-o", "yaml")).stdout);
  parts.push((await suite.kubectl("-n", SYSTEM_NAMESPACE, "get", "lease", CONTROLLER_LEASE, "-o", "yaml")).stdout);
  for (const [ns, selector, container] of [
    [SYSTEM_NAMESPACE, CONTROLLER_SELECTOR, "controller"],
    [namespace, AGENT_SELECTOR, "agent"],
  ] as const) {
    const pods = await suite.pods(ns, selector, { includeDeleting: true }).catch((): PodJson[] => []);
    for (const pod of pods) parts.push(`--- ${pod.metadata.name}:\n${suite.podLog(ns, pod.metadata.name, container).split("\n").slice(-60).join("\n")}`);
  }
  return parts.join("\n");
}

/** `it`, with `clusterDiagnostics` of the case's namespace in the output when it fails. */
export function itWithDiagnostics(suite: KubernetesSuiteContext, namespace: () => string, name: string, timeoutMs: number, fn: () => Promise<void>): void {
  it(name, { timeout: timeoutMs }, async () => {
    try {
      await fn();
    } catch (error) {
      console.error(await clusterDiagnostics(suite, namespace()).catch((e: unknown) => `(no diagnostics: ${String(e)})`));
      throw error;
    }
  });
}
