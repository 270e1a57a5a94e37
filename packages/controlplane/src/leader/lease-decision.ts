/**
 * The Lease election's decision, free of I/O: given the Lease as last read (or its absence), what a
 * candidate writes — take it, renew it, or wait for it — and what releasing it writes. The elector
 * (lease-leader-elector.ts) performs the write conditionally on the resourceVersion it read, so of
 * two candidates deciding "acquire" on the same version only one write succeeds.
 */

/** The fields of a coordination.k8s.io/v1 Lease's spec that the election uses. */
export interface LeaseSpecRecord {
  /** Empty or absent: nobody holds it (never taken, or released). */
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: Date;
  renewTime?: Date;
  /** How many times the holder changed. */
  leaseTransitions?: number;
}

export type LeaseDecision =
  /** Nobody holds a valid lease: write this spec (create when absent, else replace). */
  | { action: "acquire"; spec: LeaseSpecRecord }
  /** This candidate holds it: write this spec (a new renewTime). */
  | { action: "renew"; spec: LeaseSpecRecord }
  /** Someone else holds a lease that has not expired. */
  | { action: "wait"; holderIdentity: string; expiresAt: Date };

export interface LeaseCandidate {
  identity: string;
  /** The candidate's clock (the Clock port). */
  now: Date;
  leaseDurationSeconds: number;
  /**
   * How long ago this candidate first read the lease as it is now (its resourceVersion), measured on
   * its own monotonic clock (Clock.monotonicMs): another holder's lease expires leaseDurationSeconds
   * after that read, as client-go judges it, so the replicas' clocks need not agree — and a step of
   * this candidate's wall clock (NTP, an operator) does not make the lease look expired. Absent:
   * from the holder's renewTime (the clocks must agree).
   */
  observedForMs?: number;
}

/** When the lease runs out unless renewed: its last renewal (or acquisition) plus its duration. */
export function leaseExpiresAt(spec: LeaseSpecRecord): Date | undefined {
  const since = spec.renewTime ?? spec.acquireTime;
  if (!since || spec.leaseDurationSeconds === undefined) return undefined;
  return new Date(since.getTime() + spec.leaseDurationSeconds * 1000);
}

export function decideLease(current: LeaseSpecRecord | undefined, candidate: LeaseCandidate): LeaseDecision {
  const { identity, now, leaseDurationSeconds } = candidate;
  if (!current) {
    return { action: "acquire", spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 } };
  }
  if (current.holderIdentity === identity) {
    return { action: "renew", spec: { ...current, leaseDurationSeconds, acquireTime: current.acquireTime ?? now, renewTime: now } };
  }
  const expiresAt =
    candidate.observedForMs !== undefined && current.leaseDurationSeconds !== undefined
      ? new Date(now.getTime() - candidate.observedForMs + current.leaseDurationSeconds * 1000)
      : leaseExpiresAt(current);
  // A holder without a renewal time or duration cannot be judged; a lease that cannot expire would
  // block the election forever, so it counts as expired.
  if (current.holderIdentity && expiresAt && now.getTime() < expiresAt.getTime()) {
    return { action: "wait", holderIdentity: current.holderIdentity, expiresAt };
  }
  return {
    action: "acquire",
    spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: now, renewTime: now, leaseTransitions: (current.leaseTransitions ?? 0) + 1 },
  };
}

/**
 * What the holder writes when it stops: no holder, so the next candidate takes the lease on its next
 * try instead of waiting for it to expire. The transition count is kept.
 */
export function releasedLease(current: LeaseSpecRecord, now: Date): LeaseSpecRecord {
  return {
    leaseDurationSeconds: 1,
    acquireTime: now,
    renewTime: now,
    ...(current.leaseTransitions !== undefined ? { leaseTransitions: current.leaseTransitions } : {}),
  };
}
