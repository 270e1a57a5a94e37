/**
 * The `ReplicaLiveness` port: whether another replica of the controller may still be doing what it
 * started before a given time. Several replicas create through their fast paths (Kubernetes mode);
 * the leader leaves a record another replica may be creating alone for a grace period (a second
 * placement would make a second instance). When every other replica's process has started since
 * that record was written (it crashed and was restarted, or its Pod is gone), no process can still
 * be creating it, and the leader need not wait out the grace. The embedded mode has one process
 * and no such wait; the Kubernetes mode reads the controller's Pods (kubernetes-replica-liveness.ts).
 */
export interface ReplicaLiveness {
  /**
   * False when every replica but this one has, for sure, no process that was already running at
   * `at` (its containers started later, or run no more, or its Pod is gone); true when one may have.
   * Unknown (the API server does not answer, this replica's own Pod is not found) counts as true.
   */
  othersMayRunSince(at: Date): Promise<boolean>;
}
