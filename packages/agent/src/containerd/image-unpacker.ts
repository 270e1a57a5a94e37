/**
 * Unpacks an image's layers into a snapshotter, as containerd's unpacker does: for each layer in
 * order, Snapshots.Prepare an active snapshot on top of the previous layer's, Diff.Apply the
 * layer blob into its mounts, and Snapshots.Commit it under the layer's chain ID. Layers already
 * committed (shared with another image, or unpacked by another agent) are skipped; when two
 * unpackers race on a layer, the loser's Prepare or Commit finds it done (containerd refuses a
 * Prepare whose `containerd.io/snapshot.ref` target exists) and drops its own copy.
 */
import { randomBytes } from "node:crypto";
import { AlreadyExistsError, FailedPreconditionError } from "@fast-sandbox/api/core";
import { chainId } from "./chain-id.js";
import type { ContainerdClient } from "./containerd-client.js";
import { isNotFound } from "./grpc-errors.js";
import type { Descriptor } from "./image-manifest.js";

export interface UnpackOptions {
  snapshotter: string;
  /** Lease that keeps the new snapshots until the image's config references the top one. */
  leaseId: string;
  /** Called after each layer, unpacked or found already there. */
  onLayer?: (index: number, unpacked: boolean) => void;
  /** Deadline of one Diff.Apply (large layers take a while). @default 600_000 */
  applyTimeoutMs?: number;
}

/** Whether a committed snapshot of that name exists. */
export async function hasSnapshot(client: ContainerdClient, snapshotter: string, key: string): Promise<boolean> {
  try {
    await client.snapshots.stat({ snapshotter, key });
    return true;
  } catch (error) {
    if (isNotFound(error)) return false;
    throw error;
  }
}

/** Unpacks the layers (blobs already in the content store); resolves with the top chain ID. */
export async function unpackLayers(
  client: ContainerdClient,
  layers: readonly Descriptor[],
  diffIds: readonly string[],
  options: UnpackOptions,
): Promise<string> {
  const { snapshotter } = options;
  let parent = "";
  for (const [index, layer] of layers.entries()) {
    const chain = chainId(diffIds.slice(0, index + 1));
    // The lease's before it is looked for: a layer snapshot that is there but referenced by no image
    // (a failed pull's) would otherwise be skipped, stay outside the lease and could be collected
    // before the image's config names the top one (containerd's leases name snapshots `snapshots/<snapshotter>`).
    await client.leases.addResource({ id: options.leaseId, resource: { id: chain, type: `snapshots/${snapshotter}` } });
    const unpacked = (await hasSnapshot(client, snapshotter, chain)) ? false : await unpackLayer(client, layer, diffIds[index] ?? "", parent, chain, options);
    options.onLayer?.(index, unpacked);
    parent = chain;
  }
  return parent;
}

/** Unpacks one layer on top of `parent` and commits it as `chain`; false when another unpacker did it first. */
async function unpackLayer(
  client: ContainerdClient,
  layer: Descriptor,
  diffId: string,
  parent: string,
  chain: string,
  options: UnpackOptions,
): Promise<boolean> {
  const { snapshotter, leaseId } = options;
  for (let attempt = 1; ; attempt++) {
    const key = `fsb-extract-${randomBytes(6).toString("hex")}-${chain}`;
    let mounts;
    try {
      ({ mounts } = await client.snapshots.prepare({ snapshotter, key, parent, labels: { "containerd.io/snapshot.ref": chain } }, { leaseId }));
    } catch (error) {
      // The target exists (another unpacker committed it), or is being committed: look, then retry.
      if (!(error instanceof AlreadyExistsError)) throw error;
      if (await hasSnapshot(client, snapshotter, chain)) return false;
      if (attempt >= 3) throw error;
      continue;
    }
    let committed = false;
    try {
      const { applied } = await client.diff.apply(
        { diff: { mediaType: layer.mediaType, digest: layer.digest, size: BigInt(layer.size) }, mounts },
        { leaseId, timeoutMs: options.applyTimeoutMs ?? 600_000 },
      );
      if (applied?.digest !== diffId) {
        throw new FailedPreconditionError(
          `layer ${layer.digest} unpacks to ${applied?.digest ?? "nothing"}, but the image config says ${diffId}; the image is corrupt`,
        );
      }
      try {
        await client.snapshots.commit({ snapshotter, name: chain, key }, { leaseId });
        committed = true;
        return true;
      } catch (error) {
        // Another unpacker committed the same layer meanwhile: theirs is as good as ours.
        if (!(error instanceof AlreadyExistsError)) throw error;
        return false;
      }
    } finally {
      if (!committed) {
        // What this misses, the lease's deletion collects.
        await client.snapshots.remove({ snapshotter, key }, { leaseId }).catch(() => undefined);
      }
    }
  }
}
