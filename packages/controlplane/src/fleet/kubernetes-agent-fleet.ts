/**
 * The Kubernetes `AgentFleet`: a pool's agents are Pods it owns (agent-pod.ts), created and deleted
 * directly — no Deployment or ReplicaSet, because which agent goes is the pool sizer's choice (an
 * idle one, never a busy one), not a ReplicaSet's.
 *
 * Pods labelled `fast-sandbox.io/pool` are watched with client-node's informer (list + watch,
 * restarted after an error, after a pause that doubles while the errors go on; each watch ends after
 * 5–10 minutes, or its deadline if the connection went silent, and watches again from where it got
 * to: deadline-watch.ts). `start()` resolves once a first list succeeded: until then the fleet
 * knows no Pod, and a caller that went on would take the agents for gone. Only Pods a SandboxPool controls (their controller owner reference) are agents:
 * one that merely carries the label is not the fleet's to report or delete, and the owner's uid is
 * the agent's `poolUid`. An agent is ready when its Pod has an IP and `Ready=True` (the
 * readiness probe asks the agent) and is not being deleted; its endpoint is `<podIP>:<port>`. A Pod
 * that stops being ready is `lost`; a deleted one `lost` (if it was ready) then `removed`. A Pod in
 * phase Failed or Succeeded (evicted, its node shut down) never runs again: its agent is `terminated`,
 * and the pool controller deletes it. A Pod's `fast-sandbox.io/template-hash` label is its agent's
 * `templateHash`. Every other call to the API server has a time limit (kubernetes-request-timeout.ts):
 * a list or a Pod's creation or deletion the server never answers fails with UnavailableError.
 * With the deployment's agent token (`pod.deploymentToken`), the pool's token Secret
 * (pool-token-secret.ts) is written before each batch of Pods, which read their token from it.
 *
 * What the deployment allows (the controller's settings): a pool's agentTemplate that the
 * `templatePolicy` refuses (agent-template-policy.ts) makes no Pod — `templateHash` and `startAgents`
 * throw its AgentTemplateNotAllowedError (a PermissionDeniedError) — and with `poolNamespaces`
 * (pool-namespaces.ts) no Pod is created in another namespace, and a Pod there is no agent whatever
 * its labels and owner say: neither reported nor fetched, so never registered nor sent a token.
 */
import { ApiException, CoreV1Api, ListWatch, type KubeConfig, type V1OwnerReference, type V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  GROUP,
  PermissionDeniedError,
  UnavailableError,
  type FsbError,
  type SandboxPool,
} from "@fast-sandbox/api";
import { sleep, systemClock, type Clock, type Timer } from "../controller/clock.js";
import { backoffDelayMs } from "../controller/work-queue.js";
import { AgentsNotStoppedError, type AgentFleet, type AgentFleetEvent, type AgentFleetListener, type FleetAgent, type PoolRef } from "./agent-fleet.js";
import { DeadlineWatch } from "./deadline-watch.js";
import { AGENT_POD_DEFAULTS, POOL_LABEL, agentPodTemplateHash, buildAgentPod, type AgentPodOptions } from "./agent-pod.js";
import { buildPoolTokenSecret, poolTokenSecretPatch } from "./pool-token-secret.js";
import { DEFAULT_AGENT_TEMPLATE_POLICY, checkAgentTemplatePolicy, type AgentTemplatePolicy } from "./agent-template-policy.js";
import { TEMPLATE_HASH_LABEL } from "./agent-template-hash.js";
import { AGENT_TOKEN_LABEL, poolTokenSecretName } from "./agent-token.js";
import { poolNamespaceAllowed, poolNamespaceRefusal } from "./pool-namespaces.js";
import { translateKubernetesError } from "../store/kubernetes-resource-store.js";
import { requestTimeouts, withRequestTimeout, type KubernetesRequestTimeouts } from "../store/kubernetes-request-timeout.js";

/** `requestTimeoutMs` (default 30 s) limits a Pod's creation and deletion, `listTimeoutMs` (default 90 s) the list of the Pods. */
export interface KubernetesAgentFleetOptions extends KubernetesRequestTimeouts {
  kubeConfig: KubeConfig;
  logger: Pick<Logger, "info" | "warn" | "error">;
  /** Only Pods of this namespace (a controller limited to one namespace). @default all namespaces */
  namespace?: string;
  /** How agent Pods are built (image, port, token Secret). @default AGENT_POD_DEFAULTS */
  pod?: AgentPodOptions;
  /** What a pool's agentTemplate may set (FSB_AGENT_TEMPLATE_POLICY): one it refuses makes no Pod. @default DEFAULT_AGENT_TEMPLATE_POLICY (restricted) */
  templatePolicy?: AgentTemplatePolicy;
  /** The namespaces whose pools have agents (FSB_POOL_NAMESPACES): elsewhere no Pod is created, and none is an agent. @default every namespace */
  poolNamespaces?: readonly string[];
  /** Recorded in managedFields as the writer of the Pods. @default "fast-sandbox" */
  fieldManager?: string;
  /**
   * Delay before the informer starts again after an error. It doubles after each failed first list,
   * and after each failed watch (or relist) until a watch has worked, up to `maxRestartDelayMs`.
   * @default 1000
   */
  restartDelayMs?: number;
  /**
   * The longest delay between two failed first lists, or two failed watches; a watch that ran this
   * long worked (the next failure waits `restartDelayMs` again). @default 30000
   */
  maxRestartDelayMs?: number;
  /** Times the informer's restarts. @default systemClock */
  clock?: Clock;
  /** The `timeoutSeconds` each Pod watch asks for. @default drawn for each watch between 300 and 599 */
  watchTimeoutSeconds?: number;
  /** How long past its `timeoutSeconds` a Pod watch the server has not closed is ended by this side. @default 30000 */
  watchGraceMs?: number;
}

/** The SandboxPool that controls the Pod (an agent Pod's owner: agent-pod.ts), if any. */
function poolOwnerOf(pod: V1Pod): V1OwnerReference | undefined {
  const owner = pod.metadata?.ownerReferences?.find((reference) => reference.controller === true);
  return owner?.kind === "SandboxPool" && owner.apiVersion.startsWith(`${GROUP}/`) ? owner : undefined;
}

/** What the fleet knows about one Pod of a pool. */
function agentOf(pod: V1Pod, owner: V1OwnerReference, port: number): FleetAgent {
  const phase = pod.status?.phase;
  const ended = phase === "Failed" || phase === "Succeeded";
  const ready =
    !ended &&
    !pod.metadata?.deletionTimestamp &&
    Boolean(pod.status?.podIP) &&
    (pod.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
  const why = [pod.status?.reason, pod.status?.message].filter(Boolean).join(": ");
  return {
    name: pod.metadata?.name ?? "",
    namespace: pod.metadata?.namespace ?? "default",
    pool: pod.metadata?.labels?.[POOL_LABEL] ?? "",
    ready,
    ...(ready ? { endpoint: `${pod.status?.podIP}:${port}` } : {}),
    ...(pod.spec?.nodeName ? { nodeName: pod.spec.nodeName } : {}),
    ...(pod.status?.hostIP ? { hostIP: pod.status.hostIP } : {}),
    ...(pod.metadata?.uid ? { uid: pod.metadata.uid } : {}),
    ...(owner.uid ? { poolUid: owner.uid } : {}),
    ...(ended ? { terminated: `its Pod is ${phase}${why ? ` (${why})` : ""}` } : {}),
    ...(pod.metadata?.labels?.[TEMPLATE_HASH_LABEL] ? { templateHash: pod.metadata.labels[TEMPLATE_HASH_LABEL] } : {}),
    ...(pod.metadata?.labels?.[AGENT_TOKEN_LABEL] ? { tokenScheme: pod.metadata.labels[AGENT_TOKEN_LABEL] } : {}),
  };
}

function agentKey(agent: { namespace: string; name: string }): string {
  return `${agent.namespace}/${agent.name}`;
}

function podKey(pod: V1Pod): string {
  return agentKey({ namespace: pod.metadata?.namespace ?? "default", name: pod.metadata?.name ?? "" });
}

/** Oldest first by creationTimestamp (a Date once listed, a string from a watch; unknown: last), equals kept in order. */
function byAge(a: V1Pod, b: V1Pod): number {
  const created = (pod: V1Pod): number => {
    const at = pod.metadata?.creationTimestamp as unknown;
    const ms = at instanceof Date ? at.getTime() : typeof at === "string" ? Date.parse(at) : Number.NaN;
    return Number.isNaN(ms) ? Number.POSITIVE_INFINITY : ms;
  };
  const [x, y] = [created(a), created(b)];
  return x < y ? -1 : x > y ? 1 : 0;
}

export class KubernetesAgentFleet implements AgentFleet {
  private readonly options: KubernetesAgentFleetOptions;
  private readonly core: CoreV1Api;
  private readonly port: number;
  /** The last state reported per Pod (namespace/name). */
  private readonly agents = new Map<string, FleetAgent>();
  /** Pods of pools in namespaces `poolNamespaces` leaves out, already logged (namespace/name), until they are deleted. */
  private readonly outsideLogged = new Set<string>();
  /** Which Pod (namespace/name) holds each agent name: the one reported under it (holdsName). */
  private readonly holders = new Map<string, string>();
  /** Pods left out because another namespace's Pod holds their name, as last seen, by namespace/name. */
  private readonly withheld = new Map<string, V1Pod>();
  private readonly listeners = new Set<AgentFleetListener>();
  private informer: ListWatch<V1Pod> | undefined;
  private readonly clock: Clock;
  private restartTimer: Timer | undefined;
  private stopped = false;
  /** Aborted by stop(): ends start()'s wait between two first lists. */
  private readonly stopRequested = new AbortController();
  private readonly timeouts: Required<KubernetesRequestTimeouts>;

  constructor(options: KubernetesAgentFleetOptions) {
    this.options = options;
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.port = options.pod?.port ?? AGENT_POD_DEFAULTS.port;
    this.clock = options.clock ?? systemClock;
    this.timeouts = requestTimeouts(options);
  }

  /**
   * Lists the agent Pods and watches them. Resolves once a list succeeded — a failed one (client-node's
   * informer reports it as an error and returns as if done) is tried again, `restartDelayMs` later and
   * twice as late each time, up to `maxRestartDelayMs` — and rejects when stop() comes first.
   */
  async start(): Promise<void> {
    const { namespace } = this.options;
    const path = namespace ? `/api/v1/namespaces/${namespace}/pods` : "/api/v1/pods";
    let listed = false;
    let listError: unknown;
    const list = async () => {
      const pods = await withRequestTimeout(`list the agent Pods${namespace ? ` of namespace ${namespace}` : ""}`, this.timeouts.listTimeoutMs, (call) =>
        namespace
          ? this.core.listNamespacedPod({ namespace, labelSelector: POOL_LABEL }, call)
          : this.core.listPodForAllNamespaces({ labelSelector: POOL_LABEL }, call),
      );
      // Oldest first: of two Pods of one name in two namespaces, every fleet takes the one that held it first (holdsName).
      pods.items.sort(byAge);
      listed = true;
      return pods;
    };
    const watch = new DeadlineWatch(this.options.kubeConfig, {
      ...(this.options.watchTimeoutSeconds !== undefined ? { timeoutSeconds: this.options.watchTimeoutSeconds } : {}),
      ...(this.options.watchGraceMs !== undefined ? { graceMs: this.options.watchGraceMs } : {}),
    });
    const informer = new ListWatch<V1Pod>(path, watch, list, false, POOL_LABEL);
    informer.on("add", (pod) => this.observe(pod));
    informer.on("update", (pod) => this.observe(pod));
    informer.on("delete", (pod) => {
      this.outsideLogged.delete(podKey(pod));
      this.forget(pod);
    });
    const initialDelayMs = this.options.restartDelayMs ?? 1000;
    const maxDelayMs = this.options.maxRestartDelayMs ?? 30_000;
    /** Failed watches (or relists) in a row since one worked, and when the informer last started. */
    let failures = 0;
    let startedAtMs = this.clock.now().getTime();
    const restart = (error: unknown): void => {
      if (this.stopped) return;
      if (!listed) {
        // The first list: start() tries it again.
        listError = error;
        return;
      }
      // Backing off: an API server that refuses every watch (overloaded, or an RBAC rule gone) is not
      // asked again every second. A watch that ran for the longest delay worked: the back-off starts over.
      if (this.clock.now().getTime() - startedAtMs >= maxDelayMs) failures = 0;
      failures += 1;
      const delayMs = backoffDelayMs(failures, initialDelayMs, maxDelayMs);
      this.options.logger.warn({ err: error, failures, retryInMs: delayMs }, "the agent Pod watch failed; watching again after a pause");
      this.restartTimer?.cancel();
      this.restartTimer = this.clock.setTimeout(() => {
        if (this.stopped) return;
        startedAtMs = this.clock.now().getTime();
        informer.start().catch(restart);
      }, delayMs);
    };
    informer.on("error", restart);
    this.informer = informer;
    for (let delayMs = initialDelayMs; ; delayMs = Math.min(delayMs * 2, maxDelayMs)) {
      // A relist (after an error) reports the Pods deleted meanwhile as deletes.
      startedAtMs = this.clock.now().getTime();
      if (!this.stopped) await informer.start().catch(restart);
      if (this.stopped) {
        // The informer watches after a list even when it was stopped during the list: ends that watch.
        await informer.stop();
        throw new UnavailableError("the agent fleet was stopped before it could list the agent Pods");
      }
      if (listed) return;
      this.options.logger.warn({ err: listError, retryInMs: delayMs }, "could not list the agent Pods; trying again");
      await sleep(this.clock, delayMs, this.stopRequested.signal).catch(() => undefined);
    }
  }

  /**
   * Creates the Pods one at a time. When the API server refuses one (a quota, the namespace going),
   * the Pods already created are still returned — the caller counts them as starting and asks for
   * the rest later — and only a batch that created none fails.
   */
  async startAgents(pool: SandboxPool, count: number): Promise<string[]> {
    const namespace = pool.metadata.namespace ?? "default";
    const poolKey = `${namespace}/${pool.metadata.name}`;
    this.admitPool(pool);
    if (count > 0 && this.options.pod?.deploymentToken) await this.writeTokenSecret(pool);
    const names: string[] = [];
    for (let i = 0; i < count; i++) {
      let created: V1Pod;
      try {
        const body = buildAgentPod(pool, this.options.pod);
        created = await withRequestTimeout(`create an agent Pod in namespace ${namespace}`, this.timeouts.requestTimeoutMs, (call) =>
          this.core.createNamespacedPod({ namespace, body, fieldManager: this.options.fieldManager ?? "fast-sandbox" }, call),
        );
      } catch (error) {
        const translated = agentPodCreateError(error, namespace);
        if (names.length === 0) throw translated;
        this.options.logger.warn({ err: translated, pool: poolKey, created: names, refused: count - names.length }, "agent Pods created in part");
        break;
      }
      const name = created.metadata?.name ?? "";
      this.options.logger.info({ agent: name, pool: poolKey }, "agent Pod created");
      names.push(name);
    }
    return names;
  }

  /**
   * Writes the pool's token Secret (pool-token-secret.ts) before its Pods are created, which need it
   * to start: patched when it exists (a user may have emptied it), created when it does not. A Secret
   * of that name that is not the pool's is left as it is, and no Pod is created (AlreadyExistsError).
   */
  private async writeTokenSecret(pool: SandboxPool): Promise<void> {
    const namespace = pool.metadata.namespace ?? "default";
    const deploymentToken = this.options.pod?.deploymentToken ?? "";
    const name = poolTokenSecretName(pool.metadata.name);
    const what = `write the agent token Secret ${namespace}/${name}`;
    const fieldManager = this.options.fieldManager ?? "fast-sandbox";
    const patch = () =>
      withRequestTimeout(what, this.timeouts.requestTimeoutMs, (call) =>
        this.core.patchNamespacedSecret({ name, namespace, body: poolTokenSecretPatch(pool, deploymentToken), fieldManager }, call),
      );
    const refused = (error: unknown): FsbError => {
      // A failed `test` of the patch: the Secret is someone else's.
      if (error instanceof ApiException && error.code === 422) {
        return new AlreadyExistsError(
          `Secret ${namespace}/${name} exists and is not pool ${pool.metadata.name}'s (its ${POOL_LABEL} label or its owner differ: a Secret of your own, or a deleted pool's not yet removed): the pool's agents read their token from a Secret of that name; rename or delete it`,
        );
      }
      return translateKubernetesError(error, { action: what });
    };
    try {
      await patch();
      return;
    } catch (error) {
      if (!(error instanceof ApiException && error.code === 404)) throw refused(error);
    }
    try {
      await withRequestTimeout(what, this.timeouts.requestTimeoutMs, (call) =>
        this.core.createNamespacedSecret({ namespace, body: buildPoolTokenSecret(pool, deploymentToken), fieldManager }, call),
      );
    } catch (error) {
      // Created meanwhile (another replica that led a moment ago): patched as any existing one.
      if (!(error instanceof ApiException && error.code === 409)) throw agentPodCreateError(error, namespace, what);
      try {
        await patch();
      } catch (again) {
        throw refused(again);
      }
    }
  }

  /**
   * Throws what startAgents would for the pool before creating a Pod (a PermissionDeniedError): its
   * namespace may not run pools, or the policy refuses its agentTemplate.
   */
  admitPool(pool: SandboxPool): void {
    const outside = poolNamespaceRefusal(this.options.poolNamespaces, pool.metadata.namespace ?? "default");
    if (outside !== undefined) throw new PermissionDeniedError(outside);
    this.checkTemplate(pool);
  }

  /** Throws, as startAgents does, when the policy refuses the pool's agentTemplate: no agent would start. */
  templateHash(pool: SandboxPool): string {
    this.checkTemplate(pool);
    return agentPodTemplateHash(pool, this.options.pod);
  }

  /** The pool's own agentTemplate against the deployment's policy (the base template is the deployment's, trusted). */
  private checkTemplate(pool: SandboxPool): void {
    checkAgentTemplatePolicy(pool.spec.agentTemplate, this.options.templatePolicy ?? DEFAULT_AGENT_TEMPLATE_POLICY);
  }

  /**
   * Deletes the Pods all at once; when some deletions fail, rejects with AgentsNotStoppedError naming
   * those alone: the others are deleted, and their agents must not be put back into service.
   */
  async stopAgents(pool: PoolRef, names: readonly string[]): Promise<void> {
    const poolKey = `${pool.namespace}/${pool.pool}`;
    const results = await Promise.allSettled(
      names.map(async (name) => {
        const known = this.agents.get(agentKey({ namespace: pool.namespace, name }));
        // Only Pods of this pool: a name from another pool (or no longer ours) is not deleted.
        if (known && known.pool !== pool.pool) return;
        try {
          await withRequestTimeout(`delete the agent Pod ${pool.namespace}/${name}`, this.timeouts.requestTimeoutMs, (call) =>
            this.core.deleteNamespacedPod(
              {
                name,
                namespace: pool.namespace,
                // The Pod we mean, not a later one of the same name.
                ...(known?.uid ? { body: { preconditions: { uid: known.uid } } } : {}),
              },
              call,
            ),
          );
          this.options.logger.info({ agent: name, pool: poolKey }, "agent Pod deleted");
        } catch (error) {
          const code = (error as { code?: number }).code;
          if (code === 404 || code === 409) return; // already gone, or replaced
          throw translateKubernetesError(error, { action: `delete the agent Pod ${pool.namespace}/${name}` });
        }
      }),
    );
    const failures = results.flatMap((result, index) => (result.status === "rejected" ? [{ name: names[index] ?? "", error: result.reason as unknown }] : []));
    if (failures.length === 0) return;
    const notStopped = failures.map(({ name }) => name);
    this.options.logger.warn({ err: failures[0]?.error, pool: poolKey, notStopped, stopped: names.length - notStopped.length }, "agent Pods not deleted");
    throw new AgentsNotStoppedError(notStopped, failures[0]?.error);
  }

  /**
   * Lists the pool's Pods (label `fast-sandbox.io/pool=<pool>` in its namespace) from the API server:
   * those a SandboxPool controls. One another namespace's Pod holds the name of (holdsName) says so
   * (`nameTakenBy`): the fleet does not report it while that Pod exists.
   */
  async fetchAgents(pool: PoolRef): Promise<FleetAgent[]> {
    if (!poolNamespaceAllowed(this.options.poolNamespaces, pool.namespace)) return [];
    const what = `list the agent Pods of pool ${pool.namespace}/${pool.pool}`;
    let pods: V1Pod[];
    try {
      const list = await withRequestTimeout(what, this.timeouts.listTimeoutMs, (call) =>
        this.core.listNamespacedPod({ namespace: pool.namespace, labelSelector: `${POOL_LABEL}=${pool.pool}` }, call),
      );
      pods = list.items;
    } catch (error) {
      throw translateKubernetesError(error, { action: what });
    }
    return pods.flatMap((pod) => {
      const owner = poolOwnerOf(pod);
      const agent = owner ? agentOf(pod, owner, this.port) : undefined;
      if (agent?.pool !== pool.pool || agent.namespace !== pool.namespace) return [];
      const holder = this.holders.get(agent.name);
      return [holder !== undefined && holder !== agentKey(agent) ? { ...agent, nameTakenBy: holder } : agent];
    });
  }

  listAgents(pool?: PoolRef): FleetAgent[] {
    return [...this.agents.values()].filter((a) => !pool || (a.namespace === pool.namespace && a.pool === pool.pool)).map((a) => ({ ...a }));
  }

  subscribe(listener: AgentFleetListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopRequested.abort();
    this.restartTimer?.cancel();
    await this.informer?.stop();
  }

  private observe(pod: V1Pod): void {
    const owner = poolOwnerOf(pod);
    if (!owner) {
      // Not a pool's Pod (or no longer: its owner reference was removed), whatever its label says.
      this.forget(pod);
      return;
    }
    if (!poolNamespaceAllowed(this.options.poolNamespaces, pod.metadata?.namespace ?? "default")) {
      this.ignoreOutside(pod);
      return;
    }
    const agent = agentOf(pod, owner, this.port);
    if (!agent.pool) return;
    const key = agentKey(agent);
    if (!this.holdsName(key, pod)) return;
    const previous = this.agents.get(key);
    this.agents.set(key, agent);
    if (previous && previous.uid !== agent.uid) {
      // A new Pod of the same name: the old one is gone.
      if (previous.ready) this.emit({ type: "lost", agent: { ...previous, ready: false }, reason: "Pod replaced" });
      this.emit({ type: "removed", agent: previous });
    }
    const wasReady = previous !== undefined && previous.uid === agent.uid && previous.ready;
    if (agent.ready && (!wasReady || previous.endpoint !== agent.endpoint)) {
      this.emit({ type: "ready", agent: { ...agent, ready: true, endpoint: agent.endpoint ?? "" } });
    } else if (!agent.ready && wasReady) {
      this.emit({ type: "lost", agent, reason: pod.metadata?.deletionTimestamp ? "Pod is being deleted" : "Pod is not ready" });
    }
  }

  /**
   * A pool's Pod in a namespace `poolNamespaces` leaves out is no agent (logged once): made before the
   * namespace was left out, or by someone who may create Pods there to look like one. It is left to
   * run; deleting it, or its pool, is the operator's call.
   */
  private ignoreOutside(pod: V1Pod): void {
    const key = podKey(pod);
    if (!this.outsideLogged.has(key)) {
      this.outsideLogged.add(key);
      this.options.logger.warn(
        { pod: key, poolNamespaces: this.options.poolNamespaces },
        "a SandboxPool's Pod in a namespace FSB_POOL_NAMESPACES leaves out is not taken for an agent",
      );
    }
    this.forget(pod);
  }

  private forget(pod: V1Pod): void {
    const key = podKey(pod);
    this.withheld.delete(key);
    const previous = this.agents.get(key);
    if (!previous) return;
    this.agents.delete(key);
    if (previous.ready) this.emit({ type: "lost", agent: { ...previous, ready: false, endpoint: undefined }, reason: "Pod deleted" });
    this.emit({ type: "removed", agent: { ...previous, ready: false } });
    this.releaseName(previous.name, key);
  }

  /**
   * Whether the Pod (`key`) holds its name, taking it when no Pod does. After the fleet, agents are
   * known by name alone (the registry, the connections, `status.assignedPod`, the proxy), and a Pod's
   * name is unique only within its namespace: the fleet reports one Pod per name — the first it saw,
   * every list ordered oldest first, so that every fleet (each controller replica, the proxy) takes
   * the Pod that held the name first, however the list orders namespaces — and no later Pod takes it
   * while that one exists. Whoever may create Pods (and a SandboxPool) in their own namespace thus
   * cannot take over the name of another namespace's agent, nor the calls about its sandboxes; a
   * sandbox whose agent is gone is never sent to the Pod that takes the name next either (the agent's
   * namespace must be the sandbox's: AgentConnections, agentsByName). A Pod of another namespace is
   * withheld (logged once) until the holder is gone (releaseName). The names the controller draws,
   * `<pool>-agent-` and 5 random characters, can meet so by chance for two pools of one name in two
   * namespaces: the later agent's pool would count it as starting for as long as the other exists
   * (fetchAgents finds its Pod), so fetchAgents marks it (`nameTakenBy`), and the pool controller
   * deletes it once it stays so past a short grace: another, of another drawn name, is made.
   */
  private holdsName(key: string, pod: V1Pod): boolean {
    const name = pod.metadata?.name ?? "";
    const holder = this.holders.get(name);
    if (holder === undefined || holder === key) {
      this.holders.set(name, key);
      return true;
    }
    if (!this.withheld.has(key)) {
      this.options.logger.warn(
        { agent: name, namespace: pod.metadata?.namespace ?? "default", heldBy: this.agents.get(holder)?.namespace },
        `agent Pod ${key} is left out: Pod ${holder} has its name (agents are known by name, unique only within a namespace); it is taken for an agent once that Pod is gone`,
      );
    }
    this.withheld.set(key, pod);
    return false;
  }

  /** Pod `key`, which held `name`, is gone: the oldest Pod withheld under that name takes it over. */
  private releaseName(name: string, key: string): void {
    if (this.holders.get(name) !== key) return;
    this.holders.delete(name);
    let next: V1Pod | undefined;
    for (const pod of this.withheld.values()) if (pod.metadata?.name === name && (next === undefined || byAge(pod, next) < 0)) next = pod;
    if (next === undefined) return;
    this.withheld.delete(podKey(next));
    this.options.logger.info(
      { agent: name, namespace: next.metadata?.namespace ?? "default" },
      `agent Pod ${podKey(next)} takes its name over from Pod ${key}, gone`,
    );
    this.observe(next);
  }

  /** Asynchronously, in order: never inside the call that caused the change. */
  private emit(event: AgentFleetEvent): void {
    for (const listener of this.listeners) {
      queueMicrotask(() => {
        try {
          listener(event);
        } catch (error) {
          this.options.logger.error({ err: error, event: event.type, agent: event.agent.name }, "an agent fleet listener failed");
        }
      });
    }
  }
}

/** Why an agent Pod was not created, in the Fast Sandbox error hierarchy. */
function agentPodCreateError(error: unknown, namespace: string, action = `create an agent Pod in namespace ${namespace}`): FsbError {
  // The namespace is being deleted (the pool with it): not a failure to retry and report.
  if (error instanceof ApiException && error.code === 403 && /being terminated/.test(String(error.body))) {
    return new FailedPreconditionError(`namespace ${namespace} is being deleted; no agent Pods are started there`);
  }
  return translateKubernetesError(error, { action });
}
