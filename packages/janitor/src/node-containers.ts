/**
 * The janitor's port to a node's container runtime, one containerd namespace at a time. It only ever
 * sees objects labelled `fast-sandbox.io/managed`: the adapter filters on the label, so nothing
 * else can be chosen for removal.
 */

/** A managed container, with what the janitor needs to judge and reclaim it. */
export interface ManagedContainer {
  id: string;
  labels: Readonly<Record<string, string>>;
  /** When it was created or last updated (an agent that adopts an anchor updates it): the protection window runs from here. */
  changedAtMs: number;
  snapshotter: string;
  /** "" for containers without a snapshot (shim anchors run on a tmpfs). */
  snapshotKey: string;
  /** `linux.cgroupsPath` of its OCI spec, when it has one (read only when needed). */
  readonly cgroupsPath: string | undefined;
}

/** A managed snapshot (a sandbox's root file system; it carries the sandbox's labels). */
export interface ManagedSnapshot {
  snapshotter: string;
  key: string;
  labels: Readonly<Record<string, string>>;
  changedAtMs: number;
}

/**
 * A managed containerd lease: an agent's pull holds what it downloads under one until it ends (the
 * agent deletes it then, or its next start does). One whose agent never starts again would keep its
 * partial downloads for the day until it expires.
 */
export interface ManagedLease {
  id: string;
  labels: Readonly<Record<string, string>>;
  /** When it was created: the protection window runs from here. */
  changedAtMs: number;
}

export interface NodeContainers {
  readonly containerdNamespace: string;
  /** The containers labelled `fast-sandbox.io/managed=true`. */
  listContainers(): Promise<ManagedContainer[]>;
  /**
   * The container as it is now (what listContainers says of it), or undefined when it is gone or
   * not managed: the janitor looks again just before it removes anything of a container, a pass
   * being long enough for an agent to come back and take it.
   */
  get(containerId: string): Promise<ManagedContainer | undefined>;
  /** The snapshots labelled `fast-sandbox.io/managed=true`. */
  listSnapshots(): Promise<ManagedSnapshot[]>;
  /** The leases labelled `fast-sandbox.io/managed=true`. */
  listLeases(): Promise<ManagedLease[]>;
  /** Deletes the lease and collects at once what it alone kept; false when it was already gone. */
  removeLease(id: string): Promise<boolean>;
  /** Kills every process of the container's task, waits for the exit and deletes the task; false when it had none. */
  removeTask(containerId: string): Promise<boolean>;
  /** False when it was already gone. */
  removeContainer(containerId: string): Promise<boolean>;
  /** False when it was already gone. */
  removeSnapshot(snapshotter: string, key: string): Promise<boolean>;
  close(): void;
}
