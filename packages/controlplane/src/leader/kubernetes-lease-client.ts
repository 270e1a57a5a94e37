/**
 * The `LeaseClient` over a coordination.k8s.io/v1 Lease with `@kubernetes/client-node`. A 409 (the
 * Lease exists, or its resourceVersion moved on) becomes `ConflictError`; every other failure is
 * translated by the store's one Kubernetes error boundary. Each request has a time limit
 * (kubernetes-request-timeout.ts): the elector gives up waiting for a try after its renew deadline,
 * but without a limit of its own the request would stay open for good, and another with each try.
 */
import { ApiException, CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease, type V1LeaseSpec } from "@kubernetes/client-node";
import { ConflictError } from "@fast-sandbox/api";
import { translateKubernetesError } from "../store/kubernetes-resource-store.js";
import { requestTimeouts, withRequestTimeout } from "../store/kubernetes-request-timeout.js";
import type { LeaseSpecRecord } from "./lease-decision.js";
import type { LeaseClient, ObservedLease } from "./lease-leader-elector.js";

export interface KubernetesLeaseClientOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** The Lease's name, e.g. `fast-sandbox-controller`. */
  name: string;
  /**
   * The time limit of each request: a try the elector has given up (after its renew deadline, 10 s by
   * default) need not stay open longer. @default 10000
   */
  requestTimeoutMs?: number;
}

export function kubernetesLeaseClient(options: KubernetesLeaseClientOptions): LeaseClient {
  const api = options.kubeConfig.makeApiClient(CoordinationV1Api);
  const { namespace, name } = options;
  const where = `lease ${namespace}/${name}`;
  const { requestTimeoutMs } = requestTimeouts({ requestTimeoutMs: options.requestTimeoutMs ?? 10_000 });
  const fail = (error: unknown, action: string): never => {
    if (error instanceof ApiException && error.code === 409) throw new ConflictError(`cannot ${action} ${where}: another writer changed it first`);
    throw translateKubernetesError(error, { action: `${action} ${where}` });
  };
  return {
    async get() {
      try {
        return observed(await withRequestTimeout(`read ${where}`, requestTimeoutMs, (call) => api.readNamespacedLease({ name, namespace }, call)));
      } catch (error) {
        if (error instanceof ApiException && error.code === 404) return undefined;
        return fail(error, "read");
      }
    },
    async create(spec) {
      try {
        const body: V1Lease = { metadata: { name, namespace }, spec: toKubernetes(spec) };
        return observed(await withRequestTimeout(`create ${where}`, requestTimeoutMs, (call) => api.createNamespacedLease({ namespace, body }, call)));
      } catch (error) {
        return fail(error, "create");
      }
    },
    async replace(resourceVersion, spec) {
      try {
        const body: V1Lease = { metadata: { name, namespace, resourceVersion }, spec: toKubernetes(spec) };
        return observed(await withRequestTimeout(`replace ${where}`, requestTimeoutMs, (call) => api.replaceNamespacedLease({ name, namespace, body }, call)));
      } catch (error) {
        return fail(error, "replace");
      }
    },
  };
}

function observed(lease: V1Lease): ObservedLease {
  const spec = lease.spec ?? {};
  return {
    resourceVersion: lease.metadata?.resourceVersion ?? "",
    spec: {
      ...(spec.holderIdentity ? { holderIdentity: spec.holderIdentity } : {}),
      ...(spec.leaseDurationSeconds !== undefined ? { leaseDurationSeconds: spec.leaseDurationSeconds } : {}),
      ...optionalTime("acquireTime", spec.acquireTime),
      ...optionalTime("renewTime", spec.renewTime),
      ...(spec.leaseTransitions !== undefined ? { leaseTransitions: spec.leaseTransitions } : {}),
    },
  };
}

/** The client leaves MicroTime fields as the server's strings when it reads. */
function optionalTime<K extends string>(key: K, value: Date | string | undefined): Partial<Record<K, Date>> {
  if (value === undefined) return {};
  const time = new Date(value);
  return Number.isNaN(time.getTime()) ? {} : ({ [key]: time } as Record<K, Date>);
}

function toKubernetes(spec: LeaseSpecRecord): V1LeaseSpec {
  return {
    ...(spec.holderIdentity ? { holderIdentity: spec.holderIdentity } : {}),
    ...(spec.leaseDurationSeconds !== undefined ? { leaseDurationSeconds: spec.leaseDurationSeconds } : {}),
    ...(spec.acquireTime ? { acquireTime: new V1MicroTime(spec.acquireTime.getTime()) } : {}),
    ...(spec.renewTime ? { renewTime: new V1MicroTime(spec.renewTime.getTime()) } : {}),
    ...(spec.leaseTransitions !== undefined ? { leaseTransitions: spec.leaseTransitions } : {}),
  };
}
