/**
 * Resolves an image reference in containerd's image store into what the create path needs:
 * the image's process defaults (Entrypoint, Cmd, Env, WorkingDir, User) and the chain ID of
 * its layers, i.e. the parent of the sandbox's snapshot. Results are cached per reference, so
 * the hot path pays for it once per image. A reference re-imported with other content keeps its
 * cached resolution until `forget()` (called when its snapshot is missing) or an agent restart.
 */
import { NotFoundError, FsbError } from "@fast-sandbox/api/core";
import type { ContainerdClient } from "./containerd-client.js";
import { chainId } from "./chain-id.js";

/** The parts of an OCI image config the runtime uses. */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: string[];
  workingDir: string;
  user: string;
}

export interface ResolvedImage {
  reference: string;
  /** Digest of the image's target (index or manifest). */
  targetDigest: string;
  config: ImageConfig;
  /** Parent snapshot key of every sandbox of this image. */
  chainId: string;
}

const INDEX_MEDIA_TYPES = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);

const GO_ARCH: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "arm",
  ppc64: "ppc64le",
  s390x: "s390x",
};

interface Descriptor {
  mediaType?: string;
  digest: string;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export class ImageResolver {
  private readonly cache = new Map<string, Promise<ResolvedImage>>();
  private readonly architecture = GO_ARCH[process.arch] ?? process.arch;

  constructor(
    private readonly client: ContainerdClient,
    private readonly importHint: string,
  ) {}

  resolve(reference: string): Promise<ResolvedImage> {
    let resolved = this.cache.get(reference);
    if (!resolved) {
      resolved = this.load(reference);
      this.cache.set(reference, resolved);
      // A failed resolution is not cached: the image may be imported a moment later.
      resolved.catch(() => this.cache.delete(reference));
    }
    return resolved;
  }

  /** Forgets a reference, e.g. when its snapshot turned out to be missing (image removed or re-tagged). */
  forget(reference: string): void {
    this.cache.delete(reference);
  }

  private async load(reference: string): Promise<ResolvedImage> {
    let target: Descriptor;
    try {
      const { image } = await this.client.images.get({ name: reference });
      if (!image?.target) throw new NotFoundError(`image "${reference}" has no target`);
      target = {
        mediaType: image.target.mediaType,
        digest: image.target.digest,
      };
    } catch (error) {
      if (error instanceof NotFoundError) {
        throw new NotFoundError(`image "${reference}" is not in containerd namespace "${this.client.namespace}"; ${this.importHint}`, { cause: error });
      }
      throw error;
    }

    let manifestDescriptor = target;
    let document = await this.readJson(target.digest);
    if (INDEX_MEDIA_TYPES.has(target.mediaType ?? "") || Array.isArray(document.manifests)) {
      manifestDescriptor = this.pickPlatform(reference, document.manifests as Descriptor[]);
      document = await this.readJson(manifestDescriptor.digest);
    }
    const configDescriptor = document.config as Descriptor | undefined;
    if (!configDescriptor?.digest) {
      throw new FsbError("invalid_argument", `image "${reference}": manifest ${manifestDescriptor.digest} has no config`);
    }
    const imageConfig = await this.readJson(configDescriptor.digest);
    const config = (imageConfig.config ?? {}) as Record<string, unknown>;
    const rootfs = (imageConfig.rootfs ?? {}) as { diff_ids?: string[] };
    const diffIds = rootfs.diff_ids ?? [];
    if (diffIds.length === 0) {
      throw new FsbError("invalid_argument", `image "${reference}" has no layers`);
    }
    return {
      reference,
      targetDigest: target.digest,
      chainId: chainId(diffIds),
      config: {
        entrypoint: stringArray(config.Entrypoint),
        cmd: stringArray(config.Cmd),
        env: stringArray(config.Env),
        workingDir: typeof config.WorkingDir === "string" ? config.WorkingDir : "",
        user: typeof config.User === "string" ? config.User : "",
      },
    };
  }

  private pickPlatform(reference: string, manifests: Descriptor[] | undefined): Descriptor {
    const match = (manifests ?? []).find((manifest) => manifest.platform?.os === "linux" && manifest.platform.architecture === this.architecture);
    if (!match) {
      throw new NotFoundError(`image "${reference}" has no manifest for linux/${this.architecture}`);
    }
    return match;
  }

  private async readJson(digest: string): Promise<Record<string, unknown>> {
    const chunks: Uint8Array[] = [];
    for await (const response of this.client.content.read({ digest })) chunks.push(response.data);
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
  }
}

function stringArray(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === "string") : [];
}
