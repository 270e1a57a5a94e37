/**
 * `ReplicaLiveness` from the controller's Pods: the replicas are the Pods that carry this replica's
 * own Pod's labels (those of its Deployment's template: `pod-template-hash` left out, so both sides
 * of a rollout count), in its namespace. Reads them with `list` (the controller's ClusterRole lists
 * Pods; it never gets one by name), at most once a second.
 *
 * What a Pod's status says is what its kubelet last reported: a container that has just started may
 * still read as waiting for a second or so. A replica needs longer than that to start, sync its
 * caches and write a create, so a process that wrote a record before `at` shows as running by then.
 * A Pod deleted by force (`--grace-period=0`) may leave its process running on its node for a while
 * after it is gone from the API: then a create of it can be finished twice, as after any split brain.
 */
import { CoreV1Api, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { systemClock, type Clock } from "../controller/clock.js";
import { requestTimeouts, withRequestTimeout } from "../store/kubernetes-request-timeout.js";
import type { ReplicaLiveness } from "./replica-liveness.js";

/** Labels every Pod of one controller or ReplicaSet has a value of its own in: not what makes a Pod a replica. */
const REVISION_LABELS: ReadonlySet<string> = new Set(["pod-template-hash", "controller-revision-hash"]);
/** How long one list of the replicas' Pods answers (a leader asks for each record it waits on). */
const LIST_REUSE_MS = 1000;

export interface KubernetesReplicaLivenessOptions {
  kubeConfig: KubeConfig;
  /** The controller's namespace (its Pod's). */
  namespace: string;
  /** This replica's Pod name. */
  podName: string;
  logger: Logger;
  /** @default systemClock */
  clock?: Clock;
  /** @default DEFAULT_REQUEST_TIMEOUT_MS */
  requestTimeoutMs?: number;
}

export class KubernetesReplicaLiveness implements ReplicaLiveness {
  private readonly core: CoreV1Api;
  private readonly clock: Clock;
  private readonly timeoutMs: number;
  /** Null: this replica has no labelled Pod (found once, for good). */
  private selector: string | null | undefined;
  private listed: { at: Date; pods: Promise<readonly V1Pod[]> } | undefined;

  constructor(private readonly options: KubernetesReplicaLivenessOptions) {
    this.core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.clock = options.clock ?? systemClock;
    this.timeoutMs = requestTimeouts(options).requestTimeoutMs;
  }

  async othersMayRunSince(at: Date): Promise<boolean> {
    try {
      const pods = await this.replicaPods(at);
      if (!pods) return true;
      return pods.some((pod) => pod.metadata?.name !== this.options.podName && podMayRunSince(pod, at));
    } catch (error) {
      this.options.logger.warn({ err: error }, "cannot read the controller's Pods; other replicas count as running");
      return true;
    }
  }

  /** The replicas' Pods as listed after `at` (an earlier list does not show a replica started before `at` and listed later). */
  private async replicaPods(at: Date): Promise<readonly V1Pod[] | undefined> {
    if (this.selector === undefined) this.selector = await this.ownSelector();
    const selector = this.selector;
    if (selector === null) return undefined;
    const now = this.clock.now();
    const listed = this.listed;
    if (listed && listed.at.getTime() > at.getTime() && now.getTime() - listed.at.getTime() < LIST_REUSE_MS) return listed.pods;
    const pods = this.list(selector);
    this.listed = { at: now, pods };
    pods.catch(() => {
      if (this.listed?.pods === pods) this.listed = undefined;
    });
    return pods;
  }

  /** This replica's Pod's labels but its revision's, as a label selector; null when it has no Pod (run outside Kubernetes) or no labels. */
  private async ownSelector(): Promise<string | null> {
    const { namespace, podName } = this.options;
    const own = await withRequestTimeout(`list this replica's Pod ${namespace}/${podName}`, this.timeoutMs, (call) =>
      this.core.listNamespacedPod({ namespace, fieldSelector: `metadata.name=${podName}` }, call),
    );
    const labels = Object.entries(own.items[0]?.metadata?.labels ?? {}).filter(([key]) => !REVISION_LABELS.has(key));
    if (labels.length === 0) {
      this.options.logger.info({ namespace, podName }, "this replica has no labelled Pod; other replicas' creates get their whole grace");
      return null;
    }
    return labels.map(([key, value]) => `${key}=${value}`).join(",");
  }

  private async list(selector: string): Promise<V1Pod[]> {
    const { namespace } = this.options;
    const pods = await withRequestTimeout(`list the controller's Pods in ${namespace}`, this.timeoutMs, (call) =>
      this.core.listNamespacedPod({ namespace, labelSelector: selector }, call),
    );
    return pods.items;
  }
}

/**
 * Whether a Pod may run a process that was already running at `at`: one of its containers runs
 * since `at` or earlier (times are whole seconds: a start in `at`'s second counts as earlier).
 * A container that does not run has no process; a Pod that ended has none.
 */
export function podMayRunSince(pod: V1Pod, at: Date): boolean {
  const phase = pod.status?.phase;
  if (phase === "Succeeded" || phase === "Failed") return false;
  return (pod.status?.containerStatuses ?? []).some((container) => {
    const running = container.state?.running;
    if (!running) return false;
    const startedAt = running.startedAt ? new Date(running.startedAt).getTime() : Number.NaN;
    return !(startedAt > at.getTime());
  });
}
