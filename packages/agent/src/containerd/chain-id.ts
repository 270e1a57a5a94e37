import { createHash } from "node:crypto";

/**
 * The chain ID of an image's layers (OCI image spec, "Layer ChainID"): the name under which
 * containerd's snapshotter stores the unpacked rootfs, hence the parent of a sandbox's snapshot.
 *
 *   ChainID(L0)        = DiffID(L0)
 *   ChainID(L0|...|Ln) = "sha256:" + hex(sha256(ChainID(L0|...|Ln-1) + " " + DiffID(Ln)))
 */
export function chainId(diffIds: readonly string[]): string {
  const [first, ...rest] = diffIds;
  if (first === undefined) throw new Error("an image without layers has no chain ID");
  let chain = first;
  for (const diffId of rest) {
    chain = `sha256:${createHash("sha256").update(`${chain} ${diffId}`).digest("hex")}`;
  }
  return chain;
}
