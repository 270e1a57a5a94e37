/**
 * The OCI (and Docker v2) image documents a pull walks: an index (multi-platform), a manifest
 * (config + layers) and the config (diff IDs). Parsing checks every digest before it is used in a
 * URL or a containerd call, since the documents come from a registry.
 */
import { readFileSync } from "node:fs";
import { FailedPreconditionError, NotFoundError } from "@fast-sandbox/api/core";

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);

/**
 * The layer media types containerd's differ unpacks (its compressed-stream handler): OCI tar
 * layers, uncompressed, gzip or zstd, Docker's, plain or gzip, and the non-distributable
 * (foreign) forms of both. Anything else (an encrypted layer, say) needs a stream processor
 * containerd is not configured with: it is refused before a byte is downloaded.
 */
export const LAYER_MEDIA_TYPES: readonly string[] = [
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip",
  "application/vnd.docker.image.rootfs.diff.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  "application/vnd.docker.image.rootfs.foreign.diff.tar",
];

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

/** The variant an entry without one means (containerd's normalization). */
const DEFAULT_VARIANT: Record<string, string> = { amd64: "v1", arm64: "v8", arm: "v7" };

/** cpuinfo flags of each x86-64 microarchitecture level above v1 (each needs the ones below too). */
const AMD64_LEVELS: readonly (readonly [string, readonly string[]])[] = [
  ["v2", ["cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"]],
  ["v3", ["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"]],
  ["v4", ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]],
];

export interface RunnableVariants {
  /** The variants this agent runs, in the order an index's entries are chosen. */
  variants: string[];
  /** True when any other variant is one this agent cannot run (not merely one it does not know). */
  exclusive: boolean;
}

let cpuinfo: string | undefined | null = null;

/** This machine's /proc/cpuinfo (read once), or undefined where there is none. */
function hostCpuinfo(): string | undefined {
  if (cpuinfo === null) {
    try {
      cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      cpuinfo = undefined;
    }
  }
  return cpuinfo;
}

/**
 * The variants of `architecture` this agent runs, or undefined for an architecture whose variants
 * it does not compare. CPU features come from `cpuinfo` (this machine's /proc/cpuinfo when
 * `architecture` is its own; for another one the baseline is assumed: amd64 v1, arm v7).
 *
 * - arm: the best the CPU runs first: v8 (32-bit on an ARMv8 CPU) > v7 > v6 > v5.
 * - amd64: v1 (no variant) first, even on a CPU that runs v3: that is the entry pulls chose
 *   before variants were compared, and the image resolver must go on finding what they stored;
 *   an index with variant entries only gets the best the CPU runs. v2-v4 only when the CPU has
 *   their features.
 * - arm64: v8 (the same as none); other variants after it, as listed.
 */
export function runnableVariants(
  architecture: string,
  cpu: string | undefined = architecture === goArchitecture() ? hostCpuinfo() : undefined,
): RunnableVariants | undefined {
  switch (architecture) {
    case "amd64": {
      const flags = new Set((/^flags\s*:(.*)$/m.exec(cpu ?? "")?.[1] ?? "").trim().split(/\s+/));
      const levels: string[] = [];
      for (const [level, needed] of AMD64_LEVELS) {
        if (!needed.every((flag) => flags.has(flag))) break;
        levels.unshift(level);
      }
      return { variants: ["v1", ...levels], exclusive: true };
    }
    case "arm": {
      const version = Number(/^CPU architecture\s*:\s*(\d+)/m.exec(cpu ?? "")?.[1] ?? "7");
      const variants: string[] = [];
      for (let v = Math.min(version, 8); v >= 5; v--) variants.push(`v${v}`);
      return { variants, exclusive: true };
    }
    case "arm64":
      return { variants: ["v8"], exclusive: false };
    default:
      return undefined;
  }
}

/** `linux/<architecture>[/<variant>]` as this agent runs it: its best variant, unless that is the architecture's default. */
function agentPlatform(architecture: string, runnable: RunnableVariants | undefined, withVariant = true): string {
  if (!withVariant) return `linux/${architecture}`;
  // amd64's list starts with v1, then the best level; the others' start with the best.
  const best = architecture === "amd64" ? (runnable?.variants[1] ?? "v1") : runnable?.variants[0];
  const shown = best && !(architecture === "amd64" && best === "v1") && !(architecture === "arm64" && best === "v8");
  return `linux/${architecture}${shown ? `/${best}` : ""}`;
}

/**
 * The index entry for linux/<architecture>. Several entries for one architecture differ by
 * variant (arm/v6, arm/v7, amd64/v3): the one this host runs best wins (runnableVariants), and
 * one it cannot run is never chosen.
 */
export function selectPlatformManifest(index: Record<string, unknown>, image: string, architecture = goArchitecture(), cpu?: string): Descriptor {
  const manifests = Array.isArray(index.manifests) ? index.manifests.map((entry, i) => descriptor(entry, `${image}: index entry ${i}`)) : [];
  const matching = manifests.filter((m) => m.platform?.os === "linux" && m.platform.architecture === architecture);
  const runnable = runnableVariants(architecture, cpu);
  let best: Descriptor | undefined;
  if (!runnable) {
    best = matching.find((m) => !m.platform?.variant) ?? matching[0];
  } else {
    const rank = (m: Descriptor) => {
      const position = runnable.variants.indexOf(m.platform?.variant || (DEFAULT_VARIANT[architecture] ?? ""));
      if (position >= 0) return position;
      return runnable.exclusive ? -1 : runnable.variants.length;
    };
    // A stable sort: among equals, the first listed.
    best = matching.filter((m) => rank(m) >= 0).sort((a, b) => rank(a) - rank(b))[0];
  }
  if (!best) {
    const available = manifests
      .map((m) => [m.platform?.os, m.platform?.architecture, m.platform?.variant].filter(Boolean).join("/"))
      .filter((p) => p && !p.startsWith("unknown"));
    const which = matching.length ? ` that this host's CPU runs (${agentPlatform(architecture, runnable)})` : "";
    throw new NotFoundError(`image ${image} has no variant for linux/${architecture}${which}${available.length ? ` (it has ${available.join(", ")})` : ""}`);
  }
  return best;
}

/**
 * Refuses an image whose config names a platform this agent does not run (a single-platform
 * image built for another architecture has no index to choose from): os, architecture, and the
 * variant where the architecture's variants are compared. A config that names none is taken.
 */
export function checkImagePlatform(config: Record<string, unknown>, image: string, architecture = goArchitecture(), cpu?: string): void {
  const text = (value: unknown) => (typeof value === "string" && value ? value : undefined);
  const os = text(config.os);
  const arch = text(config.architecture);
  const variant = text(config.variant);
  const runnable = runnableVariants(architecture, cpu);
  const osRuns = os === undefined || os === "linux";
  const architectureRuns = arch === undefined || arch === architecture;
  const variantRuns = variant === undefined || !runnable?.exclusive || runnable.variants.includes(variant);
  if (osRuns && architectureRuns && variantRuns) return;
  throw new FailedPreconditionError(
    `image ${image} is ${[os ?? "linux", arch ?? architecture, variant].filter(Boolean).join("/")}; ` +
      `this agent runs ${agentPlatform(architecture, runnable, osRuns && architectureRuns)}: ` +
      `use an image built for it, or a multi-platform one that includes it`,
  );
}

export function parseManifest(document: Record<string, unknown>, image: string): ImageManifest {
  const config = descriptor(document.config, `${image}: the manifest's config`);
  if (!Array.isArray(document.layers) || document.layers.length === 0) throw new FailedPreconditionError(`image ${image} has no layers`);
  const layers = document.layers.map((layer, i) => descriptor(layer, `${image}: layer ${i}`));
  for (const [i, layer] of layers.entries()) {
    if (!LAYER_MEDIA_TYPES.includes(layer.mediaType)) {
      throw new FailedPreconditionError(
        `image ${image}: layer ${i} (${layer.digest}) has media type ${layer.mediaType || "(none)"}, which this agent cannot unpack; ` +
          `it unpacks ${LAYER_MEDIA_TYPES.join(", ")}`,
      );
    }
  }
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
