/**
 * The OCI (and Docker v2) image documents a pull walks: an index (multi-platform), a manifest
 * (config + layers) and the config (diff IDs). Parsing checks every digest before it is used in a
 * URL or a containerd call, since the documents come from a registry.
 */
import { FailedPreconditionError, NotFoundError } from "@fast-sandbox/api/core";

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);

export interface Platform {
  os?: string;
  architecture?: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
}

export interface ImageManifest {
  config: Descriptor;
  layers: Descriptor[];
}

const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

/** Go's name of this machine's architecture, as image platforms name it. */
export function goArchitecture(nodeArch: string = process.arch): string {
  const names: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", ia32: "386" };
  return names[nodeArch] ?? nodeArch;
}

export function parseJson(bytes: Uint8Array, what: string): Record<string, unknown> {
  try {
    const value = JSON.parse(Buffer.from(bytes).toString("utf8")) as unknown;
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new FailedPreconditionError(`${what} is not a JSON object`);
}

export function isIndex(mediaType: string, document: Record<string, unknown>): boolean {
  return INDEX_MEDIA_TYPES.has(mediaType) || (Array.isArray(document.manifests) && document.config === undefined);
}

function descriptor(value: unknown, what: string): Descriptor {
  const candidate = (value ?? {}) as Partial<Record<keyof Descriptor, unknown>>;
  if (typeof candidate.digest !== "string" || !DIGEST.test(candidate.digest)) {
    throw new FailedPreconditionError(`${what} has no valid digest (${JSON.stringify(candidate.digest)})`);
  }
  if (typeof candidate.size !== "number" || !Number.isSafeInteger(candidate.size) || candidate.size < 0) {
    throw new FailedPreconditionError(`${what} (${candidate.digest}) has no valid size`);
  }
  const platform = candidate.platform as Platform | undefined;
  return {
    mediaType: typeof candidate.mediaType === "string" ? candidate.mediaType : "",
    digest: candidate.digest,
    size: candidate.size,
    ...(platform && typeof platform === "object" ? { platform } : {}),
  };
}

/**
 * The index entry for linux/<architecture>. Several entries for one architecture differ by
 * variant (arm/v6, arm/v7): the one without a variant or with the architecture's usual one wins.
 */
export function selectPlatformManifest(index: Record<string, unknown>, image: string, architecture = goArchitecture()): Descriptor {
  const manifests = Array.isArray(index.manifests) ? index.manifests.map((entry, i) => descriptor(entry, `${image}: index entry ${i}`)) : [];
  const usualVariant: Record<string, string> = { arm64: "v8", arm: "v7" };
  const matching = manifests.filter((m) => m.platform?.os === "linux" && m.platform.architecture === architecture);
  const best = matching.find((m) => !m.platform?.variant || m.platform.variant === usualVariant[architecture]) ?? matching[0];
  if (!best) {
    const available = manifests
      .map((m) => [m.platform?.os, m.platform?.architecture, m.platform?.variant].filter(Boolean).join("/"))
      .filter((p) => p && !p.startsWith("unknown"));
    throw new NotFoundError(`image ${image} has no variant for linux/${architecture}${available.length ? ` (it has ${available.join(", ")})` : ""}`);
  }
  return best;
}

export function parseManifest(document: Record<string, unknown>, image: string): ImageManifest {
  const config = descriptor(document.config, `${image}: the manifest's config`);
  if (!Array.isArray(document.layers) || document.layers.length === 0) throw new FailedPreconditionError(`image ${image} has no layers`);
  const layers = document.layers.map((layer, i) => descriptor(layer, `${image}: layer ${i}`));
  return { config, layers };
}

/** The uncompressed digests of the layers, from the image config (`rootfs.diff_ids`). */
export function parseDiffIds(config: Record<string, unknown>, image: string, layerCount: number): string[] {
  const rootfs = (config.rootfs ?? {}) as { diff_ids?: unknown };
  const diffIds = Array.isArray(rootfs.diff_ids) ? rootfs.diff_ids : [];
  if (diffIds.length !== layerCount || !diffIds.every((id): id is string => typeof id === "string" && DIGEST.test(id))) {
    throw new FailedPreconditionError(`image ${image}: its config lists ${diffIds.length} valid diff IDs for ${layerCount} layers`);
  }
  return diffIds;
}
