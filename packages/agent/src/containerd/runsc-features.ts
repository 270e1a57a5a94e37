/**
 * What the runsc binary the agent runs can do that older releases cannot, found in the binary
 * itself: runsc's version string differs between builds (Debian's `0~20221219.0`, gVisor's
 * `release-20221219.0`, `VERSION_MISSING` when built from the Go module proxy), but a Go binary
 * keeps the names of its functions (the runtime's symbol table, kept even when stripped), so a
 * feature is present exactly when the function that implements it is.
 *
 * - hostnameOnRestore: `runsc restore` gives every restored UTS namespace the hostname (and domain
 *   name) of the new OCI spec, unless the sandbox had set its own (gVisor's
 *   `UTSNamespace.RestoreSpecValues`: in the release of 2026-09-05 built by scripts/build-runsc.sh,
 *   not in Debian 12's 20221219). Without it a restored copy keeps its
 *   checkpoint's hostname until something inside sets it.
 */
import { createReadStream } from "node:fs";

export interface RunscFeatures {
  hostnameOnRestore: boolean;
}

const MARKERS: Record<keyof RunscFeatures, string> = {
  hostnameOnRestore: "(*UTSNamespace).RestoreSpecValues",
};

/** Reads `runscPath` once (streamed, ~60 MB), looking for each feature's function. A binary that cannot be read has none. */
export async function probeRunscFeatures(runscPath: string): Promise<RunscFeatures> {
  const found = new Set<keyof RunscFeatures>();
  const markers = Object.entries(MARKERS) as [keyof RunscFeatures, string][];
  const overlap = Math.max(...markers.map(([, marker]) => marker.length)) - 1;
  let tail = Buffer.alloc(0);
  try {
    for await (const chunk of createReadStream(runscPath, { highWaterMark: 1 << 20 })) {
      const window = Buffer.concat([tail, chunk as Buffer]);
      for (const [feature, marker] of markers) if (!found.has(feature) && window.includes(marker)) found.add(feature);
      if (found.size === markers.length) break;
      tail = window.subarray(Math.max(0, window.length - overlap));
    }
  } catch {
    // Unreadable (or missing): the agent takes the path every runsc supports.
  }
  return { hostnameOnRestore: found.has("hostnameOnRestore") };
}
