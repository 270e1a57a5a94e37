/**
 * NodeContainers on containerd's gRPC API (the agent's client): lists by the managed label, removes
 * tasks, containers and snapshots idempotently ("not found" means done).
 *
 * A gVisor sandbox restored from a checkpoint (a copy made by a fork or a restore, a resumed pause, a
 * pre-restored instance; labelled `fast-sandbox.io/restored-from`) keeps the checkpointed
 * container's id on its processes, so a signal to "every process of <its id>" reaches none (the
 * agent's checkpoints.ts): its task gets SIGKILL on its process 1 only, which ends it all the same,
 * as the agent's own delete does.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { FsbError } from "@fast-sandbox/api/core";
import { ContainerdClient, LABEL_MANAGED, LABEL_RESTORED_FROM, isNotFound } from "@fast-sandbox/agent";
import type { ManagedContainer, ManagedLease, ManagedSnapshot, NodeContainers } from "./node-containers.js";

const SIGKILL = 9;
const MANAGED_FILTER = `labels."${LABEL_MANAGED}"==true`;

export interface ContainerdNodeContainersOptions {
  containerdNamespace: string;
  /** @default "/run/containerd/containerd.sock" */
  socketPath?: string;
  /** Snapshotter whose snapshots are listed (a container names its own). @default "overlayfs" */
  snapshotter?: string;
  /** How long a killed task may take to exit before the pass gives up on it (a later pass retries). @default 10_000 */
  taskExitTimeoutMs?: number;
  /** Deadline of each containerd call. @default 10_000 */
  requestTimeoutMs?: number;
  /** The containerd client to use (tests pass a fake). @default a client on `socketPath` */
  client?: ContainerdClient;
}

interface Timestamp {
  seconds: bigint;
  nanos: number;
}

function toMs(timestamp: Timestamp | undefined): number {
  // No creation time: treat it as brand new, so the protection window holds it back.
  if (!timestamp) return Number.POSITIVE_INFINITY;
  return Number(timestamp.seconds) * 1000 + Math.floor(timestamp.nanos / 1e6);
}

function cgroupsPathOf(spec: Uint8Array | undefined): string | undefined {
  if (!spec || spec.length === 0) return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(spec).toString("utf8")) as { linux?: { cgroupsPath?: unknown } };
    const path = parsed.linux?.cgroupsPath;
    return typeof path === "string" && path !== "" ? path : undefined;
  } catch {
    return undefined;
  }
}

/** What containerd says of a container (Containers.List, Containers.Get). */
interface ContainerInfo {
  id: string;
  labels: Record<string, string>;
  createdAt?: Timestamp;
  updatedAt?: Timestamp;
  snapshotter: string;
  snapshotKey: string;
  spec?: { value?: Uint8Array };
}

/** The container as the janitor sees it; undefined for one without the managed label. */
function managedContainer(container: ContainerInfo): ManagedContainer | undefined {
  if (container.labels[LABEL_MANAGED] !== "true") return undefined;
  const spec = container.spec?.value;
  let cgroupsPath: string | undefined | null = null;
  return {
    id: container.id,
    labels: { ...container.labels },
    changedAtMs: Math.max(toMs(container.createdAt), container.updatedAt ? toMs(container.updatedAt) : 0),
    snapshotter: container.snapshotter,
    snapshotKey: container.snapshotKey,
    get cgroupsPath() {
      if (cgroupsPath === null) cgroupsPath = cgroupsPathOf(spec);
      return cgroupsPath;
    },
  };
}

export function createContainerdNodeContainers(options: ContainerdNodeContainersOptions): NodeContainers {
  return new ContainerdNodeContainers(options);
}

class ContainerdNodeContainers implements NodeContainers {
  readonly containerdNamespace: string;
  private readonly client: ContainerdClient;
  private readonly snapshotter: string;
  private readonly taskExitTimeoutMs: number;

  constructor(options: ContainerdNodeContainersOptions) {
    this.containerdNamespace = options.containerdNamespace;
    this.snapshotter = options.snapshotter ?? "overlayfs";
    this.taskExitTimeoutMs = options.taskExitTimeoutMs ?? 10_000;
    this.client =
      options.client ??
      new ContainerdClient({
        namespace: options.containerdNamespace,
        socketPath: options.socketPath ?? "/run/containerd/containerd.sock",
        defaultTimeoutMs: options.requestTimeoutMs ?? 10_000,
      });
  }

  async listContainers(): Promise<ManagedContainer[]> {
    const containers: ManagedContainer[] = [];
    // Streamed one by one: the specs of many containers together can outgrow one message.
    for await (const { container } of this.client.containers.listStream({ filters: [MANAGED_FILTER] })) {
      const managed = container ? managedContainer(container) : undefined;
      if (managed) containers.push(managed);
    }
    return containers;
  }

  async get(containerId: string): Promise<ManagedContainer | undefined> {
    try {
      const { container } = await this.client.containers.get({ id: containerId });
      return container ? managedContainer(container) : undefined;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async listSnapshots(): Promise<ManagedSnapshot[]> {
    const snapshots: ManagedSnapshot[] = [];
    for await (const { info } of this.client.snapshots.list({ snapshotter: this.snapshotter, filters: [MANAGED_FILTER] })) {
      for (const snapshot of info) {
        if (snapshot.labels[LABEL_MANAGED] !== "true") continue;
        snapshots.push({
          snapshotter: this.snapshotter,
          key: snapshot.name,
          labels: { ...snapshot.labels },
          changedAtMs: Math.max(toMs(snapshot.createdAt), snapshot.updatedAt ? toMs(snapshot.updatedAt) : 0),
        });
      }
    }
    return snapshots;
  }

  async listLeases(): Promise<ManagedLease[]> {
    const { leases } = await this.client.leases.list({ filters: [MANAGED_FILTER] });
    return leases
      .filter((lease) => lease.labels[LABEL_MANAGED] === "true")
      .map((lease) => ({ id: lease.id, labels: { ...lease.labels }, changedAtMs: toMs(lease.createdAt) }));
  }

  async removeLease(id: string): Promise<boolean> {
    try {
      // sync: what only the lease kept (a pull's partial downloads and snapshots) goes now, not at a later collection.
      await this.client.leases.delete({ id, sync: true }, { timeoutMs: 60_000 });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async removeTask(containerId: string): Promise<boolean> {
    try {
      await this.client.tasks.get({ containerId });
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
    const all = !(await this.isRestored(containerId));
    try {
      await this.client.tasks.kill({ containerId, signal: SIGKILL, all });
    } catch (error) {
      // A task whose processes have exited refuses the signal; the wait below tells.
      if (isNotFound(error)) return false;
    }
    try {
      await this.client.tasks.wait({ containerId }, { timeoutMs: this.taskExitTimeoutMs });
    } catch (error) {
      if (isNotFound(error)) return true;
      if (error instanceof FsbError && error.code === "deadline_exceeded") {
        throw new FsbError("deadline_exceeded", `task ${containerId} did not exit within ${this.taskExitTimeoutMs} ms of SIGKILL; a later pass retries`, {
          cause: error,
        });
      }
      throw error;
    }
    // containerd 1.6 may close a grouped shim's connection under a concurrent delete and clean up
    // the task itself ("ttrpc: closed"); retrying then finds it gone or deletes it.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.client.tasks.delete({ containerId });
        return true;
      } catch (error) {
        if (isNotFound(error)) return true;
        const closed = error instanceof Error && /ttrpc: closed|shim disconnected/.test(error.message);
        if (!closed || attempt >= 5) throw error;
        await sleep(50 * attempt);
      }
    }
  }

  /** Whether the container is a copy restored from a checkpoint (false once it is gone). */
  private async isRestored(containerId: string): Promise<boolean> {
    try {
      const { container } = await this.client.containers.get({ id: containerId });
      return Boolean(container?.labels[LABEL_RESTORED_FROM]);
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async removeContainer(containerId: string): Promise<boolean> {
    try {
      await this.client.containers.delete({ id: containerId });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async removeSnapshot(snapshotter: string, key: string): Promise<boolean> {
    try {
      await this.client.snapshots.remove({ snapshotter: snapshotter || this.snapshotter, key });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  close(): void {
    this.client.close();
  }
}
